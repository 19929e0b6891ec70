"""The lab's own plugins, run by Ansible on this machine (local connection, the repo's ansible.cfg).

- module demolab_original (plugins/modules): keeps each file's original once, byte for byte
  with its mode, records a file that did not exist, changes nothing on a second call or in
  check mode; the record is what `make remove` (roles/lab/files/demolab-remove.py) reads.
- lookup demolab_secret (plugins/lookup): generates a secret once (0600, the lab's length),
  returns the same one afterwards, and with lab_secrets_generate=false a missing one stops the
  play naming the file.
- module demolab_dpkg_facts (plugins/modules): the same packages, versions and architectures as
  ansible.builtin.package_facts on this machine, read with dpkg-query.
- module demolab_supervisor (plugins/modules): against a supervisord of the test's own, starts
  and stops a program, applies a changed definition (a new process) and nothing else, changes
  nothing in check mode, names an unknown program and an unreachable supervisord.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
BIN = REPO / ".venv" / "bin"


def play(tmp_path: Path, tasks: list, *extra: str) -> subprocess.CompletedProcess:
    path = tmp_path / "play.yml"
    path.write_text(yaml.safe_dump([{"name": "Probe", "hosts": "localhost", "gather_facts": False,
                                     "tasks": tasks}]))
    return subprocess.run([str(BIN / "ansible-playbook"), "-i", "localhost,", "-c", "local", str(path), *extra],
                          env=dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), ANSIBLE_NOCOLOR="1",
                                   ANSIBLE_STDOUT_CALLBACK="ansible.builtin.json"),
                          capture_output=True, text=True, timeout=300, check=False, cwd=REPO)


def results(proc: subprocess.CompletedProcess) -> list[dict]:
    out = json.loads(proc.stdout)
    return [t["hosts"]["localhost"] for p in out["plays"] for t in p["tasks"]]


def keep(paths: list[str], store: Path) -> dict:
    return {"name": "Keep", "demolab_original": {"paths": paths, "dir": str(store)}}


def test_original_kept_once_byte_for_byte(tmp_path):
    conf = tmp_path / "pip.conf"
    conf.write_bytes(b"[global]\nindex-url = https://example.invalid/simple\n\x00tail")
    conf.chmod(0o640)
    absent = tmp_path / "not-there"
    store = tmp_path / "originals"

    preview = play(tmp_path, [keep([str(conf), str(absent)], store)], "--check")
    assert preview.returncode == 0, preview.stdout[-2000:]
    assert results(preview)[0]["changed"] and not store.exists(), "check mode wrote something"

    first = play(tmp_path, [keep([str(conf), str(absent)], store)])
    assert first.returncode == 0, first.stdout[-2000:]
    assert results(first)[0]["changed"] and results(first)[0]["kept"] == [str(conf), str(absent)]
    assert stat.S_IMODE(store.stat().st_mode) == 0o700
    key = hashlib.sha1(str(conf).encode()).hexdigest()
    copy = store / f"{key}.orig"
    assert copy.read_bytes() == conf.read_bytes() and stat.S_IMODE(copy.stat().st_mode) == 0o640
    assert (store / f"{key}.path").read_text() == f"{conf}\n"
    none = hashlib.sha1(str(absent).encode()).hexdigest()
    assert (store / f"{none}.path").exists() and not (store / f"{none}.orig").exists()

    conf.write_text("changed by the lab\n")
    again = play(tmp_path, [keep([str(conf), str(absent)], store)])
    assert again.returncode == 0 and not results(again)[0]["changed"]
    assert b"example.invalid" in copy.read_bytes(), "the original was overwritten by a later run"


def secret_task(name: str) -> dict:
    return {"name": "Secret", "ansible.builtin.debug": {"msg": "{{ lookup('demolab_secret', '%s') }}" % name}}


def lab_vars(secrets: Path, generate: bool) -> list[str]:
    return ["-e", json.dumps({"lab_secrets_dir": str(secrets), "lab_secrets_generate": generate,
                              "lab_secret_length": 24})]


def test_secret_generated_once_then_reused(tmp_path):
    secrets = tmp_path / "secrets"
    first = play(tmp_path, [secret_task("redis")], *lab_vars(secrets, True))
    assert first.returncode == 0, first.stdout[-2000:]
    value = results(first)[0]["msg"]
    path = secrets / "localhost" / "redis"
    assert path.read_text().strip() == value and len(value) == 24 and value.isalnum()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    second = play(tmp_path, [secret_task("redis")], *lab_vars(secrets, False))
    assert second.returncode == 0 and results(second)[0]["msg"] == value


def test_missing_secret_without_generation_names_the_file(tmp_path):
    secrets = tmp_path / "secrets"
    proc = play(tmp_path, [secret_task("mongodb-admin")], *lab_vars(secrets, False))
    assert proc.returncode != 0
    assert f"{secrets}/localhost/mongodb-admin does not exist" in proc.stdout
    assert "lab_secrets_generate=true" in proc.stdout
    assert not (secrets / "localhost" / "mongodb-admin").exists()


def test_dpkg_facts_match_package_facts(tmp_path):
    """demolab_dpkg_facts gives the roles what package_facts gave them (name, version, arch)."""
    proc = play(tmp_path, [{"name": "Ours", "demolab_dpkg_facts": None},
                           {"name": "Keep", "ansible.builtin.set_fact": {"ours": "{{ ansible_facts.packages }}"}},
                           {"name": "Apt's", "ansible.builtin.package_facts": {"manager": "apt"}}])
    assert proc.returncode == 0, proc.stdout[-2000:]
    ours, theirs = results(proc)[0]["ansible_facts"]["packages"], results(proc)[2]["ansible_facts"]["packages"]

    def shape(packages: dict) -> dict:
        return {n: sorted((p["version"], p["arch"]) for p in v) for n, v in packages.items()}

    assert "dpkg" in ours and shape(ours) == shape(theirs)
    assert not results(proc)[0]["changed"]


def supervisord(tmp_path: Path) -> tuple[subprocess.Popen, Path, Path]:
    """A real supervisord of its own (Debian's, installed by make deps) with one program."""
    sock, confd = tmp_path / "supervisor.sock", tmp_path / "conf.d"
    confd.mkdir()
    (confd / "demo.conf").write_text("[program:demo]\ncommand=sleep 600\nautostart=true\nstartsecs=1\n")
    conf = tmp_path / "supervisord.conf"
    conf.write_text(f"[unix_http_server]\nfile={sock}\nchmod=0700\n"
                    f"[supervisord]\nnodaemon=true\nlogfile={tmp_path}/supervisord.log\n"
                    f"pidfile={tmp_path}/supervisord.pid\nchildlogdir={tmp_path}\n"
                    "[rpcinterface:supervisor]\n"
                    "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface\n"
                    f"[supervisorctl]\nserverurl=unix://{sock}\n[include]\nfiles={confd}/*.conf\n")
    proc = subprocess.Popen(["/usr/bin/supervisord", "-c", str(conf)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    for _ in range(100):
        if ctl(conf, "status", "demo").startswith("demo") and "RUNNING" in ctl(conf, "status", "demo"):
            break
        time.sleep(0.1)
    return proc, conf, sock


def ctl(conf: Path, *args: str) -> str:
    return subprocess.run(["/usr/bin/supervisorctl", "-c", str(conf), *args], capture_output=True,
                          text=True, check=False).stdout


def program(sock: Path, name: str = "demo", **options) -> dict:
    return {"name": "Run", "demolab_supervisor": {"name": name, "socket": str(sock), **options}}


def test_supervisor_program_loaded_and_run_as_asked(tmp_path):
    """demolab_supervisor against a real supervisord: start, stop, a changed definition, check mode."""
    proc, conf, sock = supervisord(tmp_path)
    try:
        pid = ctl(conf, "pid", "demo").strip()
        assert pid.isdigit(), ctl(conf, "status")

        same = play(tmp_path, [program(sock), program(sock, reload=True)])
        assert same.returncode == 0, same.stdout[-2000:]
        assert [r["changed"] for r in results(same)] == [False, False]
        assert ctl(conf, "pid", "demo").strip() == pid

        ctl(conf, "stop", "demo")
        preview = play(tmp_path, [program(sock)], "--check")
        assert preview.returncode == 0 and results(preview)[0]["changed"]
        assert "STOPPED" in ctl(conf, "status", "demo"), "check mode started the program"
        start = play(tmp_path, [program(sock)])
        assert start.returncode == 0 and results(start)[0]["actions"] == ["start"]
        assert results(start)[0]["statename"] == "RUNNING"
        pid = ctl(conf, "pid", "demo").strip()

        (tmp_path / "conf.d" / "demo.conf").write_text(
            "[program:demo]\ncommand=sleep 601\nautostart=true\nstartsecs=1\n")
        preview = play(tmp_path, [program(sock, reload=True)], "--check")
        assert preview.returncode == 0 and results(preview)[0]["changed"]
        assert ctl(conf, "pid", "demo").strip() == pid, "check mode applied the definition"
        applied = play(tmp_path, [program(sock, reload=True)])
        assert applied.returncode == 0, applied.stdout[-2000:]
        # supervisord starts it itself (autostart); service.yml then waits for its port.
        assert results(applied)[0]["changed"] and results(applied)[0]["statename"] in ("STARTING", "RUNNING")
        time.sleep(1.5)
        assert ctl(conf, "pid", "demo").strip() not in ("", pid), "the new definition does not run"

        stop = play(tmp_path, [program(sock, state="stopped"), program(sock, state="stopped")])
        assert [r["changed"] for r in results(stop)] == [True, False]
        assert "STOPPED" in ctl(conf, "status", "demo")

        unknown = play(tmp_path, [program(sock, name="nothing")])
        assert unknown.returncode != 0 and "supervisord has no program nothing" in unknown.stdout
        absent = play(tmp_path, [program(tmp_path / "no.sock")])
        assert absent.returncode != 0 and "cannot talk to supervisord" in absent.stdout
    finally:
        proc.terminate()
        proc.wait(timeout=30)
