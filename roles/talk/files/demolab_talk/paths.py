"""Where the talk and its rehearsal live on a lab host: read from the lab's lab.json.

The lab role writes /etc/demolab/lab.json (DEMOLAB_LAB_JSON names another file, for tests):
its talk_dir, state_dir, rehearsal report, proxy and demo app endpoints are the ones defined
once in the lab role's defaults (lab_talk_dir, lab_state_dir, lab_rehearsal_report, ...).
The talk role installs the talk file (and its snippet files) under TALK_DIR, plus TALK_JSON
(the validated model, `demolab-talk json`) for readers without PyYAML (the demo app's web
view). The rehearsal writes REHEARSAL_JSON (the whole airplane rehearsal, a "talk" key for the
talk's steps) and one asciicast v2 recording per step under CASTS_DIR (0644, the web view and
lab-play read them), plus a screen clip per step under CLIPS_DIR when a display was there.

The names below are read when used (module attributes computed on access), so the model and
its commands work where no lab is provisioned (the controller) as long as they are given a
talk file; what needs the lab raises LabNotProvisioned, a one-line reason.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

LAB_JSON = "/etc/demolab/lab.json"


class LabNotProvisioned(RuntimeError):
    """lab.json is missing or unreadable: this is not a provisioned lab host."""


def lab_json() -> Path:
    return Path(os.environ.get("DEMOLAB_LAB_JSON") or LAB_JSON)


def lab() -> dict:
    """The lab's settings and endpoints (lab.json), read afresh on every call."""
    path = lab_json()
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise LabNotProvisioned(f"cannot read the lab's settings {path} ({exc}): run `make lab` "
                                "on this machine, or name the talk file") from None


def _paths() -> dict[str, object]:
    doc = lab()
    try:
        return _from(doc)
    except (KeyError, TypeError) as exc:
        raise LabNotProvisioned(f"the lab's settings {lab_json()} lack {exc}: they were written by an older "
                                "lab; run `make lab` again") from None


def _from(doc: dict) -> dict[str, object]:
    talk_dir = Path(doc["talk_dir"])
    rehearsal_dir = Path(doc["state_dir"]) / "rehearsal"
    return {
        "TALK_DIR": talk_dir,
        "TALK_FILE": talk_dir / "talk.yml",
        "TALK_JSON": talk_dir / "talk.json",
        "REHEARSAL_JSON": Path(doc["rehearsal"]["report"]),
        "REHEARSAL_DIR": rehearsal_dir,
        "CASTS_DIR": rehearsal_dir / "casts",
        "CLIPS_DIR": rehearsal_dir / "clips",
        "PROXY_URL": doc["proxy"]["url"],
        "MISS_LOG": Path(doc["proxy"]["miss_log"]),
        "DEMO_URL": doc["demo_app"]["url"],
    }


def __getattr__(name: str) -> object:
    if name.isupper():
        found = _paths()
        if name in found:
            return found[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def cast_path(step_id: str) -> Path:
    return __getattr__("CASTS_DIR") / f"{step_id}.cast"


def clip_path(step_id: str) -> Path:
    return __getattr__("CLIPS_DIR") / f"{step_id}.mkv"
