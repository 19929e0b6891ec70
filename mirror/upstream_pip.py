#!/usr/bin/env python3
"""pip settings for runs that must reach the upstream index, never the lab's own.

After `make lab` the host's pip configuration names the lab index (devpi's lab/offline, set
by the devpi role). That index holds the talk's packages only, and it is down whenever the
lab is stopped, so the project's own toolchain (.venv), the demo app's build and
mirror/lock.py must not depend on it. This prints, for a shell to eval, an export of
PIP_CONFIG_FILE naming a small file that overrides index-url with the upstream one: the
index named by DEMOLAB_UPSTREAM_INDEX, else pip's own built-in default (read from pip, not
written here). Every other setting of the host (CA bundle, constraints, find-links) still
applies. When the host's index is not the lab's, it prints nothing and pip runs as it is.

    eval "$(python3 mirror/upstream_pip.py --conf .venv/pip-upstream.conf)"
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

# The lab index's path (roles/devpi: devpi_index, default lab/offline).
LAB_INDEX = os.environ.get("DEMOLAB_LAB_INDEX", "lab/offline")


def configured_index(pip: list[str]) -> str:
    """The index-url pip would use now (environment first, then its configuration files)."""
    if os.environ.get("PIP_INDEX_URL"):
        return os.environ["PIP_INDEX_URL"]
    out = subprocess.run([*pip, "config", "list"], capture_output=True, text=True, check=False).stdout
    found = ""
    # `pip config list` prints files in load order; a later file wins.
    for line in out.splitlines():
        match = re.match(r"^(global|install|download)\.index-url='(.*)'$", line.strip())
        if match:
            found = match.group(2)
    return found


def is_lab_index(url: str) -> bool:
    path = urlsplit(url).path.strip("/")
    return path in (f"{LAB_INDEX}/+simple", LAB_INDEX)


def upstream_index(pip: list[str]) -> str:
    if os.environ.get("DEMOLAB_UPSTREAM_INDEX"):
        return os.environ["DEMOLAB_UPSTREAM_INDEX"]
    code = "from pip._internal.models.index import PyPI; print(PyPI.simple_url)"
    python = pip[0] if pip[1:2] == ["-m"] else sys.executable
    return subprocess.run([python, "-c", code], capture_output=True, text=True,
                          check=True).stdout.strip()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conf", type=Path, required=True,
                        help="where to write the override file (its directory is created)")
    parser.add_argument("--pip", default=f"{sys.executable} -m pip", help="pip command")
    args = parser.parse_args()
    pip = args.pip.split()

    current = configured_index(pip)
    if not current or not is_lab_index(current):
        return 0
    if os.environ.get("PIP_INDEX_URL"):
        print(f"upstream_pip.py: PIP_INDEX_URL names the lab index ({current}); unset it or "
              "set DEMOLAB_UPSTREAM_INDEX", file=sys.stderr)
        return 2
    upstream = upstream_index(pip)
    args.conf.parent.mkdir(parents=True, exist_ok=True)
    args.conf.write_text(
        "# Written by mirror/upstream_pip.py: the upstream index, not the lab's own.\n"
        f"[global]\nindex-url = {upstream}\n")
    print(f"export PIP_CONFIG_FILE={shlex.quote(str(args.conf.resolve()))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
