"""The Vagrantfile's ansible_local provisioner, replayed on a fresh host (part of `make test`).

    python3 tests/vagrant/replay.py [--host v1] [--first-index 71] [--keep]

`vagrant validate` accepts a provisioner that cannot work, and a real VM under software
emulation takes many minutes (make test-vagrant). This replays, on a brand-new systemd host
of the test harness set up like a Vagrant box (a `vagrant` user with passwordless sudo, the
project synced to /vagrant), the commands Vagrant's ansible_local provisioner runs over SSH,
in its order and with its semantics (Vagrant 2.3.4's plugins/provisioners/ansible:
provisioner/guest.rb and base.rb, cap/guest/debian/ansible_install.rb, cap/guest/pip/pip.rb,
cap/guest/posix/ansible_installed.rb; current Vagrant differs only in the version probes, which
a Vagrantfile without `version` does not use), built from vagrant/ansible_local.json, the file
the Vagrantfile itself reads:

- `execute` is a command run as the SSH user (`bash -l`), `sudo` one run through
  `sudo -E -H bash -l`, `test` an execute whose exit status is the answer; a failing execute or
  sudo stops the provisioner, as Vagrant's communicator raises;
- install (first provision): apt-get update, the build dependencies, pip_install_cmd (as the
  SSH user), `pip install ARGS` as root; then `ansible --version`, read as Vagrant 2.3.4 reads
  it (its compatibility mode and its version check);
- the ansible-playbook command line ansible_local runs in /vagrant.

Then `vagrant provision` again: Ansible must not be reinstalled and the run must report
changed=0; the secrets must sit in the provisioning user's own home. The playbook runs with
`tags` (an ansible_local option) limited to the preflight, the lab role and Redis (a secret
generated on the controller, i.e. by the SSH user, and a service installed with become): the
whole site.yml on a fresh host is the lifecycle's job (tests/lifecycle.py); what this adds is
the Vagrant path: the unprivileged SSH user, sudo, pip on an externally managed Python, the
version probe, the command line.
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "harness"))

import labhosts  # noqa: E402
from recap import changed_counts, changed_tasks  # noqa: E402

SETTINGS = REPO / "vagrant" / "ansible_local.json"
PROVISIONING_PATH = "/vagrant"  # ansible_local's default provisioning_path
# The playbook subset of this replay (see the module docstring).
TAGS = ["lab_install", "lab_configure", "redis_install", "redis_configure", "redis_run"]
# The ansible_local options this replay knows how Vagrant uses; any other is an error, so
# that a new option in the Vagrantfile is never silently left out of the replay.
KNOWN = {"install_mode", "pip_install_cmd", "pip_args", "version", "compatibility_mode",
         "playbook", "inventory_path", "limit", "become", "tags", "install", "extra_vars",
         "raw_arguments"}


class VagrantError(Exception):
    """What `vagrant up` / `vagrant provision` would have stopped with."""


class Guest:
    """A harness host reached the way Vagrant reaches a box: as `vagrant` over SSH."""

    def __init__(self, host: labhosts.Host) -> None:
        self.host = host
        self.log: list[str] = []

    def _ssh(self, shell: str, command: str) -> subprocess.CompletedProcess:
        args = [a if a != f"root@{self.host.ip}" else f"vagrant@{self.host.ip}" for a in self.host.ssh_args]
        self.log.append(f"[{shell}] {command}")
        print(f"  vagrant> ({shell}) {command}", flush=True)
        # Vagrant's SSH communicator starts the shell and writes the command to its stdin.
        return subprocess.run([*args, shell], input=command + "\n", capture_output=True, text=True)

    def execute(self, command: str, check: bool = True) -> subprocess.CompletedProcess:
        out = self._ssh("bash -l", command)
        if check and out.returncode != 0:
            raise VagrantError(f"`{command}` (as vagrant) exited {out.returncode}:\n{_tail(out)}")
        return out

    def sudo(self, command: str) -> subprocess.CompletedProcess:
        out = self._ssh("sudo -E -H bash -l", command)
        if out.returncode != 0:
            raise VagrantError(f"`{command}` (sudo) exited {out.returncode}:\n{_tail(out)}")
        return out

    def test(self, command: str) -> bool:
        return self.execute(command, check=False).returncode == 0


def _tail(out: subprocess.CompletedProcess) -> str:
    return (out.stdout + out.stderr)[-2500:]


def load_settings(extra_env: dict[str, str]) -> tuple[dict, dict]:
    """vagrant/ansible_local.json as the Vagrantfile applies it (extra_vars from the env)."""
    data = json.loads(SETTINGS.read_text())
    options = dict(data["ansible_local"])
    extra = {var: extra_env.get(env, "") for var, env in data["extra_vars_from_env"].items()}
    extra = {k: v for k, v in extra.items() if v}
    if extra:
        options["extra_vars"] = extra
    return options, data


def provision(guest: Guest, options: dict) -> str:
    """One `vagrant provision` of ansible_local: returns the playbook's output."""
    unknown = set(options) - KNOWN
    if unknown:
        raise SystemExit(f"replay.py does not know what Vagrant does with {sorted(unknown)}: "
                         "teach it (tests/vagrant/replay.py) before using that option")
    playbook, inventory = options["playbook"], options.get("inventory_path")
    # check_files_existence
    guest.execute(f"test -f '{PROVISIONING_PATH}/{playbook}'")
    if inventory:
        guest.execute(f"test -e '{PROVISIONING_PATH}/{inventory}'")

    # check_and_install_ansible (posix/ansible_installed.rb, Vagrant 2.3.4)
    version = str(options.get("version", ""))
    probe = 'test -x "$(command -v ansible)"'
    if version:
        probe += f"&& ansible --version | grep 'ansible {version}'"
    if options.get("install", True) and (version == "latest" or not guest.test(probe)):
        install_ansible(guest, options.get("install_mode", "default"), version,
                        options.get("pip_args", ""), options.get("pip_install_cmd", ""))

    # set_and_check_compatibility_mode: the first line of `ansible --version`
    first = guest.execute("ansible --version", check=False).stdout.splitlines()[:1]
    gathered, major = "", None
    m = re.match(r"(^ansible\s+)(.+)$", first[0]) if first else None
    if m:
        gathered = m.group(2).strip()
        digits = re.search(r"(\d)\..+$", gathered)
        major = int(digits.group(1)) if digits else None
    mode = options.get("compatibility_mode", "auto")
    if major is not None and mode == "auto":
        mode = "1.8" if major <= 1 else "2.0"
    elif major is not None and major < 2 and mode == "2.0":
        raise VagrantError(f"AnsibleCompatibilityModeConflict: ansible {gathered!r} with mode 2.0")
    if mode == "auto":
        mode = "1.8"  # Vagrant's "safe" fallback: --sudo, which ansible-playbook no longer has
    if version and version != "latest" and version != gathered:
        raise VagrantError(f"AnsibleVersionMismatch: version {version!r} required, Vagrant read "
                           f"{gathered!r} from `ansible --version`")

    # execute_ansible_playbook_on_guest (base.rb's command line)
    args = [f'--limit="{options.get("limit", "default")}"']
    if inventory:
        args.append(f"--inventory-file={inventory}")
    if options.get("extra_vars"):
        args.append("--extra-vars=" + shlex.quote(json.dumps(options["extra_vars"], separators=(",", ":"))))
    if options.get("become"):
        args.append("--become" if mode == "2.0" else "--sudo")
    if options.get("tags"):
        args.append("--tags=" + ",".join(options["tags"]))
    args += options.get("raw_arguments", [])  # last, as Vagrant appends them
    command = (f"cd {PROVISIONING_PATH} && PYTHONUNBUFFERED=1 ANSIBLE_NOCOLOR=true ansible-playbook "
               + " ".join(args) + f" {playbook}")
    out = guest.execute(command, check=False)
    text = out.stdout + out.stderr
    if out.returncode != 0:
        raise VagrantError(f"AnsibleCommandFailed (rc={out.returncode}):\n{text[-4000:]}")
    return text


def install_ansible(guest: Guest, mode: str, version: str, pip_args: str, pip_install_cmd: str) -> None:
    """cap/guest/debian/ansible_install.rb and cap/guest/pip/pip.rb."""
    if mode not in ("pip", "pip_args_only"):
        guest.sudo("apt-get update -y -qq")
        guest.sudo('DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --option '
                   '"Dpkg::Options::=--force-confold" ansible')
        return
    guest.sudo("apt-get update -y -qq")
    dev = "python-dev-is-python3" if guest.test("apt-cache show python-dev-is-python3") else "python-dev"
    guest.sudo('DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --option '
               f'"Dpkg::Options::=--force-confold" build-essential curl git libssl-dev libffi-dev {dev}')
    if not pip_install_cmd:
        raise VagrantError("no pip_install_cmd: Vagrant would pipe get-pip.py from the internet "
                           "into `sudo python` (no `python` on Debian 12/13)")
    guest.execute(pip_install_cmd)  # as the SSH user: Vagrant does not add sudo here
    if mode == "pip":
        pin = f"=={version}" if version and version != "latest" else ""
        guest.sudo("pip install " + " ".join([pip_args, "--upgrade", f"ansible{pin}"]))
    else:
        guest.sudo("pip install " + " ".join([pip_args, "", ""]))  # Ruby's [args, nil, ""].join


def make_box(host: labhosts.Host, proxy_url: str) -> None:
    """What a Debian Vagrant box has, on a fresh harness host; the project rsynced to /vagrant."""
    pub = labhosts.ssh_key().with_suffix(".pub").read_text()
    host.sh(
        "set -e; useradd -m -s /bin/bash vagrant;"
        " echo 'vagrant ALL=(ALL) NOPASSWD: ALL' > /etc/sudoers.d/vagrant; chmod 0440 /etc/sudoers.d/vagrant;"
        " install -d -m 700 -o vagrant -g vagrant /home/vagrant/.ssh;"
        f" echo {shlex.quote(pub.strip())} > /home/vagrant/.ssh/authorized_keys;"
        " chown vagrant: /home/vagrant/.ssh/authorized_keys; chmod 600 /home/vagrant/.ssh/authorized_keys;"
        # The box's way out (a VM's NAT at home): here, the harness's forward proxy.
        f" echo 'Acquire::http::Proxy \"{proxy_url}\";' > /etc/apt/apt.conf.d/01proxy;"
        f" printf 'export http_proxy={proxy_url} https_proxy={proxy_url} no_proxy=127.0.0.1,localhost\\n'"
        " > /etc/profile.d/00-proxy.sh;"
        f" install -d -o vagrant -g vagrant {PROVISIONING_PATH}")
    excludes = json.loads(SETTINGS.read_text())["rsync_exclude"] + [".vagrant/", ".git"]
    tar = subprocess.Popen(["tar", "-C", str(REPO), *[f"--exclude=./{e.rstrip('/')}" for e in excludes],
                            "-c", "."], stdout=subprocess.PIPE)
    subprocess.run([*host.ssh_args, f"tar -C {PROVISIONING_PATH} -x --no-same-owner && "
                    f"chown -R vagrant: {PROVISIONING_PATH}"], stdin=tar.stdout, check=True)
    if tar.wait() != 0:
        raise SystemExit("tar of the project failed")


def up_and_provision(guest: Guest, options: dict, timings: list[tuple[str, float]]) -> list[str]:
    """`vagrant up` then `vagrant provision`: no reinstall, changed=0 the second time."""
    for what in ("vagrant up", "vagrant provision"):
        t = time.monotonic()
        mark = len(guest.log)
        try:
            out = provision(guest, options)
        except VagrantError as e:
            return [f"{what}: {e}"]
        finally:
            timings.append((what, time.monotonic() - t))
        changed = changed_counts(out)
        print(f"{what}: recap {changed}", flush=True)
    installs = [c for c in guest.log[mark:] if "pip install" in c or "apt-get install" in c]
    if installs:
        return [f"vagrant provision installed Ansible again: {installs}"]
    if not changed or any(changed.values()):
        return [f"vagrant provision: changed={changed}: " + "; ".join(changed_tasks(out))]
    return []


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--host", default="v1")
    ap.add_argument("--first-index", type=int, default=71)
    ap.add_argument("--keep", action="store_true", help="leave the host running (debugging)")
    a = ap.parse_args()
    t0 = time.monotonic()
    timings: list[tuple[str, float]] = []
    lab = labhosts.LabHosts([a.host], first_index=a.first_index)
    failures: list[str] = []
    try:
        lab.__enter__()
        host = lab.hosts[0]
        timings.append(("boot", time.monotonic() - t0))
        make_box(host, lab.proxy.url)
        guest = Guest(host)
        options, _ = load_settings({"DEMOLAB_UPSTREAM_PROXY": lab.proxy.url})
        options["tags"] = TAGS
        failures = up_and_provision(guest, options, timings)
        if not failures:
            st = host.sh("stat -c '%U %a' /home/vagrant/.config/demolab/secrets/localhost/redis", check=False)
            if st.stdout.strip() != "vagrant 600":
                failures.append("the Redis secret is not /home/vagrant/.config/demolab/secrets/localhost/redis "
                                f"owned by vagrant, 0600: {(st.stdout + st.stderr).strip()}")
    finally:
        lab.finish(a.keep, Path("/dev/null"), timings, t0)
    for f in failures:
        print(f"FAILED {f}", file=sys.stderr)
    print("vagrant replay:", "FAILED" if failures else "passed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
