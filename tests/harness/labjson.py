"""A lab.json (the lab role writes /etc/demolab/lab.json) for a lab rooted in a test's directory.

The helpers and demolab_talk read the lab's directories and endpoints there; DEMOLAB_LAB_JSON
names the file a test writes with write().
"""

from __future__ import annotations

import json
from pathlib import Path


def write(root: Path, *, mode: str = "offline", proxy: str = "http://127.0.0.1:9",
          demo: str = "http://127.0.0.1:9") -> Path:
    """root/lab.json for etc root/etc, state root/state (the test's own); its path."""
    etc, state = root / "etc", root / "state"
    path = root / "lab.json"
    path.write_text(json.dumps({
        "mode": mode, "etc_dir": str(etc), "state_dir": str(state), "talk_dir": str(etc / "talk"),
        "ready_dir": str(etc / "ready.d"), "devpi": {"lock": str(etc / "devpi-requirements.lock")},
        "rehearsal": {"report": str(state / "rehearsal.json")},
        "proxy": {"url": proxy, "miss_log": str(state / "http_cache" / "misses.jsonl")},
        "demo_app": {"url": demo},
    }, indent=1) + "\n")
    return path
