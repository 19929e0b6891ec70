#!/usr/bin/python3
"""Give the laptop back: undo everything `make lab` did on this host (playbooks/remove.yml).

    demolab-remove.py SETTINGS [--check]

SETTINGS, base64 of a JSON object (from the lab role's variables): etc_dir, state_dir, store_dir, prefix, log_dir,
originals_dir, keep (directories kept unless purge), purge, packages.

In order: stop and remove every lab service (ready.d, systemd units, supervisord programs) and
end what is left of the lab's processes; restore every original the lab kept before its first
change (lab/tasks/original.yml: a byte-exact copy with owner and mode, or deleted when the file
did not exist); take the lab's marked blocks out of shell and editor init files it has no
original of; remove the lab's programs, configuration, venvs and state, purge the Debian
packages that were not installed before the lab's first run, delete the system users the lab
created; keep the store (mirrors, recordings) unless purge. --check only reports what it would
do. Prints one JSON object: changed, ok, and report lines (readiness-style: OK/FAIL).
"""

from __future__ import annotations

import base64
import glob
import json
import os
import pwd
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

# The lab's blockinfile markers (roles/presenter_kit) contain this; nothing else does.
MARKER = "DEMOLAB PRESENTER KIT"
# Init files the lab may have marked blocks in, relative to a home directory.
INIT_FILES = [".bashrc", ".emacs", ".emacs.el", ".emacs.d/init.el", ".config/emacs/init.el", ".xbindkeysrc"]
# What the lab adds to a home directory besides marked blocks (roles/presenter_kit), and its
# directories, removed when empty (~/.config/demolab/secrets also holds the controller's secrets).
HOME_PATHS = [".config/demolab/presenter.sh", ".config/demolab/events.yml", ".config/demolab/secrets/redis",
              ".config/demolab/emacs", ".config/autostart/demolab-xbindkeys.desktop"]
HOME_DIRS = [".config/demolab/secrets", ".config/demolab"]
# The lab's programs and the files it writes outside its own directories (names, not contents).
GLOBS = [
    "/usr/local/bin/demolab-*", "/usr/local/bin/lab-*", "/usr/local/sbin/demolab-*", "/usr/local/sbin/lab-*",
    "/usr/local/lib/demolab", "/usr/local/libexec/demolab", "/etc/profile.d/demolab-*",
    "/etc/apt/apt.conf.d/*demolab*", "/var/tmp/demolab-ffmpeg-build", "/var/tmp/demolab-bundle",
]
CA_GLOB = "/usr/local/share/ca-certificates/demolab*.crt"


class Plan:
    def __init__(self, check: bool) -> None:
        self.check = check
        self.changed = False
        self.lines: list[str] = []
        self.problems: list[str] = []

    def do(self, what: str, action) -> None:
        """One change: reported as done (or as to be done in check mode)."""
        self.changed = True
        if not self.check:
            try:
                action()
            except (OSError, subprocess.CalledProcessError) as e:
                self.problems.append(f"{what}: {e}")
                return
        self.lines.append(f"OK   {'would remove' if self.check else 'removed'}: {what}")


def run(*argv: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(argv, check=check, capture_output=True, text=True,
                          env={**os.environ, "DEBIAN_FRONTEND": "noninteractive", "LC_ALL": "C"})


def rm(path: str) -> None:
    p = Path(path)
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p)
    elif p.exists() or p.is_symlink():
        p.unlink()


def exists(path: str | Path) -> bool:
    return os.path.lexists(path)


def systemd() -> bool:
    return Path("/run/systemd/system").is_dir()


def services(etc: Path) -> list[str]:
    names = {p.stem for p in (etc / "ready.d").glob("*.json")}
    names |= {Path(p).name.removesuffix(".service") for p in glob.glob("/etc/systemd/system/demolab-*.service")}
    names |= {Path(p).stem for p in glob.glob("/etc/supervisor/conf.d/demolab-*.conf")}
    return sorted(names)


def stop_services(plan: Plan, etc: Path) -> None:
    names = services(etc)
    if systemd():
        units = [n for n in names if exists(f"/etc/systemd/system/{n}.service")]
        for n in units:
            def stop(n: str = n) -> None:
                run("systemctl", "disable", "--now", f"{n}.service", check=False)
                rm(f"/etc/systemd/system/{n}.service")
            plan.do(f"service {n} (systemd unit, stopped)", stop)
        if units and not plan.check:
            run("systemctl", "daemon-reload", check=False)
            run("systemctl", "reset-failed", check=False)
    programs = [n for n in names if exists(f"/etc/supervisor/conf.d/{n}.conf")]
    for n in programs:
        def drop(n: str = n) -> None:
            run("supervisorctl", "stop", n, check=False)
            rm(f"/etc/supervisor/conf.d/{n}.conf")
        plan.do(f"service {n} (supervisord program, stopped)", drop)
    if programs and not plan.check:
        run("supervisorctl", "update", check=False)


def lab_users() -> list[pwd.struct_passwd]:
    return [u for u in pwd.getpwall() if u.pw_name.startswith("demolab-")]


def new_system_users(originals: Path) -> list[str]:
    """System users (uid < 1000) that appeared since the lab's first run (packages' users)."""
    before = originals / "users.before"
    if not before.exists():
        return []
    had = set(before.read_text().split())
    return sorted(u.pw_name for u in pwd.getpwall()
                  if u.pw_name not in had and 0 < u.pw_uid < 1000 and not u.pw_name.startswith("demolab-"))


def end_processes(plan: Plan) -> None:
    """What the services left running as the lab's users (a stray worker, a shell)."""
    uids = {u.pw_uid for u in lab_users()}
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if proc.stat().st_uid in uids:
                    pids.append(int(proc.name))
            except OSError:
                continue
    if plan.check:
        return  # (the services above would have ended them)
    for pid in pids:
        plan.do(f"process {pid} (a lab user's)", lambda pid=pid: os.kill(pid, signal.SIGKILL))
    deadline = time.monotonic() + 10
    while pids and time.monotonic() < deadline and any(Path(f"/proc/{p}").exists() for p in pids):
        time.sleep(0.2)


def restore_originals(plan: Plan, originals: Path) -> set[str]:
    """Every recorded original back (or its file gone); returns the paths handled."""
    done = set()
    for record in sorted(originals.glob("*.path")):
        path = record.read_text().rstrip("\n")
        done.add(path)
        copy = record.with_suffix(".orig")
        if copy.exists() or copy.is_symlink():
            def back(path: str = path, copy: Path = copy, record: Path = record) -> None:
                rm(path)
                Path(path).parent.mkdir(parents=True, exist_ok=True)
                run("cp", "-a", "--", str(copy), path)
                rm(str(copy))
                record.unlink()
            plan.do(f"the lab's {path}: the original is back", back)
        elif exists(path):
            def gone(path: str = path, record: Path = record) -> None:
                rm(path)
                record.unlink()
            plan.do(f"{path} (not there before the lab)", gone)
        else:
            plan.do(f"record of {path}", record.unlink)
    return done


def homes() -> list[Path]:
    return [Path("/root"), *sorted(Path("/home").glob("*"))]


def strip_blocks(plan: Plan, restored: set[str]) -> None:
    """Marked blocks left in init files the lab kept no original of (a lab from before originals)."""
    for home in homes():
        for name in INIT_FILES:
            f = home / name
            if not f.is_file() or f.is_symlink() or str(f) in restored:
                continue
            text = f.read_text(errors="surrogateescape")
            if MARKER not in text:
                continue
            out, inside = [], False
            for line in text.splitlines(keepends=True):
                if MARKER in line:
                    inside = "BEGIN" in line
                    continue
                if not inside:
                    out.append(line)

            def write(f: Path = f, body: str = "".join(out)) -> None:
                st = f.stat()
                tmp = f.with_name(f.name + ".demolab-tmp")
                tmp.write_text(body, errors="surrogateescape")
                os.chown(tmp, st.st_uid, st.st_gid)
                os.chmod(tmp, st.st_mode & 0o7777)
                tmp.replace(f)
            plan.do(f"the lab's block in {f}", write)
        for name in HOME_PATHS:
            if exists(home / name) and str(home / name) not in restored:
                plan.do(str(home / name), lambda p=str(home / name): rm(p))
        for name in HOME_DIRS:
            d = home / name
            if not d.is_dir() or d.is_symlink():
                continue
            # (In check mode what would be removed before counts as gone.)
            left = [c for c in d.iterdir()
                    if not (plan.check and (str(c.relative_to(home)) in HOME_PATHS + HOME_DIRS
                                            or str(c) in restored))]
            if not left:
                plan.do(f"{d} (empty)", d.rmdir)


def remove_files(plan: Plan, s: dict) -> None:
    for pattern in GLOBS:
        for path in sorted(glob.glob(pattern)):
            plan.do(path, lambda p=path: rm(p))
    certs = sorted(glob.glob(CA_GLOB))
    for path in certs:
        plan.do(f"{path} (the lab CA, from the trust store)", lambda p=path: rm(p))
    if certs and not plan.check:
        run("update-ca-certificates", "--fresh")
    for d in (s["etc_dir"], s["prefix"], s["log_dir"]):
        if exists(d):
            plan.do(d, lambda p=d: rm(p))


def installed_packages() -> set[str]:
    out = run("dpkg-query", "-W", "-f=${db:Status-Status} ${binary:Package}\n").stdout
    return {line.split()[1] for line in out.splitlines() if line.startswith("installed ")}


APT = ("apt-get", "-y", "-q", "-o", "DPkg::Lock::Timeout=600")


def would_purge(packages: list[str]) -> set[str]:
    """What apt would take away with these (apt-get --simulate): they and what depends on them."""
    out = run(*APT, "--simulate", "purge", *packages, check=False).stdout
    return {line.split()[1] for line in out.splitlines() if line.startswith(("Purg ", "Remv "))}


def purge_packages(plan: Plan, originals: Path, s: dict) -> None:
    """The Debian packages not installed before the lab's first run. One that something installed
    before now depends on (an upgrade pulled it in) stays: nothing from before is taken away."""
    before = originals / "packages.before"
    if not s["packages"] or not before.exists():
        return
    had = set(before.read_text().split())
    had |= {p.split(":")[0] for p in had}
    new = sorted(p for p in installed_packages() if p not in had and p.split(":")[0] not in had)
    if not new:
        return
    if would_purge(new) - set(new) - {p.split(":")[0] for p in new}:
        new = [p for p in new if not (would_purge([p]) & had)]
    if new:
        plan.do(f"{len(new)} Debian packages the lab installed: {' '.join(new)}",
                lambda: run(*APT, "purge", *new))


def remove_users(plan: Plan, originals: Path, s: dict) -> None:
    """The lab's demolab-* users and groups; with the packages purged, the system users that
    appeared since the lab's first run (a purged package's, e.g. redis)."""
    users = {u.pw_name for u in lab_users()} | (set(new_system_users(originals)) if s["packages"] else set())
    for name in sorted(users):
        plan.do(f"user {name}", lambda n=name: run("userdel", n))
    for name in sorted(g for g in (line.split(":")[0] for line in Path("/etc/group").read_text().splitlines())
                       if g.startswith("demolab-")):
        plan.do(f"group {name}", lambda n=name: run("groupdel", n))


def remove_state(plan: Plan, s: dict) -> list[str]:
    """Everything under the state directory except what is kept; returns the kept lines."""
    state = Path(s["state_dir"])
    keep = [] if s["purge"] else [Path(k) for k in s["keep"]]
    if state.is_dir():
        for child in sorted(state.iterdir()):
            if not any(child == k or k.is_relative_to(child) for k in keep):
                plan.do(str(child) + (" (purge)" if s["purge"] and str(child) in s["keep"] else ""),
                        lambda p=str(child): rm(p))
    if s["purge"]:
        for k in s["keep"]:
            if exists(k) and not Path(k).is_relative_to(state):
                plan.do(f"{k} (purge)", lambda p=k: rm(p))
    kept = [f"OK   kept: {k} ({size(k)}; PURGE=1 removes it)" for k in keep if exists(k)]
    if exists(state) and not kept:
        plan.do(str(state), lambda: rm(str(state)))
    return kept


def size(path: Path) -> str:
    total = sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())
    return f"{total / 2**20:.0f} MiB"


def leftovers(s: dict, ports: list[int]) -> list[str]:
    """What would show the lab is still here: a unit, a process, a user, a port."""
    left = [f"unit {p}" for p in glob.glob("/etc/systemd/system/demolab-*.service")]
    left += [f"program {p}" for p in glob.glob("/etc/supervisor/conf.d/demolab-*.conf")]
    left += [f"user {u.pw_name}" for u in lab_users()]
    mine = ancestors()
    for proc in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            cmd = proc.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if any(d in cmd for d in (s["prefix"], s["etc_dir"] + "/")) and int(proc.parent.name) not in mine:
            left.append(f"process {proc.parent.name}: {cmd[:80]}")
    listening = run("ss", "-Hltn", check=False).stdout if shutil.which("ss") else ""
    for port in ports:
        if any(line.split()[3].endswith(f":{port}") for line in listening.splitlines() if len(line.split()) > 3):
            left.append(f"listening port {port}")
    return left


def ancestors() -> set[int]:
    """This process and those that started it (their command lines carry the settings)."""
    pids, pid = set(), os.getpid()
    while pid > 1:
        pids.add(pid)
        try:
            pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            break
    return pids


def registered_ports(etc: Path) -> list[int]:
    ports = []
    for p in (etc / "ready.d").glob("*.json"):
        try:
            ports.append(int(json.loads(p.read_text()).get("port") or 0))
        except (ValueError, OSError):
            continue
    return [p for p in ports if p]


def main() -> int:
    s = json.loads(base64.b64decode(sys.argv[1]))
    check = "--check" in sys.argv[2:]
    plan = Plan(check)
    etc, originals = Path(s["etc_dir"]), Path(s["originals_dir"])
    ports = registered_ports(etc)
    stop_services(plan, etc)
    end_processes(plan)
    strip_blocks(plan, restore_originals(plan, originals))
    remove_files(plan, s)
    # Before the records go with the state directory.
    purge_packages(plan, originals, s)
    remove_users(plan, originals, s)
    kept = remove_state(plan, s)
    if plan.changed and not check and systemd():
        run("systemctl", "daemon-reload", check=False)
    left = [] if check else leftovers(s, ports)
    lines = plan.lines + kept + [f"FAIL left: {x}" for x in left] + [f"FAIL {p}" for p in plan.problems]
    if not plan.lines:
        lines.insert(0, "OK   nothing of the lab left to remove")
    ok = not left and not plan.problems
    summary = ("the lab is removed" if ok else "the lab is NOT fully removed: see the FAIL lines")
    if check:
        summary = "check mode: nothing was changed"
    json.dump({"changed": plan.changed, "ok": ok, "lines": lines + [summary]}, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
