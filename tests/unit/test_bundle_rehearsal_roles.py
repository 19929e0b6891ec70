"""Roles bundle and rehearsal, run for real by their playbooks on this machine, in temporary
directories: a bundle exported and imported (twice: the second run unpacks nothing), and
rehearse.yml handing demolab-rehearse the manifests, rehearsal_* and the talk to rehearse.
(The full round trip on fresh hosts, with the real helper, is tests/lifecycle.py's.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
sys.path.insert(0, str(REPO / "plugins" / "filter"))
from demolab_manifest import demolab_manifest  # noqa: E402


def run(playbook: Path | str, tmp: Path, *args: str) -> subprocess.CompletedProcess:
    inv = tmp / "inventory.ini"
    inv.write_text(f"[lab]\nlocalhost ansible_connection=local ansible_python_interpreter={sys.executable}\n")
    env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), ANSIBLE_NOCOLOR="1")
    return subprocess.run([str(BIN / "ansible-playbook"), "-i", str(inv), str(playbook), *args],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


def test_a_bundle_is_exported_then_imported_once(tmp_path):
    store, etc, bundle = tmp_path / "store", tmp_path / "etc", tmp_path / "bundle"
    parts = {"apt": store / "apt", "pypi": store / "pypi", "lab-ca": etc / "http_cache" / "ca"}
    for name, path in parts.items():
        path.mkdir(parents=True)
        (path / f"{name}.txt").write_text(f"the {name} part\n")
        path.chmod(0o700 if name == "lab-ca" else 0o755)  # as the roles that own them set them
    spec = [{"name": n, "path": str(p), "mode": "0700" if n == "lab-ca" else "0755", "secret": n == "lab-ca"}
            for n, p in parts.items()]
    common = ("-e", json.dumps({"bundle_parts": spec, "lab_store_dir": str(store), "lab_etc_dir": str(etc)}))
    out = run("playbooks/bundle.yml", tmp_path, "-e", f"bundle_dir={bundle}", *common)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    manifest = json.loads((bundle / "MANIFEST.json").read_text())
    assert [p["name"] for p in manifest["parts"]] == list(parts)
    assert (bundle / "lab-ca.tar").stat().st_mode & 0o777 == 0o600
    assert f"Bundle in {bundle}: apt, pypi, lab-ca, demo-app" in " ".join(out.stdout.split())

    target = tmp_path / "target"
    into = [{**p, "path": p["path"].replace(str(tmp_path), str(target))} for p in spec]
    play = tmp_path / "import.yml"
    play.write_text(yaml.safe_dump([{"hosts": "lab", "gather_facts": False, "tasks": [
        {"ansible.builtin.import_role": {"name": "lab", "tasks_from": "settings"}},
        {"ansible.builtin.import_role": {"name": "bundle"}}]}]))
    args = ("-e", json.dumps({"bundle_dir": str(bundle), "bundle_parts": into,
                              "lab_store_dir": str(target / "store"), "lab_etc_dir": str(target / "etc")}))
    first = run(play, tmp_path, *args)
    assert first.returncode == 0, first.stdout[-4000:]
    for name, path in parts.items():
        unpacked = Path(str(path).replace(str(tmp_path), str(target))) / f"{name}.txt"
        assert unpacked.read_text() == f"the {name} part\n"
    second = run(play, tmp_path, *args)
    assert second.returncode == 0 and "changed=0" in second.stdout, second.stdout[-3000:]


def test_rehearse_hands_the_manifests_extras_and_talk_to_the_helper(tmp_path):
    """rehearse.yml with a stand-in for demolab-rehearse that records its arguments and misses."""
    argv_file = tmp_path / "argv.json"
    helper = tmp_path / "demolab-rehearse"
    helper.write_text(f"#!{sys.executable}\nimport json, os, sys\n"
                      f"talk = [a for a in sys.argv[1:] if a.startswith('--talk=')]\n"
                      f"json.dump({{'argv': sys.argv[1:], 'talk_dir': sorted(os.listdir(os.path.dirname("
                      f"talk[0][7:]))) if talk else []}}, open({str(argv_file)!r}, 'w'))\n"
                      "print('MISS pip demolab-no-such-package')\nsys.exit(1)\n")
    helper.chmod(0o755)
    talk = tmp_path / "talk"
    talk.mkdir()
    (talk / "talk.yml").write_text("title: a talk\n")
    (talk / "snippet.txt").write_text("echo hi\n")
    extras = {"rehearsal_urls": ["http://127.0.0.1:9/extra"], "rehearsal_pip": ["demolab-no-such-package==1"],
              "rehearsal_apt": ["demolab-no-such-package"], "talk_file": str(talk / "talk.yml"),
              "__rehearsal_bin": str(helper)}
    out = run("playbooks/rehearse.yml", tmp_path, "-e", json.dumps(extras))
    assert out.returncode != 0
    assert "MISS pip demolab-no-such-package" in out.stdout  # the report is shown
    assert "found what the talk would miss offline" in out.stdout and "make rehearse" in out.stdout
    seen = json.loads(argv_file.read_text())
    urls = demolab_manifest((REPO / "mirror" / "urls.txt").read_text()) + extras["rehearsal_urls"]
    apt = demolab_manifest((REPO / "mirror" / "apt-packages.txt").read_text()) + extras["rehearsal_apt"]
    assert [a for a in seen["argv"] if a.startswith("--url=")] == [f"--url={u}" for u in urls]
    assert [a for a in seen["argv"] if a.startswith("--apt=")] == [f"--apt={p}" for p in apt]
    assert [a for a in seen["argv"] if a.startswith("--pip=")] == ["--pip=demolab-no-such-package==1"]
    talk_args = [a for a in seen["argv"] if a.startswith("--talk=")]
    assert len(talk_args) == 1 and talk_args[0].endswith("/talk.yml")
    assert seen["talk_dir"] == ["snippet.txt", "talk.yml"]  # the talk's directory was copied
    assert not Path(talk_args[0][7:]).parent.exists()  # and removed after the run
