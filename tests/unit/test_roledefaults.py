"""The tests' reader of role defaults resolves the lab references roles derive from."""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "harness"))

import roledefaults  # noqa: E402


def test_a_port_derived_from_the_lab_is_the_labs_value():
    lab = roledefaults.defaults("lab")
    assert roledefaults.defaults("devpi")["devpi_port"].startswith("{{")  # derived, not repeated
    assert int(roledefaults.default("devpi", "devpi_port")) == lab["lab_devpi_port"]
    assert int(roledefaults.default("demo_app", "demo_app_port")) == lab["lab_demo_app_port"]


def test_references_to_references_are_resolved():
    lab = roledefaults.defaults("lab")
    assert roledefaults.default("lab", "lab_talk_dir") == f"{lab['lab_etc_dir']}/talk"
    assert "{{" not in str(roledefaults.default("demo_app", "demo_app_conf_path"))
