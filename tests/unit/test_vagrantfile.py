"""The Vagrantfile, read by Vagrant itself (Debian's vagrant, tests/apt/vagrant.txt).

`vagrant validate` cannot tell whether the provisioner works (make test-vagrant-replay does);
these check that the Vagrantfile takes its settings from vagrant/ansible_local.json, picks the
box per Debian release and refuses any other release in one line.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
SETTINGS = json.loads((REPO / "vagrant" / "ansible_local.json").read_text())

pytestmark = pytest.mark.skipif(shutil.which("vagrant") is None, reason="vagrant is not installed (make deps)")


def vagrant(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    full = dict(os.environ, VAGRANT_HOME=str(tmp_path / "vagrant.d"), VAGRANT_CHECKPOINT_DISABLE="1",
                VAGRANT_NO_COLOR="1", **env)
    return subprocess.run(["vagrant", *args], cwd=REPO, env=full, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("release", ["12", "13"])
def test_the_vagrantfile_validates_for_each_debian_release(tmp_path, release):
    out = vagrant(tmp_path, "validate", "--ignore-provider", DEMOLAB_DEBIAN=release,
                  DEMOLAB_MIRROR_HOST="192.168.56.1")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Vagrantfile validated successfully" in out.stdout


def test_another_debian_release_is_refused_in_one_line(tmp_path):
    out = vagrant(tmp_path, "validate", "--ignore-provider", DEMOLAB_DEBIAN="11")
    assert out.returncode != 0
    assert "DEMOLAB_DEBIAN=11: the Vagrant VM runs Debian 12 or 13" in out.stdout + out.stderr


def test_the_boxes_are_the_debian_releases_the_preflight_accepts():
    group_vars = yaml.safe_load((REPO / "playbooks" / "group_vars" / "all.yml").read_text())
    releases = {p["release"] for p in group_vars["lab_supported_platforms"]}
    assert set(SETTINGS["boxes"]) == releases
