"""A changed=0 rerun of site.yml, plain linear beside the lab's Mitogen strategy, in one run.

The lab's strategy (plugins/strategy/demolab_linear.py) runs Ansible's linear strategy through
Mitogen.  This benchmark shows what that buys: it reruns the playbook on an already provisioned
inventory (this machine by default: run `make lab` first), alternating the two strategies, and
prints each run's wall time and the ratio of the medians.  Every run must report changed=0 (a
benchmark of a run that changes something measures something else) and fails otherwise.

    .venv/bin/python tests/bench/rerun.py [--rounds 2] [--inventory inventory.ini] [-- -e k=v ...]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "harness"))
from recap import changed_counts, changed_tasks  # noqa: E402

STRATEGIES = {"plain linear": "linear", "linear through Mitogen": "demolab_linear"}


def rerun(inventory: str, strategy: str, extra: list[str]) -> float:
    env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), ANSIBLE_STRATEGY=strategy,
               ANSIBLE_NOCOLOR="1")
    cmd = [str(Path(sys.executable).with_name("ansible-playbook")), "-i", inventory,
           str(REPO / "playbooks" / "site.yml"), *extra]
    start = time.monotonic()
    proc = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, check=False)
    took = time.monotonic() - start
    changed = changed_counts(proc.stdout)
    if proc.returncode or not changed or any(changed.values()):
        sys.exit(f"rerun with strategy {strategy}: rc={proc.returncode} changed={changed}; "
                 f"not a changed=0 rerun: {changed_tasks(proc.stdout)[:5] or proc.stdout[-2000:]}")
    return took


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--inventory", default=str(REPO / "inventory.ini"))
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("extra", nargs="*", help="more ansible-playbook arguments (after --)")
    args = ap.parse_args()
    times: dict[str, list[float]] = {label: [] for label in STRATEGIES}
    for n in range(1, args.rounds + 1):
        for label, strategy in STRATEGIES.items():
            took = rerun(args.inventory, strategy, args.extra)
            times[label].append(took)
            print(f"round {n}: {label:<24} {took:6.1f} s (changed=0)", flush=True)
    plain, mitogen = (statistics.median(times[label]) for label in STRATEGIES)
    print(f"median: plain linear {plain:.1f} s, through Mitogen {mitogen:.1f} s: "
          f"{plain / mitogen:.2f}x faster (goal of issue 11: a changed=0 rerun <= 30 s)")


if __name__ == "__main__":
    main()
