"""make test's lanes (tests/lanes.py) run every suite the Makefile defines, none twice."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# Not part of make test on purpose: itself, its serial twin, and the VM run that needs hours of
# software emulation (issue 10: kept out of make test).
NOT_IN_MAKE_TEST = {"test", "test-serial", "test-vagrant"}


def load_lanes():
    spec = importlib.util.spec_from_file_location("lanes", REPO / "tests" / "lanes.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["lanes"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module.lanes()


def suite_targets() -> set[str]:
    text = (REPO / "Makefile").read_text()
    return {m.group(1) for m in re.finditer(r"^(test[\w-]*):", text, re.M)} - NOT_IN_MAKE_TEST


def test_every_suite_runs_in_exactly_one_lane_and_quick_comes_first():
    steps = [step for lane in load_lanes() for step in lane.steps]
    targets = [step.argv[2] for step in steps]
    missing = suite_targets() - set(targets) - {"quick"}
    assert not missing, f"make test would skip {sorted(missing)}: add them to a lane in tests/lanes.py"
    once = [t for t in targets if t != "test-hosts"]
    assert len(once) == len(set(once)), "a suite runs twice"
    assert targets[0] == "quick"


def test_the_lifecycle_runs_both_releases_once():
    args = [step.argv[3] for step in (s for lane in load_lanes() for s in lane.steps)
            if step.argv[2] == "test-hosts"]
    assert sorted(a.split()[0] for a in args) == ["LIFECYCLE_ARGS=--no-debian13", "LIFECYCLE_ARGS=--only-debian13"]


def test_lanes_that_boot_hosts_never_share_a_proxy_port():
    ports = [lane.env.get("DEMOLAB_PROXY_PORT") for lane in load_lanes() if lane.name != "machine"]
    assert None not in ports and len(ports) == len(set(ports))


def test_a_failed_step_says_why_in_a_few_lines():
    import lanes  # loaded by load_lanes()

    load_lanes()
    out = ["collecting ...\n", "x" * 50 + "\n",
           "FAILED tests/talk/test_play.py::test_pause - AssertionError: no prompt\n",
           "fatal: [lab1-m]: FAILED! => {\"msg\": \"" + "y" * 400 + "\"}\n",
           "make: *** [Makefile:188: test-talk] Error 1\n"]
    why = lanes.reasons(out)
    assert why[0].startswith("FAILED tests/talk/test_play.py::test_pause")
    assert why[1].startswith("fatal: [lab1-m]") and why[1].endswith(" ...") and len(why[1]) < 320
    assert why[2].startswith("make: ***")
    assert lanes.reasons(["a\n", "b\n", "c\n", "d\n"]) == ["b", "c", "d"]
