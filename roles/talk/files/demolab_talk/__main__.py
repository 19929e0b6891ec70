"""demolab-talk: read a talk file.

  demolab-talk check [FILE]   validate (one line naming file, line and step on an error)
  demolab-talk show [FILE]    the steps, one line each
  demolab-talk json [FILE]    the validated model as JSON (what Ansible reads)
  demolab-talk needs [FILE]   what the talk needs offline (pip, apt, urls) as JSON
  demolab-talk events [FILE]  the hotkey events as lab-snippet's events file (YAML)
  demolab-talk rehearse ...   rehearse every step offline (demolab_talk/rehearse.py; --help)

FILE defaults to $DEMOLAB_TALK, else the installed talk (talk_dir of the lab's lab.json).
Exit codes: 0 ok, 1 the talk file is not valid, 2 usage.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import asdict

import yaml

from . import paths
from .model import TalkError, load


class _BlockDumper(yaml.SafeDumper):
    """Multi-line strings as literal blocks (readable; PyYAML quotes them where it must)."""


_BlockDumper.add_representer(
    str, lambda d, s: d.represent_scalar("tag:yaml.org,2002:str", s, style="|" if "\n" in s else None))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["rehearse"]:
        from .rehearse import main as rehearse

        return rehearse(argv[1:])
    ap = argparse.ArgumentParser(prog="demolab-talk", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("action", choices=["check", "show", "json", "needs", "events"])
    ap.add_argument("file", nargs="?", default=os.environ.get("DEMOLAB_TALK"))
    a = ap.parse_args(argv)
    try:
        a.file = a.file or str(paths.TALK_FILE)
        talk = load(a.file)
    except (TalkError, paths.LabNotProvisioned) as exc:
        print(f"demolab-talk: {exc}", file=sys.stderr)
        return 1
    if a.action == "check":
        print(f"{a.file}: {len(talk.steps)} steps, ok")
    elif a.action == "show":
        width = len(str(len(talk.steps)))
        for n, s in enumerate(talk.steps, 1):
            tags = [t for t, on in (("hotkey " + s.hotkey.name if s.hotkey else "", s.hotkey),
                                    ("command", s.command), ("open", s.open), ("risky", s.risky)) if on]
            print(f"{n:>{width}}. {s.id:<16} {s.title}" + (f"  [{', '.join(tags)}]" if tags else ""))
    elif a.action == "json":
        json.dump(talk.to_dict(), sys.stdout, indent=1)
        print()
    elif a.action == "events":
        print(f"# lab-snippet events from {a.file} (demolab-talk events)")
        print(yaml.dump(talk.events(), Dumper=_BlockDumper, sort_keys=False, allow_unicode=True, width=4096), end="")
    else:
        json.dump(asdict(talk.needs()), sys.stdout, indent=1)
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
