"""The devpi role applied to this machine (ansible_connection=local, the lab's service
abstraction: supervisord where PID 1 is not systemd): converge, idempotence (changed=0),
check mode (changed=0), pip pointed at the index, then the switch to offline mode.
Everything the role fetches comes from a loopback stand-in for PyPI; every path, the port,
the service name and the pip config file are the test's own."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest
from helpers import MIRROR_LOCK, REPO, Upstream, clean_pip_env, free_port, sha256

PLAYBOOK = REPO / "tests" / "devpi" / "playbook.yml"
SERVICE = "demolab-devpi-test"


def ansible_playbook() -> str:
    for cand in (REPO / ".venv" / "bin" / "ansible-playbook", shutil.which("ansible-playbook")):
        if cand and os.access(cand, os.X_OK):
            return str(cand)
    pytest.fail("ansible-playbook missing (make venv, or tests/devpi/run.sh installs it)")


@pytest.fixture(scope="module")
def lab(real_wheels):
    if os.geteuid() != 0:
        pytest.skip("applying the role needs root")
    # not under pytest's 0700 basetemp: the service user must reach its serverdir
    root = Path(tempfile.mkdtemp(prefix="demolab-devpi-role-", dir="/var/tmp"))
    root.chmod(0o755)
    venv_wheels = sorted(Path(os.environ["DEVPI_TEST_VENV_WHEELS"]).glob("*.whl"))
    upstream = Upstream(root / "upstream", [*venv_wheels, *real_wheels])
    port = free_port()
    extra = {
        "ansible_connection": "local",
        "ansible_python_interpreter": "/usr/bin/python3",
        "lab_prefix": str(root / "opt"),
        "lab_etc_dir": str(root / "etc"),
        "lab_state_dir": str(root / "state"),
        # lab_log_dir stays the default: it is written into the machine-wide
        # /usr/local/sbin/demolab-service, which other lab services here share
        "lab_store_dir": str(root / "store"),
        "lab_secrets_dir": str(root / "secrets"),
        "lab_service_manager": "supervisor",
        "devpi_port": port,
        "devpi_service_name": SERVICE,
        "devpi_user": "demolab-devpi-t",
        "devpi_pip_conf_path": str(root / "pip.conf"),
        "devpi_fill_lock": str(MIRROR_LOCK),
        # pip's own configuration names the upstream (the role reads it: devpi_mirror_url "")
        "devpi_test_environment": {"PIP_INDEX_URL": upstream.url, "PIP_CONFIG_FILE": os.devnull},
    }
    (root / "extra.json").write_text(json.dumps(extra))
    info = {"root": root, "port": port, "url": f"http://127.0.0.1:{port}", "upstream": upstream,
            "extra": root / "extra.json"}
    yield info
    # only this test's program: other lab services may run under the same supervisord
    subprocess.run(["supervisorctl", "stop", SERVICE], capture_output=True, check=False)
    Path(f"/etc/supervisor/conf.d/{SERVICE}.conf").unlink(missing_ok=True)
    subprocess.run(["supervisorctl", "remove", SERVICE], capture_output=True, check=False)
    for log in Path("/var/log/demolab").glob(f"{SERVICE}.log*"):
        log.unlink(missing_ok=True)
    subprocess.run(["userdel", "demolab-devpi-t"], capture_output=True, check=False)
    subprocess.run(["groupdel", "demolab-devpi-t"], capture_output=True, check=False)
    upstream.close()
    shutil.rmtree(root, ignore_errors=True)


def apply(lab, *extra: str, check: bool = False) -> tuple[str, dict[str, int]]:
    cmd = [ansible_playbook(), "-i", "localhost,", str(PLAYBOOK), "-e", f"@{lab['extra']}",
           *extra]
    if check:
        cmd.append("--check")
    env = dict(clean_pip_env(), ANSIBLE_CONFIG=str(REPO / "ansible.cfg"),
               ANSIBLE_ROLES_PATH=str(REPO / "roles"), ANSIBLE_NOCOLOR="1")
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=900, cwd=REPO,
                          env=env, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stdout[-8000:] + proc.stderr[-3000:]
    recap = [line for line in proc.stdout.splitlines() if line.startswith("localhost")][-1]
    counts = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", recap)}
    return proc.stdout, counts


def get_json(url: str) -> dict:
    req = urllib.request.Request(url, headers={"Accept": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.load(resp)["result"]


def changed_tasks(output: str) -> list[str]:
    tasks, current = [], ""
    for line in output.splitlines():
        if line.startswith("TASK ["):
            current = line
        elif line.startswith("changed:"):
            tasks.append(current)
    return tasks


@pytest.fixture(scope="module")
def converged(lab):
    output, counts = apply(lab)
    assert counts["changed"] > 0
    return output


def test_converge_serves_the_filled_index_on_loopback(lab, converged, real_wheels):
    root = lab["root"]
    pypi = get_json(lab["url"] + "/root/pypi?no_projects=")
    assert pypi["mirror_no_project_list"] is True
    assert pypi["mirror_url"] == lab["upstream"].url  # taken from pip's configuration
    index = get_json(lab["url"] + "/lab/offline?no_projects=")
    assert index["bases"] == ["root/pypi"]
    manifest = json.loads((root / "store" / "pypi" / "manifest.json").read_text())
    assert manifest["files"] == {w.name: sha256(w) for w in real_wheels}
    conf = (root / "pip.conf").read_text()
    assert f"index-url = {lab['url']}/lab/offline/+simple/" in conf
    listening = subprocess.run(["ss", "-Hltn", f"sport = :{lab['port']}"], capture_output=True,
                               text=True, check=True).stdout
    local = [line.split()[3] for line in listening.splitlines()]
    assert local == [f"127.0.0.1:{lab['port']}"], listening
    status = subprocess.run(["supervisorctl", "status", SERVICE], capture_output=True, text=True,
                            check=False).stdout
    assert "RUNNING" in status
    # the root password is the lab secret (0600 on the controller) and works
    secret = root / "secrets" / "localhost" / "devpi-root"
    assert oct(secret.stat().st_mode & 0o777) == "0o600"
    body = json.dumps({"user": "root", "password": secret.read_text().strip()}).encode()
    req = urllib.request.Request(lab["url"] + "/+login", data=body, method="POST",
                                 headers={"Accept": "application/json",
                                          "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert resp.status == 200
    assert secret.read_text().strip() not in converged  # no_log


def test_second_run_changes_nothing(lab, converged):
    output, counts = apply(lab)
    assert counts["changed"] == 0, changed_tasks(output)


# The lab role looks for apt lists named *_Packages; a machine that keeps them compressed
# (Packages.lz4, as this one does) gets an `apt update` that check mode reports as a change.
LAB_APT_LISTS = "TASK [lab : Fetch apt's package lists on a fresh machine"


def test_check_mode_changes_nothing(lab, converged):
    output, _ = apply(lab, check=True)
    changed = [t for t in changed_tasks(output) if not t.startswith(LAB_APT_LISTS)]
    assert changed == []


def test_offline_switch(lab, converged, real_wheels, tmp_path):
    output, counts = apply(lab, "-e", "lab_mode=offline")
    assert counts["changed"] > 0
    cmdline = Path(f"/etc/supervisor/conf.d/{SERVICE}.conf").read_text()
    assert "--offline-mode" in cmdline
    output, counts = apply(lab, "-e", "lab_mode=offline")
    assert counts["changed"] == 0, changed_tasks(output)
    # pip with the role's pip.conf only: the lock installs, an unknown project fails fast
    venv = tmp_path / "venv"
    subprocess.run(["/usr/bin/python3", "-m", "venv", "--without-pip", str(venv)], check=True)
    env = dict(clean_pip_env(), PIP_CONFIG_FILE=str(lab["root"] / "pip.conf"))
    pip = [str(Path(os.environ["DEVPI_TEST_VENV"]) / "bin" / "python"), "-m", "pip", "--python",
           str(venv / "bin" / "python"), "install", "--no-cache-dir"]
    inst = subprocess.run([*pip, "--require-hashes", "-r", str(MIRROR_LOCK)], env=env,
                          capture_output=True, text=True, check=False, timeout=300)
    assert inst.returncode == 0, inst.stdout + inst.stderr
    started = time.monotonic()
    miss = subprocess.run([*pip, "demolab-delta"], env=env, capture_output=True, text=True,
                          check=False, timeout=60)
    assert miss.returncode != 0
    assert "No matching distribution found for demolab-delta" in miss.stdout + miss.stderr
    assert time.monotonic() - started < 20
