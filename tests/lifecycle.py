"""converge -> idempotence -> check mode -> verify -> the venue, on brand-new systemd hosts.

    python3 tests/lifecycle.py [--hosts lab1] [--first-index 11] [--no-offline] [--keep]

Boots fresh Debian 12 hosts (systemd as PID 1, no default route; their only way out is
the harness's forward proxy), runs playbooks/site.yml on them, runs it again and fails
unless it reports changed=0, runs it once more in check mode (changed=0 too), then runs
the testinfra suite against the inventory.  Then the venue: the forward proxy stops (no way
out at all), site.yml runs again with lab_mode=offline, from the lab's own mirrors only, and
the suite runs once more.  Prints how long each phase took.  The hosts
are always torn down (also on failure and Ctrl-C) unless --keep is given.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests" / "harness"))

import labhosts  # noqa: E402

VENV_BIN = REPO / ".venv" / "bin"
RECAP = re.compile(r"^(\S+)\s*:\s*ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.M)


def ansible_env(secrets: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), ANSIBLE_FORCE_COLOR="0",
               ANSIBLE_NOCOLOR="1", DEMOLAB_SECRETS_DIR=str(secrets),
               PATH=f"{VENV_BIN}:{env.get('PATH', '')}")
    return env


# The lab FFmpeg built by the media suite (or an earlier run): installed, not rebuilt, on the
# fresh hosts. An empty cache makes the role build it on the host (slow, but the same path).
FFMPEG_CACHE = Path(os.environ.get("DEMOLAB_FFMPEG_CACHE", "/var/cache/demolab/ffmpeg"))
FFMPEG_ARTIFACTS = ["-e", f"ffmpeg_artifact_source_dir={FFMPEG_CACHE}"]


def playbook(inventory: Path, secrets: Path, *extra: str, log: Path) -> tuple[int, str]:
    cmd = [str(VENV_BIN / "ansible-playbook"), "-i", str(inventory), str(REPO / "playbooks/site.yml"),
           "-e", f"lab_secrets_dir={secrets}", *FFMPEG_ARTIFACTS, *extra]
    print("$ " + " ".join(cmd), flush=True)
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                env=ansible_env(secrets), cwd=REPO)
        assert proc.stdout is not None
        text = []
        for line in proc.stdout:
            out.write(line)
            text.append(line)
            # Progress for a human: one line per task, and every failure in full.
            if line.startswith(("TASK [", "PLAY [", "RUNNING HANDLER")) or "fatal:" in line \
                    or line.startswith(("changed:", "failed:")) or "FAILED" in line:
                print("  " + line.rstrip()[:160], flush=True)
        rc = proc.wait()
    return rc, "".join(text)


def recap(output: str) -> dict[str, dict[str, int]]:
    return {m[0]: {"ok": int(m[1]), "changed": int(m[2]), "unreachable": int(m[3]), "failed": int(m[4])}
            for m in RECAP.findall(output)}


def changed_tasks(output: str) -> list[str]:
    tasks, current = [], ""
    for line in output.splitlines():
        if line.startswith(("TASK [", "RUNNING HANDLER [")):
            current = line
        elif line.startswith("changed:"):
            tasks.append(f"{current} -> {line[:140]}")
    return tasks


def run_verify(inventory: Path, secrets: Path) -> int:
    return subprocess.run(
        [str(VENV_BIN / "pytest"), "-q", str(REPO / "tests" / "infra"),
         "--hosts=ansible://lab", f"--ansible-inventory={inventory}", "-p", "no:cacheprovider"],
        env=ansible_env(secrets), cwd=REPO).returncode


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hosts", nargs="+", default=["lab1"])
    ap.add_argument("--first-index", type=int, default=11,
                    help="address of the first host: 10.77.0.N (pick another range beside a running suite)")
    ap.add_argument("--no-offline", action="store_true",
                    help="skip the venue phase (forward proxy stopped, lab_mode=offline, verify again)")
    ap.add_argument("--keep", action="store_true", help="leave the hosts running (debugging)")
    ap.add_argument("--workdir", default=str(REPO / ".run" / "lifecycle"))
    a = ap.parse_args()

    work = Path(a.workdir).resolve()  # ansible resolves relative paths against the playbook
    work.mkdir(parents=True, exist_ok=True)
    secrets = work / "secrets"
    inventory = work / "inventory.ini"
    timings: list[tuple[str, float]] = []
    failures: list[str] = []

    lab = labhosts.LabHosts(a.hosts, first_index=a.first_index)
    t = time.monotonic()
    try:
        lab.__enter__()
        lab.inventory(inventory)
        timings.append(("boot", time.monotonic() - t))

        t = time.monotonic()
        rc, out = playbook(inventory, secrets, log=work / "converge.log")
        timings.append(("converge", time.monotonic() - t))
        if rc != 0:
            print(out[-6000:])
            raise SystemExit(f"converge failed (rc={rc}); full log: {work / 'converge.log'}")

        t = time.monotonic()
        rc, out = playbook(inventory, secrets, log=work / "idempotence.log")
        timings.append(("idempotence", time.monotonic() - t))
        changed = {h: r["changed"] for h, r in recap(out).items()}
        print(f"idempotence recap: {changed}")
        if rc != 0 or any(changed.values()) or not changed:
            for task in changed_tasks(out):
                print("  changed on the second run: " + task)
            failures.append(f"idempotence: second run rc={rc} changed={changed}")

        t = time.monotonic()
        rc, out = playbook(inventory, secrets, "--check", "--diff", log=work / "check.log")
        timings.append(("check mode", time.monotonic() - t))
        changed = {h: r["changed"] for h, r in recap(out).items()}
        print(f"check-mode recap: {changed}")
        if rc != 0 or any(changed.values()):
            for task in changed_tasks(out):
                print("  check mode would change: " + task)
            failures.append(f"check mode: rc={rc} changed={changed}")

        t = time.monotonic()
        rc = run_verify(inventory, secrets)
        timings.append(("verify", time.monotonic() - t))
        if rc != 0:
            failures.append(f"verify: testinfra rc={rc}")

        if not a.no_offline and not failures:
            # The venue: the forward proxy is gone, so the hosts have no way out at all. The
            # same playbook in offline mode must converge from the lab's own mirrors.
            lab.proxy.stop()
            t = time.monotonic()
            rc, out = playbook(inventory, secrets, "-e", "lab_mode=offline", log=work / "offline.log")
            timings.append(("offline run", time.monotonic() - t))
            if rc != 0:
                print(out[-6000:])
                failures.append(f"offline run: rc={rc}; full log: {work / 'offline.log'}")
            else:
                t = time.monotonic()
                rc = run_verify(inventory, secrets)
                timings.append(("offline verify", time.monotonic() - t))
                if rc != 0:
                    failures.append(f"offline verify: testinfra rc={rc}")
    finally:
        if a.keep:
            print(f"--keep: hosts left running; inventory {inventory}")
        else:
            t = time.monotonic()
            lab.close()
            timings.append(("teardown", time.monotonic() - t))
        print("\nphase timings:")
        for name, secs in timings:
            print(f"  {name:<12} {secs:7.1f} s")
    if failures:
        print("\nFAILED: " + "; ".join(failures))
        return 1
    print("\nlifecycle: converge, idempotence (changed=0), check mode, verify, offline run and verify all passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
