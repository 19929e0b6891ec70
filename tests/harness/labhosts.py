"""Fresh, offline Debian 12 (or 13) test hosts with systemd as PID 1.

Each host is a systemd-nspawn container booted from a cached debootstrap rootfs
(an overlay per host, so a new host costs ~0 s), living in its own network
namespace attached to a bridge.  There is NO default route inside: the venue
has no internet.  The only way out is a forward proxy that this harness runs on
the bridge address (the presenter at home, online); stop it and the same host
is at the venue, offline.

Used as a library (``LabHosts`` context manager: tears everything down on
exit, on failure and on Ctrl-C) and as a CLI for manual work::

    python3 tests/harness/labhosts.py base [--suite trixie]       # build/cached rootfs
    python3 tests/harness/labhosts.py up lab1 11 [--suite trixie] # boot 10.77.0.11 and wait
    python3 tests/harness/labhosts.py down lab1
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CACHE = Path(os.environ.get("DEMOLAB_TESTHOSTS_CACHE", "/var/cache/demolab/testhosts"))
RUN = Path(os.environ.get("DEMOLAB_TESTHOSTS_RUN", "/var/tmp/demolab-testhosts"))
BRIDGE = "br-demolab"
NET_PREFIX = "10.77.0"
BRIDGE_IP = f"{NET_PREFIX}.1"
# Concurrent test runs (a helper beside the main suite) each pick their own port;
# each port gets its own cache so two apt-cacher-ng never share files.
PROXY_PORT = int(os.environ.get("DEMOLAB_PROXY_PORT", "3142"))
SUITE = "bookworm"
# The Debian releases a host can run (its rootfs is cached per release).
SUITES = ("bookworm", "trixie")
BASE_PACKAGES = [
    "systemd", "systemd-sysv", "dbus", "openssh-server", "python3", "python3-apt",
    "sudo", "iproute2", "ca-certificates", "procps",
]
# Bump when the rootfs recipe below changes: the cache key includes it.
RECIPE_VERSION = "3"


def log(msg: str) -> None:
    print(f"[labhosts] {msg}", file=sys.stderr, flush=True)


def run(cmd: list[str], check: bool = True, quiet: bool = False, **kw) -> subprocess.CompletedProcess:
    if quiet:
        kw.setdefault("stdout", subprocess.DEVNULL)
        kw.setdefault("stderr", subprocess.DEVNULL)
    return subprocess.run(cmd, check=check, **kw)


def apt_install(*pkgs: str) -> None:
    missing = [p for p in pkgs if run(["dpkg-query", "-W", "-f=${Status}", p], check=False,
                                         capture_output=True, text=True).stdout != "install ok installed"]
    if not missing:
        return
    log(f"installing {' '.join(missing)}")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    lock = ["-o", "DPkg::Lock::Timeout=600"]
    if run(["apt-get", *lock, "install", "-y", "-qq", *missing], check=False, env=env,
           stdout=subprocess.DEVNULL).returncode != 0:
        run(["apt-get", *lock, "update", "-qq"], env=env)
        run(["apt-get", *lock, "install", "-y", "-qq", *missing], env=env, stdout=subprocess.DEVNULL)


def deb822_sources(suite: str = SUITE) -> str:
    """The machine's own Debian sources (never a hostname written in the repo), for SUITE."""
    path = Path("/etc/apt/sources.list.d/debian.sources")
    if not path.exists():
        path = Path("/etc/apt/sources.list")
    if not path.exists():
        raise SystemExit("no Debian apt sources on this machine: cannot build a test host")
    text = path.read_text()
    own = next((s for s in SUITES if re.search(rf"\b{s}\b", text)), suite)
    # bookworm, bookworm-updates, bookworm-security -> the same for the host's release.
    return re.sub(rf"\b{own}\b", suite, text)


def first_mirror() -> str:
    for line in deb822_sources().splitlines():
        line = line.strip()
        if line.startswith("URIs:"):
            return line.split()[1]
        if line.startswith("deb "):
            parts = [p for p in line.split() if not p.startswith("[")]
            return parts[1]
    raise SystemExit("could not find a Debian mirror URI in the apt sources")


def ssh_key() -> Path:
    key = CACHE / "id_ed25519"
    if not key.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "demolab-testhosts", "-f", str(key)])
    return key


def base_tarball(suite: str = SUITE) -> Path:
    """Build (once) and return the cached rootfs tarball of a Debian release."""
    if suite not in SUITES:
        raise SystemExit(f"test hosts run Debian {' or '.join(SUITES)}, not {suite!r}")
    key = hashlib.sha256((RECIPE_VERSION + suite + " ".join(BASE_PACKAGES)).encode()).hexdigest()[:12]
    tarball = CACHE / f"{suite}-base-{key}.tar.zst"
    if tarball.exists():
        return tarball
    apt_install("debootstrap", "systemd-container", "zstd", "openssh-client", "iproute2")
    pub = ssh_key().with_suffix(".pub").read_text()
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(dir=CACHE, prefix="rootfs-") as tmp:
        root = Path(tmp) / "root"
        log(f"debootstrap {suite} minbase into {root} (once; ~3-4 min)")
        run(["nice", "-n", "10", "debootstrap", "--variant=minbase",
             f"--include={','.join(BASE_PACKAGES)}", suite, str(root), first_mirror()],
            stdout=subprocess.DEVNULL)
        # Same sources as this machine (main + updates + security), not only "SUITE main".
        (root / "etc/apt/sources.list").write_text("")
        (root / "etc/apt/sources.list.d/debian.sources").write_text(deb822_sources(suite))
        ssh_dir = root / "root/.ssh"
        ssh_dir.mkdir(mode=0o700, exist_ok=True)
        (ssh_dir / "authorized_keys").write_text(pub)
        os.chmod(ssh_dir / "authorized_keys", 0o600)
        (root / "etc/machine-id").write_text("")  # a new machine-id on every boot
        for timer in (root / "etc/systemd/system/timers.target.wants").glob("apt-daily*.timer"):
            timer.unlink()
        # No getty on a console nobody reads; faster, quieter boots.
        (root / "etc/systemd/system/console-getty.service").symlink_to("/dev/null")
        for p in (root / "var/cache/apt/archives").glob("*.deb"):
            p.unlink()
        shutil.rmtree(root / "var/lib/apt/lists", ignore_errors=True)
        (root / "var/lib/apt/lists/partial").mkdir(parents=True)
        part = tarball.with_suffix(".part")
        tar = subprocess.Popen(["tar", "--numeric-owner", "--xattrs", "-C", str(root), "-c", "."],
                               stdout=subprocess.PIPE)
        run(["zstd", "-q", "-T0", "-3", "-f", "-o", str(part)], stdin=tar.stdout)
        if tar.wait() != 0:
            raise SystemExit("tar of the rootfs failed")
        part.rename(tarball)
    log(f"rootfs cached at {tarball} in {time.monotonic() - t0:.0f} s")
    return tarball


def base_dir(suite: str = SUITE) -> Path:
    tarball = base_tarball(suite)
    extracted = RUN / ("base-" + tarball.name.removesuffix(".tar.zst"))
    if not (extracted / "etc").is_dir():
        shutil.rmtree(extracted, ignore_errors=True)
        extracted.mkdir(parents=True)
        zstd = subprocess.Popen(["zstd", "-dc", str(tarball)], stdout=subprocess.PIPE)
        run(["tar", "--numeric-owner", "--xattrs", "-C", str(extracted), "-x"], stdin=zstd.stdout)
        zstd.wait()
    return extracted


def ensure_bridge() -> None:
    if run(["ip", "link", "show", BRIDGE], check=False, quiet=True).returncode == 0:
        return
    run(["ip", "link", "add", BRIDGE, "type", "bridge"])
    run(["ip", "addr", "add", f"{BRIDGE_IP}/24", "dev", BRIDGE])
    run(["ip", "link", "set", BRIDGE, "up"])


class ForwardProxy:
    """apt-cacher-ng on the bridge: caches .debs (fast reruns) and tunnels HTTPS (pip)."""

    def __init__(self) -> None:
        self.dir = CACHE / ("acng" if PROXY_PORT == 3142 else f"acng-{PROXY_PORT}")
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://{BRIDGE_IP}:{PROXY_PORT}"

    def start(self) -> None:
        if self.proc and self.proc.poll() is None:
            return
        apt_install("apt-cacher-ng")
        ensure_bridge()
        for sub in ("cache", "log", "conf"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        conf = self.dir / "conf"
        for f in Path("/etc/apt-cacher-ng").iterdir():
            if f.is_file() and not (conf / f.name).exists():
                shutil.copy(f, conf / f.name)
        # Fetch exactly the URL asked for (no remapping), and tunnel HTTPS for pip.
        (conf / "acng.conf").write_text(
            "CacheDir: {c}\nLogDir: {l}\nPassThroughPattern: .*\nExThreshold: 60\n".format(
                c=self.dir / "cache", l=self.dir / "log"))
        args = ["/usr/sbin/apt-cacher-ng", "-c", str(conf), "ForeGround=1",
                f"BindAddress={BRIDGE_IP}", f"Port={PROXY_PORT}",
                f"PidFile={RUN / f'acng-{PROXY_PORT}.pid'}", f"SocketPath={RUN / f'acng-{PROXY_PORT}.sock'}"]
        RUN.mkdir(parents=True, exist_ok=True)
        out = open(RUN / f"acng-{PROXY_PORT}.out", "ab")
        self.proc = subprocess.Popen(args, stdout=out, stderr=out, stdin=subprocess.DEVNULL,
                                     start_new_session=True)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"the forward proxy exited: see {RUN / f'acng-{PROXY_PORT}.out'}")
            if run(["bash", "-c", f"exec 3<>/dev/tcp/{BRIDGE_IP}/{PROXY_PORT}"], check=False,
                   quiet=True).returncode == 0:
                log(f"forward proxy (online) at {self.url}")
                return
            time.sleep(0.2)
        raise SystemExit("the forward proxy did not listen within 15 s")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            log("forward proxy stopped: the hosts are offline")
        self.proc = None


class Host:
    def __init__(self, name: str, index: int, extra_ips: list[str] | None = None,
                 suite: str = SUITE) -> None:
        if not 2 <= index <= 254:
            raise ValueError("host index must be 2..254")
        self.name, self.index, self.suite = name, index, suite
        self.ip = f"{NET_PREFIX}.{index}"
        # More addresses on the same interface, set before boot (e.g. the audience's network).
        self.extra_ips = list(extra_ips or [])
        self.dir = RUN / "hosts" / name
        self.root = self.dir / "root"
        self.proc: subprocess.Popen | None = None

    @property
    def ssh_args(self) -> list[str]:
        return ["ssh", "-i", str(ssh_key()), "-o", "StrictHostKeyChecking=no", "-o",
                "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR", "-o", "ConnectTimeout=2",
                "-o", "BatchMode=yes", f"root@{self.ip}"]

    def up(self, timeout: float = 90) -> None:
        self.down()  # a leftover from a killed run
        ensure_bridge()
        lower = base_dir(self.suite)
        for sub in ("upper", "work", "root"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        run(["mount", "-t", "overlay", "overlay", "-o",
             f"lowerdir={lower},upperdir={self.dir / 'upper'},workdir={self.dir / 'work'}",
             str(self.root)])
        (self.root / "etc/hostname").write_text(self.name + "\n")
        self._trust_local_cas()
        hosts = self.root / "etc/hosts"
        hosts.write_text(f"127.0.0.1\tlocalhost\n127.0.1.1\t{self.name}\n::1\tlocalhost ip6-localhost\n")
        run(["ip", "netns", "add", self.name])
        # A fixed MAC per address: a re-created host must not meet a stale ARP entry.
        mac = f"02:00:0a:4d:00:{self.index:02x}"
        run(["ip", "link", "add", f"vh-{self.name}", "type", "veth", "peer", "name", "eth0",
             "address", mac, "netns", self.name])
        run(["ip", "link", "set", f"vh-{self.name}", "master", BRIDGE, "up"])
        ns = ["ip", "netns", "exec", self.name]
        run([*ns, "ip", "link", "set", "lo", "up"])
        run([*ns, "ip", "addr", "add", f"{self.ip}/24", "dev", "eth0"])  # no default route
        for extra in self.extra_ips:
            run([*ns, "ip", "addr", "add", f"{extra}/24", "dev", "eth0"])
        run([*ns, "ip", "link", "set", "eth0", "up"])
        console = open(self.dir / "console.log", "ab")
        self.proc = subprocess.Popen(
            ["systemd-nspawn", "-b", "-D", str(self.root), "-M", self.name, "--register=no",
             "--keep-unit", f"--network-namespace-path=/run/netns/{self.name}",
             "--console=read-only"],
            stdout=console, stderr=console, stdin=subprocess.DEVNULL, start_new_session=True)
        (self.dir / "nspawn.pid").write_text(str(self.proc.pid))
        t0 = time.monotonic()
        while True:
            if self.proc.poll() is not None:
                raise SystemExit(f"{self.name}: systemd-nspawn exited; see {self.dir / 'console.log'}")
            if run([*self.ssh_args, "true"], check=False, quiet=True).returncode == 0:
                break
            if time.monotonic() - t0 > timeout:
                raise SystemExit(f"{self.name}: no ssh after {timeout:.0f} s; see {self.dir / 'console.log'}")
            time.sleep(0.3)
        run([*self.ssh_args, "timeout", "60", "systemctl", "is-system-running", "--wait"],
            check=False, quiet=True)
        log(f"{self.name} up at {self.ip} in {time.monotonic() - t0:.1f} s")

    def _trust_local_cas(self) -> None:
        """Trust the CAs this machine added itself (e.g. a TLS-inspecting egress proxy).

        The host reaches the registries only through this machine, so it must accept what
        this machine accepts; written into the overlay, never into the cached base.
        """
        extra = sorted(Path("/usr/local/share/ca-certificates").glob("**/*.crt"))
        if not extra:
            return
        bundle = self.root / "etc/ssl/certs/ca-certificates.crt"
        text = bundle.read_text() if bundle.exists() else ""
        bundle.write_text(text + "".join(c.read_text() for c in extra))

    def sh(self, command: str, check: bool = True) -> subprocess.CompletedProcess:
        return run([*self.ssh_args, command], check=check, capture_output=True, text=True)

    def down(self) -> None:
        pidfile = self.dir / "nspawn.pid"
        pid = None
        if self.proc is not None:
            pid = self.proc.pid
        elif pidfile.exists():
            with contextlib.suppress(ValueError):
                pid = int(pidfile.read_text())
        if pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)  # nspawn -b turns this into a clean poweroff
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and _alive(pid, self.proc):
                time.sleep(0.2)
            if _alive(pid, self.proc):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGKILL)
                time.sleep(0.5)
            if self.proc is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.proc.wait(5)
        self.proc = None
        run(["ip", "netns", "del", self.name], check=False, quiet=True)
        run(["ip", "link", "del", f"vh-{self.name}"], check=False, quiet=True)
        run(["ip", "neigh", "flush", "dev", BRIDGE], check=False, quiet=True)
        if self.root.exists():
            run(["umount", "-l", str(self.root)], check=False, quiet=True)
        shutil.rmtree(self.dir, ignore_errors=True)
        shutil.rmtree(Path("/run/systemd/nspawn/propagate") / self.name, ignore_errors=True)


def _alive(pid: int, proc: subprocess.Popen | None) -> bool:
    if proc is not None:
        return proc.poll() is None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


class LabHosts:
    """Boot hosts and the forward proxy; always tear them down."""

    def __init__(self, names: list[str], first_index: int = 11,
                 extra_ips: dict[str, list[str]] | None = None, suite: str = SUITE) -> None:
        """extra_ips: more addresses of a host (by name) on its lab-network interface."""
        self.hosts = [Host(n, first_index + i, (extra_ips or {}).get(n), suite) for i, n in enumerate(names)]
        self.first_index = first_index
        self.proxy = ForwardProxy()
        self._old_handlers: dict[int, object] = {}

    def __enter__(self) -> LabHosts:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            self._old_handlers[sig] = signal.signal(sig, self._on_signal)
        try:
            self.proxy.start()
            for h in self.hosts:
                h.up()
        except BaseException:
            self.close()
            raise
        return self

    def _on_signal(self, signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for h in self.hosts:
            try:
                h.down()
            except Exception as e:  # keep tearing down the rest
                log(f"teardown of {h.name}: {e}")
        self.proxy.stop()
        for sig, handler in self._old_handlers.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]

    def finish(self, keep: bool, inventory: Path, timings: list[tuple[str, float]],
               started: float | None = None) -> None:
        """End of a suite: tear down (or say where the kept hosts are), then print the timings."""
        if keep:
            print(f"--keep: hosts left running; inventory {inventory}")
        else:
            t = time.monotonic()
            self.close()
            timings.append(("teardown", time.monotonic() - t))
        width = max([len(name) for name, _ in timings] + [5])
        print("\ntimings:")
        for name, secs in timings:
            print(f"  {name:<{width}} {secs:7.1f} s")
        if started is not None:
            print(f"  {'total':<{width}} {time.monotonic() - started:7.1f} s")

    def add(self, name: str, suite: str = SUITE) -> Host:
        """Boot one more host now (torn down with the others)."""
        host = Host(name, max((h.index + 1 for h in self.hosts), default=self.first_index), suite=suite)
        self.hosts.append(host)
        host.up()
        return host

    def inventory(self, path: Path, groups: tuple[str, ...] = ("lab", "presenter"),
                  hosts: list[Host] | None = None, host_vars: dict[str, dict[str, str]] | None = None) -> Path:
        key = ssh_key()
        lines = []
        for g in groups:
            lines.append(f"[{g}]")
            for h in hosts or self.hosts:
                more = "".join(f" {k}={v}" for k, v in (host_vars or {}).get(h.name, {}).items())
                lines.append(f"{h.name} ansible_host={h.ip}{more}")
            lines.append("")
        lines += [
            "[all:vars]",
            "ansible_user=root",
            f"ansible_ssh_private_key_file={key}",
            "ansible_ssh_common_args='-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null "
            "-o ConnectTimeout=5'",
            # A test host's key is new at every boot; Mitogen's SSH checks keys on its own
            # unless told, as Ansible's is here.
            "ansible_host_key_checking=false",
            "ansible_python_interpreter=/usr/bin/python3",
            f"lab_upstream_proxy={self.proxy.url}",
        ]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(lines) + "\n")
        return path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    base = sub.add_parser("base", help="build the cached rootfs if missing")
    base.add_argument("--suite", default=SUITE, choices=SUITES)
    up = sub.add_parser("up", help="boot a host (leaves it running)")
    up.add_argument("name")
    up.add_argument("index", type=int)
    up.add_argument("--suite", default=SUITE, choices=SUITES)
    down = sub.add_parser("down", help="power a host off and remove it")
    down.add_argument("name")
    a = p.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("the test-host harness needs root (namespaces, mounts, nspawn)")
    if a.cmd == "base":
        print(base_tarball(a.suite))
    elif a.cmd == "up":
        Host(a.name, a.index, suite=a.suite).up()
    elif a.cmd == "down":
        Host(a.name, 2).down()  # the index only matters for booting


if __name__ == "__main__":
    main()
