"""Every Python package a role pins is in the mirror's hashed lock, at the same version:
otherwise the lab index lacks it at the venue and the offline reinstall fails."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[2]
LOCKED_LOCALLY = {"demolab-app"}  # built by `make wheel`, not fetched from an index


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def locked() -> dict[str, str]:
    pins = {}
    for line in (REPO / "mirror" / "requirements.lock").read_text().splitlines():
        m = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s\\;]+)", line)
        if m:
            pins[canonical(m.group(1))] = m.group(2)
    return pins


def role_pins() -> list[tuple[str, str, str]]:
    pins = []
    for defaults in sorted(REPO.glob("roles/*/defaults/main.yml")):
        for key, value in (yaml.safe_load(defaults.read_text()) or {}).items():
            for item in value if isinstance(value, list) else []:
                if isinstance(item, str) and re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*==\S+", item):
                    name, version = item.split("==")
                    pins.append((f"{defaults.parts[-3]}:{key}", name, version))
    http_cache = yaml.safe_load((REPO / "roles/http_cache/defaults/main.yml").read_text())
    pins.append(("http_cache:http_cache_proxy_version", "proxy.py", http_cache["http_cache_proxy_version"]))
    return pins


def test_the_lock_has_hashes_for_every_entry():
    text = (REPO / "mirror" / "requirements.lock").read_text()
    entries = re.split(r"\n(?=[A-Za-z0-9])", text.split("\n\n", 1)[-1].strip())
    for entry in entries:
        if not entry.startswith("#"):
            assert "--hash=sha256:" in entry, entry


@pytest.mark.parametrize("where,name,version", role_pins(), ids=lambda v: str(v))
def test_role_pin_is_locked(where, name, version):
    if canonical(name) in LOCKED_LOCALLY:
        return
    lock = locked()
    assert canonical(name) in lock, f"{where} pins {name}=={version}, missing from mirror/requirements.lock"
    assert lock[canonical(name)] == version, (
        f"{where} pins {name}=={version}, the lock has {lock[canonical(name)]}: "
        "update mirror/requirements.in and rerun mirror/lock.py")


def talk_pip_needs() -> list[tuple[str, str]]:
    """(talk file, requirement) for the shipped talk and the one TALK=path names."""
    sys.path.insert(0, str(REPO / "roles" / "talk" / "files"))
    from demolab_talk import load  # noqa: PLC0415 - the talk role's package

    talks = {REPO / "talk" / "talk.yml", Path(os.environ.get("DEMOLAB_TALK") or REPO / "talk" / "talk.yml")}
    return [(talk.name, req) for talk in sorted(talks) for req in load(talk).needs().pip]


@pytest.mark.parametrize("talk,requirement", talk_pip_needs(), ids=lambda v: str(v))
def test_talk_pip_need_is_locked(talk, requirement):
    """What the talk pip-installs on stage is in the lab's index (the lock): `make lock` adds a
    talk's needs.pip; this fails when the talk changed and the lock was not regenerated."""
    req = Requirement(requirement)
    lock = locked()
    name = canonical(req.name)
    assert name in lock, f"{talk} needs {requirement}, missing from mirror/requirements.lock: run `make lock`"
    assert req.specifier.contains(lock[name], prereleases=True), (
        f"{talk} needs {requirement}, the lock has {req.name}=={lock[name]}: run `make lock`")
def test_the_lock_covers_every_python_devpi_fills_for():
    """The lock was generated for the Pythons/platforms the devpi role downloads (3.11 for
    Debian 12, 3.13 for Debian 13): otherwise a wheel of one release has no hash."""
    header = next(line for line in (REPO / "mirror" / "requirements.lock").read_text().splitlines()
                  if line.startswith("# Targets: "))
    locked_targets = set(header.removeprefix("# Targets: ").split())
    devpi = yaml.safe_load((REPO / "roles/devpi/defaults/main.yml").read_text())
    wanted = {f"{t['python']}:{','.join(t['platforms'])}" for t in devpi["devpi_fill_targets"]}
    assert wanted <= locked_targets, (
        f"devpi fills for {sorted(wanted - locked_targets)}, the lock was made for {sorted(locked_targets)}: "
        "rerun mirror/lock.py with one --target per devpi_fill_targets entry")
    assert {t.split(":")[0] for t in wanted} >= {"3.11", "3.13"}
