#!/usr/bin/env python3
"""Write a hashed pip lock (no pip-tools needed) from a list of exact pins.

For every target (Python version + platform tags) it runs
``pip download --only-binary=:all: --python-version X --platform Y ...`` into a temporary
directory, so the dependency set is resolved for that target, then writes one line per
``name==version`` with a ``--hash=sha256:`` for every wheel of every target.

    mirror/lock.py mirror/requirements.in --talk talk/talk.yml -o mirror/requirements.lock

(`make lock` runs exactly that, with TALK=path for another talk.) Without ``--target``, the
targets are the devpi role's ``devpi_fill_targets`` (Python 3.11 for Debian 12, 3.13 for 13). ``--talk FILE`` adds the
talk's ``needs.pip`` (every step's pip requirements, docs/TALK.md) to the pins of the
requirements file: the lock is what the lab's index holds, and the talk installs from it on
stage. A talk requirement that contradicts a pin makes pip's resolver stop with both named.

pip's index comes from the machine's pip configuration (nothing is hard-coded here); after
`make lab` that names the lab's own index, so run it under mirror/upstream_pip.py's export.
Pure-Python wheels are shared by every target; only binary wheels add hashes per target.
"""

from __future__ import annotations

import argparse
import hashlib
import re
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TALK_LIB = REPO / "roles" / "talk" / "files"  # the demolab_talk package (the talk file's model)
DEVPI_DEFAULTS = REPO / "roles" / "devpi" / "defaults" / "main.yml"  # devpi_fill_targets: what devpi fills


def default_targets() -> list[str]:
    """One target per Python/platforms entry that devpi fills the lab index for."""
    import yaml  # noqa: PLC0415 - only the default needs it (the venv has PyYAML)

    entries = yaml.safe_load(DEVPI_DEFAULTS.read_text())["devpi_fill_targets"]
    return [f"{e['python']}:{','.join(e['platforms'])}" for e in entries]


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def wheel_name_version(filename: str) -> tuple[str, str]:
    if not filename.endswith(".whl"):
        raise SystemExit(f"lock.py: not a wheel: {filename} (only binary distributions are locked)")
    parts = filename[:-4].split("-")
    return canonical(parts[0]), parts[1]


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def download(requirements: Path, target: str, dest: Path, pip: list[str]) -> None:
    python, _, platforms = target.partition(":")
    cmd = [*pip, "download", "--disable-pip-version-check", "-q", "--only-binary=:all:",
           "--implementation", "cp", "--python-version", python, "-d", str(dest),
           "-r", str(requirements)]
    for platform in filter(None, platforms.split(",")):
        cmd += ["--platform", platform]
    print("lock.py:", " ".join(cmd), file=sys.stderr)
    subprocess.run(cmd, check=True)


def talk_requirements(path: Path) -> list[str]:
    """The talk's pip needs, merged over its steps (the talk file is validated first)."""
    sys.path.insert(0, str(TALK_LIB))
    from demolab_talk import TalkError, load  # noqa: PLC0415 - the role's package, found at run time

    try:
        return load(path).needs().pip
    except TalkError as exc:
        raise SystemExit(f"lock.py: {exc}") from None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("requirements", type=Path, help="exact pins (name==version), one a line")
    parser.add_argument("-o", "--output", type=Path, required=True)
    parser.add_argument("--target", action="append",
                        help="PYVER:PLATFORM[,PLATFORM...] (repeatable; default: the devpi role's devpi_fill_targets)")
    parser.add_argument("--pip", default=f"{sys.executable} -m pip", help="pip command")
    parser.add_argument("--talk", type=Path, action="append", default=[],
                        help="a talk file whose needs.pip are locked too (repeatable)")
    args = parser.parse_args()
    talk_reqs = [req for talk in args.talk for req in talk_requirements(talk)]
    targets = args.target or default_targets()

    files: dict[tuple[str, str], dict[str, str]] = {}
    with tempfile.TemporaryDirectory(prefix="lock-") as tmp:
        merged = Path(tmp) / "requirements.in"
        merged.write_text(args.requirements.read_text().rstrip("\n") + "\n"
                          + "".join(f"{req}  # {', '.join(map(str, args.talk))}\n" for req in talk_reqs))
        for index, target in enumerate(targets):
            dest = Path(tmp) / str(index)
            download(merged, target, dest, args.pip.split())
            for wheel in sorted(dest.iterdir()):
                files.setdefault(wheel_name_version(wheel.name), {})[wheel.name] = sha256(wheel)

    pinned = {}
    for line in args.requirements.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            pinned[canonical(name)] = (name.strip(), version.strip())
    sources = " and ".join([args.requirements.name, *(f"{t.name}'s needs.pip" for t in args.talk)])
    lines = [
        f"# Generated by mirror/lock.py from {sources} - do not edit by hand (make lock).",
        "# Targets: " + " ".join(targets),
    ]
    for (name, version), wheels in sorted(files.items()):
        display = pinned.get(name, (name, version))[0]
        hashes = sorted(set(wheels.values()))
        lines.append(f"{display}=={version} \\")
        lines.extend(f"    --hash=sha256:{h}" + (" \\" if i < len(hashes) - 1 else "")
                     for i, h in enumerate(hashes))
    args.output.write_text("\n".join(lines) + "\n")
    print(f"lock.py: {len(files)} packages, {sum(len(w) for w in files.values())} files -> "
          f"{args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
