"""A role's default as the tests need it: its plain `{{ var }}` references resolved.

Roles derive their ports and paths from the lab role's endpoints (`devpi_port: "{{
lab_devpi_port }}"`), so a test that needs the value reads it through default() rather than
repeating the literal.
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml

ROLES = Path(__file__).resolve().parents[2] / "roles"


def defaults(role: str) -> dict:
    return yaml.safe_load((ROLES / role / "defaults" / "main.yml").read_text()) or {}


def default(role: str, name: str) -> object:
    """roles/ROLE/defaults/main.yml's NAME, references to the role's own and the lab role's
    defaults resolved (also references to references: lab_talk_dir -> lab_etc_dir)."""
    known = {**defaults("lab"), **defaults(role)}
    value = known[name]
    for _ in range(5):
        if not isinstance(value, str) or "{{" not in value:
            break
        value = re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: str(known[m.group(1)]), value)
    return value
