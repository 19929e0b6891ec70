"""Where the talk and its rehearsal live on a lab host: defined here once.

The talk role installs the talk file (and its snippet files) under TALK_DIR, plus TALK_JSON
(the validated model, `demolab-talk json`) for readers without PyYAML (the demo app's web
view). The rehearsal writes REHEARSAL_JSON (the whole airplane rehearsal, a "talk" key for the
talk's steps) and one asciicast v2 recording per step under CASTS_DIR (0644, the web view and
lab-play read them), plus a screen clip per step under CLIPS_DIR when a display was there.
The lab role's lab_etc_dir / lab_state_dir are the Ansible side of the same two roots;
DEMOLAB_ETC / DEMOLAB_STATE override them (tests).
"""

from __future__ import annotations

import os
from pathlib import Path

ETC = Path(os.environ.get("DEMOLAB_ETC", "/etc/demolab"))
STATE = Path(os.environ.get("DEMOLAB_STATE", "/var/lib/demolab"))

TALK_DIR = ETC / "talk"
TALK_FILE = TALK_DIR / "talk.yml"
TALK_JSON = TALK_DIR / "talk.json"
REHEARSAL_JSON = STATE / "rehearsal.json"
REHEARSAL_DIR = STATE / "rehearsal"
CASTS_DIR = REHEARSAL_DIR / "casts"
CLIPS_DIR = REHEARSAL_DIR / "clips"


def cast_path(step_id: str) -> Path:
    return CASTS_DIR / f"{step_id}.cast"


def clip_path(step_id: str) -> Path:
    return CLIPS_DIR / f"{step_id}.mkv"
