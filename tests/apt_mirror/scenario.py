"""apt_mirror on real hosts: A fills and serves the mirror online, B installs from it offline.

    python3 tests/apt_mirror/scenario.py [--keep] [--packages redis-server ...]

Boots two fresh Debian 12 hosts (aptm1 = 10.77.0.51, aptm2 = 10.77.0.52; forward proxy on
port DEMOLAB_PROXY_PORT, 3144 by default here), then:

  A  converge (fill from mirror/apt-packages.txt, or --packages), idempotence (changed=0, the
     resolution reused, apt's lists not refreshed again within the hour),
     check mode (changed=0), a package that does not exist (fails, named), a full disk
     (fails clearly, no index written); A serves the repo on its bridge address.
  -- the forward proxy is stopped: nothing can go out any more --
  B  converge offline (apt_mirror client + lab + redis roles from the mirror alone),
     idempotence, `apt-get install` of mirrored packages, a package not in the mirror fails
     fast and names itself, apt's only source is A.
  -- proxy back --
  B  lab_mode=online undoes the switch (the machine's own sources come back).

Prints PASS/FAIL per check and the timings; exit 1 if any check failed.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("DEMOLAB_PROXY_PORT", "3144")
HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path.insert(0, str(REPO / "tests" / "harness"))

import labhosts  # noqa: E402
from recap import changed_counts, changed_tasks  # noqa: E402

VENV_BIN = REPO / ".venv" / "bin"
PORT = 3180
REPO_URL_PATH = "/apt"  # A's file server serves its whole store; the repository is at /apt/
# The URLs of apt's sources as apt itself sees them.
SOURCES = "apt-cache policy | grep -oE '(https?://|file:/)[^ ]+' | sort -u"


class Checks:
    def __init__(self) -> None:
        self.results: list[tuple[str, bool, str]] = []
        self.timings: list[tuple[str, float]] = []

    def check(self, name: str, ok: bool, detail: str = "") -> bool:
        self.results.append((name, ok, detail))
        print(f"{'PASS' if ok else 'FAIL'}  {name}" + (f"\n      {detail}" if detail and not ok else ""),
              flush=True)
        return ok


def playbook(work: Path, inventory: Path, name: str, *extra: str, log: str) -> tuple[int, str, float]:
    env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), ANSIBLE_NOCOLOR="1",
               ANSIBLE_FORCE_COLOR="0", PATH=f"{VENV_BIN}:{os.environ.get('PATH', '')}",
               ANSIBLE_ROLES_PATH=str(REPO / "roles"))
    cmd = [str(VENV_BIN / "ansible-playbook"), "-i", str(inventory), str(HERE / name),
           "-e", f"lab_secrets_dir={work / 'secrets'}", *extra]
    print("$ " + " ".join(cmd), flush=True)
    t = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO)
    out = proc.stdout + proc.stderr
    (work / log).write_text(out)
    return proc.returncode, out, time.monotonic() - t


def tail(out: str, n: int = 40) -> str:
    return "\n      ".join(out.splitlines()[-n:])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--keep", action="store_true", help="leave the hosts running")
    ap.add_argument("--packages", nargs="*", default=None,
                    help="mirror these instead of mirror/apt-packages.txt (e.g. redis-server)")
    ap.add_argument("--workdir", default=str(REPO / ".run" / "apt_mirror"))
    a = ap.parse_args()
    work = Path(a.workdir)
    work.mkdir(parents=True, exist_ok=True)
    inventory = work / "inventory.ini"
    c = Checks()
    pkg_args = ["-e", json.dumps({"apt_mirror_packages": a.packages})] if a.packages else []

    lab = labhosts.LabHosts(["aptm1", "aptm2"], first_index=51)
    t0 = time.monotonic()
    try:
        lab.__enter__()
        A, B = lab.hosts
        lab.inventory(inventory, groups=())
        inventory.write_text(f"[mirror]\n{A.name} ansible_host={A.ip}\n\n[client]\n{B.name} "
                             f"ansible_host={B.ip}\n\n" + inventory.read_text())
        c.timings.append(("boot", time.monotonic() - t0))

        # --- A: online, fill and serve ----------------------------------------------------
        rc, out, secs = playbook(work, inventory, "mirror.yml", *pkg_args, log="a-converge.log")
        c.timings.append(("A converge (fill)", secs))
        if not c.check("A: converge fills and serves the mirror", rc == 0, tail(out)):
            raise SystemExit(1)
        fill = re.search(r"(\d+ packages \([\d.]+ MiB\) in \S+)", out)
        print(f"      {fill[1] if fill else '?'}")

        rc, out, secs = playbook(work, inventory, "mirror.yml", *pkg_args, log="a-idempotence.log")
        c.timings.append(("A idempotence", secs))
        c.check("A: second run changed=0", rc == 0 and changed_counts(out).get(A.name) == 0,
                f"rc={rc} recap={changed_counts(out)} changed: {'; '.join(changed_tasks(out))}")
        c.check("A: the second run reuses the resolution (inputs unchanged, lists fresh)",
                "last resolution reused (same inputs)" in out and "package lists refreshed" not in out,
                tail(out, 15))

        rc, out, secs = playbook(work, inventory, "mirror.yml", *pkg_args, "--check", "--diff",
                                 log="a-check.log")
        c.timings.append(("A check mode", secs))
        c.check("A: check mode changed=0", rc == 0 and changed_counts(out).get(A.name) == 0,
                f"rc={rc} recap={changed_counts(out)} changed: {'; '.join(changed_tasks(out))}")

        before = A.sh("stat -c %Y /var/lib/demolab/mirror/apt/Packages.gz").stdout
        rc, out, _ = playbook(work, inventory, "mirror.yml", *pkg_args, "-e",
                              '{"apt_mirror_extra_packages": ["demolab-no-such-package"]}',
                              log="a-bad-package.log")
        after = A.sh("stat -c %Y /var/lib/demolab/mirror/apt/Packages.gz").stdout
        c.check("A: an unknown package fails and is named, the index untouched",
                rc != 0 and "demolab-no-such-package" in out and before == after, tail(out, 15))

        if A.sh("mkdir -p /mnt/tiny && mount -t tmpfs -o size=4m tmpfs /mnt/tiny", check=False).returncode == 0:
            rc, out, _ = playbook(work, inventory, "mirror.yml", *pkg_args, "-e",
                                  "apt_mirror_dir=/mnt/tiny/apt", "--tags", "apt_mirror_configure",
                                  log="a-disk-full.log")
            left = A.sh("ls -A /mnt/tiny/apt", check=False).stdout.split()
            c.check("A: a full disk fails with a clear message and writes no index",
                    rc != 0 and "not enough disk space" in out
                    and not any(f in left for f in ("Packages", "Packages.gz", "Release")),
                    f"rc={rc} left={left}\n      {tail(out, 15)}")
            A.sh("umount /mnt/tiny", check=False)
        else:
            c.check("A: a full disk (tmpfs) fails clearly", False, "could not mount a tmpfs on A")

        url = f"http://{A.ip}:{PORT}{REPO_URL_PATH}/Release"
        r = B.sh(f"python3 -c \"import urllib.request as u; print(u.urlopen('{url}', timeout=5).status)\"",
                 check=False)
        c.check("B reaches A's mirror over the lab network", r.stdout.strip() == "200", r.stderr[-300:])
        r = A.sh("ps -o user= -C python3 | sort -u; stat -c '%U %a' /var/lib/demolab/mirror/apt", check=False)
        c.check("A: the server runs as its own user, the directory is root-owned",
                "demolab-apt" in r.stdout and "root 755" in r.stdout, r.stdout)

        # --- offline: nothing goes out any more ----------------------------------------------
        lab.proxy.stop()
        rc, out, secs = playbook(work, inventory, "client.yml", log="b-converge.log")
        c.timings.append(("B converge offline", secs))
        c.check("B: offline converge (apt_mirror client, lab, redis) from the mirror alone",
                rc == 0, tail(out))
        rc, out, secs = playbook(work, inventory, "client.yml", log="b-idempotence.log")
        c.check("B: second offline run changed=0", rc == 0 and changed_counts(out).get(B.name) == 0,
                f"rc={rc} recap={changed_counts(out)} changed: {'; '.join(changed_tasks(out))}")

        r = B.sh(SOURCES, check=False)
        sites = set(r.stdout.split())
        c.check("B: A's mirror is apt's only source", sites == {f"http://{A.ip}:{PORT}{REPO_URL_PATH}"},
                f"sites={sites} {r.stderr[-300:]}")
        r = B.sh("systemctl is-active demolab-redis; dpkg-query -W -f='${Status}' redis-server", check=False)
        c.check("B: redis-server installed offline and demolab-redis active",
                "active" in r.stdout and "install ok installed" in r.stdout, r.stdout + r.stderr)
        t = time.monotonic()
        r = B.sh("DEBIAN_FRONTEND=noninteractive apt-get install -y -q dpkg-dev python3-venv", check=False)
        c.timings.append(("B apt-get install offline", time.monotonic() - t))
        c.check("B: apt-get install dpkg-dev python3-venv from the mirror", r.returncode == 0,
                (r.stdout + r.stderr)[-1500:])
        t = time.monotonic()
        r = B.sh("DEBIAN_FRONTEND=noninteractive apt-get install -y -q cowsay", check=False)
        secs = time.monotonic() - t
        c.check("B: a package not in the mirror fails fast and is named",
                r.returncode != 0 and "Unable to locate package cowsay" in r.stderr and secs < 30,
                f"rc={r.returncode} {secs:.1f}s {r.stderr[-400:]}")

        # The mirror host itself at the venue (the presenter's laptop): no fill, its own mirror
        # is its only source, and it still reinstalls from it.
        rc, out, secs = playbook(work, inventory, "mirror.yml", "-e", "lab_mode=offline",
                                 log="a-offline.log")
        c.timings.append(("A converge offline", secs))
        r = A.sh(SOURCES + " && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --reinstall redis-server",
                 check=False)
        # It reads its own store as files (apt works before the mirror's service runs).
        sites = {s for s in r.stdout.split() if s.startswith(("http", "file:"))}
        c.check("A: offline, its own mirror is its only source and it reinstalls from it",
                rc == 0 and r.returncode == 0 and sites == {"file:/var/lib/demolab/mirror/apt"},
                f"rc={rc} sites={sites} {r.stderr[-400:]}\n      {tail(out, 15)}")

        # --- back online: the switch is undone ----------------------------------------------
        lab.proxy.start()
        rc, out, _ = playbook(work, inventory, "client.yml", "-e", "lab_mode=online",
                              log="b-online.log")
        r = B.sh("test ! -e /etc/apt/apt.conf.d/50demolab-apt-mirror && " + SOURCES, check=False)
        sites = set(r.stdout.split())
        c.check("B: lab_mode=online gives apt its own sources back",
                rc == 0 and r.returncode == 0 and f"http://{A.ip}:{PORT}{REPO_URL_PATH}" not in sites and sites,
                f"rc={rc} sites={sites}\n      {tail(out, 15)}")
    finally:
        lab.finish(a.keep, inventory, c.timings, started=t0)
    failed = [n for n, ok, _ in c.results if not ok]
    print(f"\n{len(c.results) - len(failed)}/{len(c.results)} checks passed")
    if failed:
        print("FAILED: " + "; ".join(failed))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
