"""`make test-vagrant`: the project's own Vagrantfile, for real, on a locally built box.

    python3 tests/vagrant/run.py [--prefix vg] [--first-index 231] [--release 12] [--keep]

Not part of `make test` (software emulation: long). Steps, each timed:

1. a libvirt box built from the harness's debootstrap rootfs (tests/vagrant/box.py, cached
   under /var/cache/demolab/vagrant), added under the name the Vagrantfile uses;
2. a harness host (PREFIX-m) provisioned as a lab whose mirrors serve the lab network
   (lab_mirror_address: devpi, the Debian mirror, the FFmpeg artifact), while the box builds;
3. a network namespace (PREFIX-vm) on the harness's bridge, with libvirtd, libvirt's networks
   and the VM inside it. Its only ways out are the harness's forward proxy and the mirror host's
   two ports (an nftables table of the namespace drops everything else; there is no default
   route), so the VM provisions from the mirror host (DEMOLAB_MIRROR_HOST) and needs no internet;
4. in the namespace, in the project's directory: `vagrant up` (libvirt, DEMOLAB_LIBVIRT_DRIVER=qemu:
   software emulation) in its two halves, timed apart: `vagrant up --no-provision` (boot, ssh,
   rsync; while the mirror host converges; then the VM's way out is checked from inside it),
   then the first `vagrant provision` (the mirror shell provisioner and ansible_local); a second
   `vagrant provision` must report changed=0; then the testinfra suite through
   `vagrant ssh-config`; always `vagrant destroy -f`, libvirtd stopped, the namespace and the
   hosts removed (also on failure and Ctrl-C) unless --keep.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "harness"))
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import box  # noqa: E402
import labhosts  # noqa: E402
import lifecycle  # noqa: E402
import roledefaults  # noqa: E402
from recap import changed_counts, changed_tasks  # noqa: E402

SETTINGS = json.loads((REPO / "vagrant" / "ansible_local.json").read_text())
RUN_DIR = Path(os.environ.get("DEMOLAB_TESTHOSTS_RUN", "/var/tmp/demolab-testhosts"))
WORK = REPO / ".run" / "vagrant"
VAGRANT_HOME = box.CACHE / "home"
# The inventory name the testinfra suite knows the VM by (its secrets are copied under it).
VM_NAME = "demolab-vm"


def role_default(role: str, var: str):
    return roledefaults.default(role, var)


def log(msg: str) -> None:
    print(f"[test-vagrant] {msg}", flush=True)


class Namespace:
    """A network namespace on the harness's bridge holding libvirtd and its VMs."""

    def __init__(self, name: str, index: int, allowed: list[tuple[str, list[int]]]) -> None:
        self.name, self.ip = name, f"{labhosts.NET_PREFIX}.{index}"
        self.veth = f"vh-{name}"[:15]
        self.allowed = allowed
        self.dir = RUN_DIR / "vagrant" / name
        self.pids: dict[str, Path] = {}

    def exec(self, *cmd: str) -> list[str]:
        return ["ip", "netns", "exec", self.name, *cmd]

    def up(self) -> None:
        self.down()
        labhosts.ensure_bridge()
        self.dir.mkdir(parents=True, exist_ok=True)
        run = labhosts.run
        run(["ip", "netns", "add", self.name])
        run(["ip", "link", "add", self.veth, "type", "veth", "peer", "name", "eth0", "netns", self.name])
        run(["ip", "link", "set", self.veth, "master", labhosts.BRIDGE, "up"])
        run(self.exec("ip", "link", "set", "lo", "up"))
        run(self.exec("ip", "addr", "add", f"{self.ip}/24", "dev", "eth0"))  # no default route
        run(self.exec("ip", "link", "set", "eth0", "up"))
        # The only ways out: the forward proxy and the mirror host's ports (NAT'd VM traffic
        # included: a drop in any nftables base chain is final, whatever libvirt's rules accept).
        rules = "".join(f'    oifname "eth0" ip daddr {ip} tcp dport {{ {", ".join(map(str, ports))} }} accept\n'
                        for ip, ports in self.allowed)
        chain = (f"{rules}    oifname \"eth0\" ct state established,related accept\n"
                 "    oifname \"eth0\" counter drop\n")
        nft = ("table inet demolab_egress {\n"
               f"  chain output {{\n    type filter hook output priority 0; policy accept;\n{chain}  }}\n"
               f"  chain forward {{\n    type filter hook forward priority 0; policy accept;\n{chain}  }}\n}}\n")
        run(self.exec("nft", "-f", "-"), input=nft, text=True)

    def start_libvirt(self) -> None:
        for daemon in ("virtlogd", "libvirtd"):
            if subprocess.run(["pgrep", "-x", daemon], capture_output=True).returncode == 0:
                raise SystemExit(f"a {daemon} already runs on this machine: make test-vagrant starts its own "
                                 "inside its network namespace; stop that one first")
        for daemon in ("virtlogd", "libvirtd"):
            pid = self.dir / f"{daemon}.pid"
            labhosts.run(self.exec(f"/usr/sbin/{daemon}", "--daemon", "--pid-file", str(pid)))
            self.pids[daemon] = pid
        deadline = time.monotonic() + 30
        while subprocess.run(["virsh", "-c", "qemu:///system", "version"], capture_output=True).returncode != 0:
            if time.monotonic() > deadline:
                raise SystemExit("libvirtd did not answer within 30 s")
            time.sleep(0.5)
        log(f"libvirtd runs in the network namespace {self.name} ({self.ip})")

    def down(self) -> None:
        for daemon in ("libvirtd", "virtlogd"):
            pidfile = self.pids.pop(daemon, self.dir / f"{daemon}.pid")
            with contextlib.suppress(FileNotFoundError, ValueError, ProcessLookupError):
                pid = int(pidfile.read_text())
                os.kill(pid, signal.SIGTERM)
                deadline = time.monotonic() + 20
                while time.monotonic() < deadline and Path(f"/proc/{pid}").exists():
                    time.sleep(0.2)
        # What libvirtd started in the namespace (dnsmasq, a qemu left by a killed run).
        pids = subprocess.run(["ip", "netns", "pids", self.name], capture_output=True, text=True).stdout.split()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid), signal.SIGTERM)
        labhosts.run(["ip", "netns", "del", self.name], check=False, quiet=True)
        labhosts.run(["ip", "link", "del", self.veth], check=False, quiet=True)
        shutil.rmtree(self.dir, ignore_errors=True)


class Vagrant:
    """The vagrant command in the namespace, in the project's directory."""

    def __init__(self, ns: Namespace, env: dict[str, str]) -> None:
        self.ns = ns
        self.env = dict(os.environ, VAGRANT_HOME=str(VAGRANT_HOME), VAGRANT_DOTFILE_PATH=str(WORK / "dot"),
                        VAGRANT_CHECKPOINT_DISABLE="1", VAGRANT_NO_COLOR="1", VAGRANT_DEFAULT_PROVIDER="libvirt",
                        DEMOLAB_LIBVIRT_DRIVER="qemu", **env)

    def __call__(self, *args: str, log_to: Path | None = None, check: bool = True) -> tuple[int, str]:
        cmd = self.ns.exec("nice", "-n", "10", "vagrant", *args)
        log("$ vagrant " + " ".join(args))
        proc = subprocess.Popen(cmd, cwd=REPO, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True)
        assert proc.stdout is not None
        lines = []
        with open(log_to or os.devnull, "w") as out:
            for line in proc.stdout:
                out.write(line)
                out.flush()
                lines.append(line)
                short = re.sub(r"^\s*default:\s?", "", line)
                if not short.startswith(("ok:", "skipping:", "included:")) and short.strip():
                    print("  " + line.rstrip()[:200], flush=True)
        rc = proc.wait()
        text = "".join(lines)
        if check and rc != 0:
            raise Failure(f"vagrant {' '.join(args)}: rc={rc}" + (f"; log {log_to}" if log_to else ""))
        return rc, text


class Failure(Exception):
    pass


def playbook_output(vagrant_text: str) -> str:
    """ansible-playbook's own lines out of vagrant's (prefixed with the machine's name)."""
    return "\n".join(re.sub(r"^\s*default:\s?", "", line) for line in vagrant_text.splitlines())


# Software emulation on a shared machine: the boot (DHCP, sshd, the key swap) can take longer
# than Vagrant's default 300 s. Set in VAGRANT_HOME's own Vagrantfile (Vagrant loads it before
# the project's), so the project's Vagrantfile is run as it is.
BOOT_TIMEOUT = 1800


def vagrant_home() -> None:
    VAGRANT_HOME.mkdir(parents=True, exist_ok=True)
    (VAGRANT_HOME / "Vagrantfile").write_text(
        f'Vagrant.configure("2") {{ |config| config.vm.boot_timeout = {BOOT_TIMEOUT} }}\n')


def add_box(vagrant: Vagrant, box_file: Path, name: str) -> bool:
    """vagrant box add (once per built box); True when (re)added."""
    stamp = VAGRANT_HOME / f"demolab-{name.replace('/', '-')}.added"
    if stamp.exists() and stamp.read_text() == box_file.name:
        return False
    VAGRANT_HOME.mkdir(parents=True, exist_ok=True)
    vagrant("box", "add", "--force", "--name", name, "--provider", "libvirt", str(box_file))
    stamp.write_text(box_file.name)
    return True


def drop_stale_volumes(name: str) -> None:
    """vagrant-libvirt uploads a box into libvirt's pool once: a rebuilt box must replace it."""
    prefix = name.replace("/", "-VAGRANTSLASH-")
    out = subprocess.run(["virsh", "-q", "vol-list", "default"], capture_output=True, text=True)
    for line in out.stdout.splitlines():
        vol = line.split()[0] if line.split() else ""
        if vol.startswith(prefix):
            subprocess.run(["virsh", "vol-delete", "--pool", "default", vol], check=False, capture_output=True)
            log(f"dropped the stale box volume {vol}")


def provision_mirror_host(lab: labhosts.LabHosts, secrets: Path, result: dict) -> None:
    """site.yml on the mirror host (its lab FFmpeg from the media suite's artifact cache)."""
    host = lab.hosts[0]
    inventory = lab.inventory(WORK / "inventory-mirror.ini", host_vars={host.name: {"lab_mirror_address": host.ip}})
    t = time.monotonic()
    cmd = [str(lifecycle.VENV_BIN / "ansible-playbook"), "-i", str(inventory), str(REPO / "playbooks" / "site.yml"),
           "-e", f"lab_secrets_dir={secrets}", "-e", f"ffmpeg_artifact_source_dir={lifecycle.FFMPEG_CACHE}"]
    # The mirror host is this test's fixture, not its subject: on a loaded machine a service
    # may miss its 60 s start window once, so a failed converge gets one more run.
    for attempt in (1, 2):
        with open(WORK / f"mirror-converge-{attempt}.log", "w") as out:
            rc = subprocess.run(["nice", "-n", "10", *cmd], stdout=out, stderr=subprocess.STDOUT,
                                env=lifecycle.ansible_env(secrets), cwd=REPO).returncode
        if rc == 0:
            break
    result.update(rc=rc, seconds=time.monotonic() - t, attempts=attempt)


def egress_check(ns: Namespace, mirror_ip: str) -> list[str]:
    """From inside the VM: the forward proxy and the mirror host's ports are reachable,
    anything else (the bridge's other ports, an address outside the lab network) is not."""
    probes = [(labhosts.BRIDGE_IP, labhosts.PROXY_PORT, True), (mirror_ip, 22, False),
              (labhosts.BRIDGE_IP, 22, False), ("192.168.1.1", 80, False)]
    script = "; ".join(f"timeout 5 bash -c 'exec 3<>/dev/tcp/{ip}/{port}' 2>/dev/null && echo {ip}:{port}=open "
                       f"|| echo {ip}:{port}=closed" for ip, port, _ in probes)
    out = subprocess.run(ns.exec("ssh", "-F", str(WORK / "ssh-config"), "default", script),
                         capture_output=True, text=True).stdout
    got = dict(line.split("=") for line in out.split() if "=" in line)
    log(f"from the VM: {got}")
    want = {f"{ip}:{port}": "open" if ok else "closed" for ip, port, ok in probes}
    return [] if got == want else [f"the VM's way out: {got}, want {want}"]


def infra_inventory(ssh_config: str, mirror_ip: str) -> Path:
    conf = {}
    for line in ssh_config.splitlines():
        parts = line.split(None, 1)
        if len(parts) == 2:
            conf.setdefault(parts[0], parts[1].strip().strip('"'))
    line = (f"{VM_NAME} ansible_host={conf['HostName']} ansible_port={conf['Port']} ansible_user={conf['User']}"
            f" ansible_ssh_private_key_file={conf['IdentityFile']} ansible_connection=ssh ansible_become=true"
            f" lab_mirror_host={mirror_ip}")
    path = WORK / "inventory-vm.ini"
    path.write_text(f"[lab]\n{line}\n\n[presenter]\n{line}\n\n[all:vars]\nansible_python_interpreter=/usr/bin/python3\n"
                    "ansible_ssh_common_args='-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null'\n")
    return path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prefix", default="vg", help="names of the mirror host and the namespace")
    ap.add_argument("--first-index", type=int, default=231, help="10.77.0.N of the namespace; N+1: the mirror host")
    ap.add_argument("--release", default=SETTINGS["default_release"], choices=sorted(SETTINGS["boxes"]))
    ap.add_argument("--keep", action="store_true", help="leave the VM, the namespace and the hosts (debugging)")
    a = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("make test-vagrant needs root (namespaces, libvirtd, mounts)")
    t0 = time.monotonic()
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    secrets = WORK / "secrets"
    timings: list[tuple[str, float]] = []
    failures: list[str] = []
    box_name = SETTINGS["boxes"][a.release]
    suite = box.SUITE_OF_RELEASE[a.release]
    lab = labhosts.LabHosts([f"{a.prefix}-m"], first_index=a.first_index + 1, suite=suite)
    mirror_ip = lab.hosts[0].ip
    ports = [role_default("devpi", "devpi_port"), role_default("apt_mirror", "apt_mirror_port")]
    ns = Namespace(f"{a.prefix}-vm", a.first_index, [(labhosts.BRIDGE_IP, [labhosts.PROXY_PORT]), (mirror_ip, ports)])
    vagrant = Vagrant(ns, {"DEMOLAB_DEBIAN": a.release, "DEMOLAB_MIRROR_HOST": mirror_ip,
                           "DEMOLAB_UPSTREAM_PROXY": lab.proxy.url})
    destroy = False
    try:
        t = time.monotonic()
        lab.__enter__()
        timings.append(("boot mirror host", time.monotonic() - t))
        mirror: dict = {}
        worker = threading.Thread(target=provision_mirror_host, args=(lab, secrets, mirror), daemon=True)
        worker.start()
        log(f"provisioning the mirror host {lab.hosts[0].name} ({mirror_ip}) in the background: "
            f"{WORK / 'mirror-converge-1.log'}")

        t = time.monotonic()
        box_file = box.build(suite, lab.proxy.url)
        timings.append(("box build", time.monotonic() - t))

        ns.up()
        ns.start_libvirt()
        vagrant_home()
        t = time.monotonic()
        if add_box(vagrant, box_file, box_name):
            drop_stale_volumes(box_name)
        timings.append(("vagrant box add", time.monotonic() - t))

        # vagrant up = boot, then the first provision: the VM boots while the mirror host
        # converges, and each half is timed.
        destroy = True
        t = time.monotonic()
        vagrant("up", "--no-provision", log_to=WORK / "up.log")
        timings.append(("vagrant up (boot, ssh, rsync)", time.monotonic() - t))
        _, ssh_config = vagrant("ssh-config")
        (WORK / "ssh-config").write_text(ssh_config)
        failures.extend(egress_check(ns, mirror_ip))

        t = time.monotonic()
        worker.join()
        timings.append(("wait for the mirror host", time.monotonic() - t))
        timings.append((f"mirror host converge ({mirror.get('attempts')} run(s))", mirror.get("seconds", 0.0)))
        if mirror.get("rc") != 0:
            raise Failure(f"mirror host converge rc={mirror.get('rc')}; logs {WORK}/mirror-converge-*.log")

        t = time.monotonic()
        rc, out = vagrant("provision", log_to=WORK / "provision-1.log", check=False)
        timings.append(("first provision", time.monotonic() - t))
        changed = changed_counts(playbook_output(out))
        log(f"first provision: rc={rc}, recap {changed}")
        if rc != 0:
            raise Failure(f"first provision: rc={rc}; log {WORK / 'provision-1.log'}")

        t = time.monotonic()
        rc, out = vagrant("provision", log_to=WORK / "provision-2.log", check=False)
        timings.append(("second provision (changed=0)", time.monotonic() - t))
        text = playbook_output(out)
        changed = changed_counts(text)
        log(f"vagrant provision: rc={rc}, recap {changed}")
        if rc != 0 or not changed or any(changed.values()):
            raise Failure(f"vagrant provision: rc={rc} changed={changed}: " + "; ".join(changed_tasks(text)))

        inventory = infra_inventory(ssh_config, mirror_ip)
        vm_secrets = WORK / "vm-secrets" / VM_NAME
        vm_secrets.mkdir(parents=True)
        tar = subprocess.Popen(ns.exec("ssh", "-F", str(WORK / "ssh-config"), "default",
                                       "tar -C .config/demolab/secrets/localhost -c ."), stdout=subprocess.PIPE)
        subprocess.run(["tar", "-C", str(vm_secrets), "-x"], stdin=tar.stdout, check=True)
        if tar.wait() != 0:
            raise Failure("the VM's secrets are not in /home/vagrant/.config/demolab/secrets/localhost")
        t = time.monotonic()
        env = lifecycle.ansible_env(vm_secrets.parent)
        pytest = ns.exec(str(lifecycle.VENV_BIN / "pytest"), "-q", str(REPO / "tests" / "infra"),
                         "--hosts=ansible://lab", f"--ansible-inventory={inventory}", "-p", "no:cacheprovider")
        rc = subprocess.run(pytest, env=env, cwd=REPO).returncode
        timings.append(("testinfra", time.monotonic() - t))
        if rc != 0:
            failures.append(f"testinfra on the VM: rc={rc}")
    except Failure as e:
        failures.append(str(e))
    finally:
        if a.keep:
            log(f"--keep: the VM, the namespace {ns.name} and {lab.hosts[0].name} are left running")
        else:
            t = time.monotonic()
            if destroy:
                rc, _ = vagrant("destroy", "-f", log_to=WORK / "destroy.log", check=False)
                if rc != 0:
                    failures.append(f"vagrant destroy -f: rc={rc}")
            ns.down()
            lab.close()
            timings.append(("teardown", time.monotonic() - t))
        print("\ntimings:")
        for name, secs in timings:
            print(f"  {name:<40} {secs:7.1f} s")
        print(f"  {'total':<40} {time.monotonic() - t0:7.1f} s")
    for f in failures:
        print(f"FAILED {f}", file=sys.stderr)
    print("test-vagrant:", "FAILED" if failures else "passed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
