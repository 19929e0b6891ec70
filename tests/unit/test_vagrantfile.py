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


# Loads the Vagrantfile with a stand-in for Vagrant's configure block (every call recorded) and
# prints its provisioners as JSON: what `vagrant up` would run, without Vagrant.
PROBE = r"""
require "json"
class Recorder
  attr_reader :calls
  def initialize; @calls = []; end
  def method_missing(name, *args, **kw, &blk)
    @calls << [name.to_s, args, kw]
    blk&.call(Recorder.new)
    self
  end
  def respond_to_missing?(*) = true
end
module Vagrant
  def self.configure(_version)
    cfg = Recorder.new
    yield cfg
    puts JSON.generate(cfg.calls.select { |name, *| name == "provision" })
  end
end
load ARGV[0]
"""


def test_with_a_mirror_host_the_vm_uses_the_lab_endpoints_of_that_host(tmp_path):
    probe = tmp_path / "probe.rb"
    probe.write_text(PROBE)
    out = subprocess.run(["ruby", str(probe), str(REPO / "Vagrantfile")], cwd=REPO, capture_output=True,
                         text=True, timeout=60, env=dict(os.environ, DEMOLAB_MIRROR_HOST="192.168.56.1"))
    assert out.returncode == 0, out.stderr
    mirror = next(p for p in json.loads(out.stdout) if p[1] == ["mirror"])
    lab = yaml.safe_load((REPO / "roles" / "lab" / "defaults" / "main.yml").read_text())
    assert mirror[2]["args"] == [
        f"http://192.168.56.1:{lab['lab_apt_mirror_port']}/apt",
        f"http://192.168.56.1:{lab['lab_devpi_port']}/{lab['lab_devpi_index']}/+simple/",
        SETTINGS["ansible_local"]["pip_args"],
    ]


def test_the_vms_ansible_and_mitogen_are_the_controllers_pins():
    """pip_args pins what requirements-dev.txt pins (the VM's play is the laptop's play)."""
    pins = dict(line.split("==", 1) for line in (REPO / "requirements-dev.txt").read_text().splitlines()
                if "==" in line and not line.startswith("#"))
    vm = [arg for arg in SETTINGS["ansible_local"]["pip_args"].split() if "==" in arg]
    assert sorted(arg.split("==")[0] for arg in vm) == ["ansible", "mitogen"]
    for arg in vm:
        name, version = arg.split("==")
        assert pins.get(name) == version, (f"{arg} in vagrant/ansible_local.json, "
                                           f"{name}=={pins.get(name)} in requirements-dev.txt")
