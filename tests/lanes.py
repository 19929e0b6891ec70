#!/usr/bin/env python3
"""`make test`: the suites in parallel lanes, one summary at the end.

    python3 tests/lanes.py [--lanes machine,hosts,lifecycle] [--serial]

Most of the suites' wall time is waiting (apt, pip, systemd in the test hosts, browsers), so
on a 2-core machine they finish much sooner side by side than one after the other.  A lane is a
sequence of make targets that must not overlap with each other:

- machine:   everything that runs on this machine itself (lint and unit tests, the talk, the
             demo app, devpi, the HTTP cache, media, then `make lab` here and verify);
- hosts:     suites on their own fresh test hosts (Debian mirror, the Vagrant provisioner
             replay, the Debian 13 host of the lifecycle);
- lifecycle: the Debian 12 lifecycle on fresh hosts (tests/lifecycle.py, the longest).

Each lane gets its own forward-proxy port and address range on the harness's bridge, so their
test hosts never meet.  Every line a lane prints is prefixed with its name; the full output of
each lane is also in .run/lanes/<lane>.log.  A failed step ends its lane (later steps may need
it); the other lanes go on, so one run reports every failure.  The exit status is 0 only if
every step passed.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
LOGS = REPO / ".run" / "lanes"


@dataclass
class Step:
    name: str
    argv: list[str]
    seconds: float = 0.0
    status: str = "not run"
    why: list[str] = field(default_factory=list)


@dataclass
class Lane:
    name: str
    env: dict[str, str]
    steps: list[Step]
    lock: threading.Lock = field(default_factory=threading.Lock)


# Lines that say why a suite failed: pytest's summary, Ansible's fatal results, the lifecycle's
# and make's verdicts, a Python exception.
WHY = re.compile(r"^(FAILED|ERROR) |fatal: \[|FAILED!|^\S*Error\b|^make(\[\d+\])?: \*\*\*|phase.*fail|failed:", re.I)
WHY_LINES = 8
WHY_WIDTH = 300


def reasons(lines: list[str]) -> list[str]:
    """The few lines of a failed step's output that say why (CI shows only the end of the output)."""
    picked = list(dict.fromkeys(line.strip() for line in lines if WHY.search(line.strip())))
    picked = picked[-WHY_LINES:] or [line.strip() for line in lines[-3:]]
    return [line if len(line) <= WHY_WIDTH else line[:WHY_WIDTH] + " ..." for line in picked]


def make(target: str, *args: str) -> Step:
    return Step(target, ["make", "--no-print-directory", target, *args])


def lanes() -> list[Lane]:
    # The lifecycle keeps the harness's defaults (proxy 3142, hosts from 10.77.0.11 and the
    # audience's address +100); the other lanes take ranges of their own.
    return [
        Lane("machine", {}, [make("quick"), make("test-talk"), make("test-demo-app"), make("test-devpi"),
                             make("test-http-cache"), make("test-media"), make("test-local")]),
        Lane("hosts", {"DEMOLAB_PROXY_PORT": "3144"}, [
            make("test-apt-mirror"),
            make("test-vagrant-replay"),
            Step("test-hosts (Debian 13)", ["make", "--no-print-directory", "test-hosts",
                                            "LIFECYCLE_ARGS=--only-debian13 --hosts lab13 --first-index 41"]),
        ]),
        Lane("lifecycle", {"DEMOLAB_PROXY_PORT": "3142"}, [
            Step("test-hosts (Debian 12)", ["make", "--no-print-directory", "test-hosts",
                                            "LIFECYCLE_ARGS=--no-debian13"]),
        ]),
    ]


def run_lane(lane: Lane, out_lock: threading.Lock, width: int) -> None:
    LOGS.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **lane.env}
    with (LOGS / f"{lane.name}.log").open("w") as log:
        for step in lane.steps:
            t = time.monotonic()
            proc = subprocess.Popen(step.argv, cwd=REPO, env=env, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True,
                                    errors="replace", bufsize=1)
            assert proc.stdout is not None
            lines: list[str] = []
            for line in proc.stdout:
                lines.append(line)
                log.write(line)
                log.flush()
                with out_lock:
                    sys.stdout.write(f"[{lane.name:<{width}}] {line}")
                    sys.stdout.flush()
            rc = proc.wait()
            step.seconds = time.monotonic() - t
            step.status = "passed" if rc == 0 else f"FAILED (rc={rc})"
            with out_lock:
                print(f"[{lane.name:<{width}}] ==> {step.name}: {step.status} in {step.seconds:.0f} s", flush=True)
            if rc != 0:
                step.why = reasons(lines)
                return


def summary(chosen: list[Lane], wall: float) -> bool:
    ok = all(s.status == "passed" for lane in chosen for s in lane.steps)
    print("\n==> make test: every lane, side by side")
    for lane in chosen:
        for step in lane.steps:
            print(f"    {lane.name:<10} {step.name:<28} {step.status:<16} {step.seconds:7.0f} s")
    busy = sum(s.seconds for lane in chosen for s in lane.steps)
    print(f"    wall {wall:.0f} s for {busy:.0f} s of suites ({busy / max(wall, 1):.2f}x); logs in {LOGS}")
    for lane in chosen:
        for step in (s for s in lane.steps if s.why):
            print(f"==> why {step.name} failed (from its output):")
            for line in step.why:
                print(f"    {line}")
    return ok


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lanes", default="", help="comma-separated lane names (default: all)")
    ap.add_argument("--serial", action="store_true", help="one lane after the other (to compare)")
    a = ap.parse_args()
    chosen = [lane for lane in lanes() if not a.lanes or lane.name in a.lanes.split(",")]
    if not chosen:
        raise SystemExit(f"lanes.py: no lane named {a.lanes!r}; lanes: {', '.join(x.name for x in lanes())}")
    width = max(len(lane.name) for lane in chosen)
    out_lock = threading.Lock()
    t = time.monotonic()
    if a.serial:
        for lane in chosen:
            run_lane(lane, out_lock, width)
    else:
        threads = [threading.Thread(target=run_lane, args=(lane, out_lock, width), daemon=True) for lane in chosen]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    return 0 if summary(chosen, time.monotonic() - t) else 1


if __name__ == "__main__":
    sys.exit(main())
