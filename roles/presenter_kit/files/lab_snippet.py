#!/usr/bin/python3
"""lab-snippet: the presenter's hotkey launcher (named events -> snippet to clipboard / command).

  lab-snippet choose          pop up a chooser (dmenu or rofi): type a few letters + Enter
  lab-snippet run NAME        do what event NAME says, without the chooser
  lab-snippet list            print the events as a table
  lab-snippet check           validate the events file

Events file (YAML; --events, $LAB_SNIPPET_EVENTS, ~/.config/demolab/events.yml,
events.yml in the lab's etc_dir (lab.json), first found), one mapping per event:

  redis:
    description: Show the install instructions for redis-server
    snippet: |
      sudo apt-get install redis-server
    command: xdg-open http://127.0.0.1:6543/
    clipboard: clipboard        # optional: clipboard (default), primary or both

An event needs a snippet (copied with xclip), a command (run with /bin/sh, detached), or both.
After the action a short beep plays ($LAB_SNIPPET_BEEP, else `beep`, else paplay/aplay of a
generated tone; --no-beep or LAB_SNIPPET_BEEP=none silences it).
Exit codes: 0 ok, 1 error (unknown event, bad file, no display...), 2 usage, 4 chooser cancelled.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shlex
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import wave
from pathlib import Path

try:
    import yaml
except ImportError:  # pragma: no cover - the role installs python3-yaml
    sys.stderr.write("lab-snippet: error: python3-yaml is missing (apt-get install python3-yaml)\n")
    sys.exit(1)

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")
EVENT_KEYS = {"snippet", "command", "description", "clipboard"}


# The lab's settings (the lab role writes it; DEMOLAB_LAB_JSON names another, for tests).
LAB_JSON = Path(os.environ.get("DEMOLAB_LAB_JSON") or "/etc/demolab/lab.json")


class LabError(Exception):
    pass


def lab_etc_dir() -> Path | None:
    """The lab's etc_dir (lab.json), None where no lab is provisioned."""
    try:
        return Path(json.loads(LAB_JSON.read_text())["etc_dir"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def events_path(cli: str | None) -> Path:
    if cli:
        return Path(cli)
    if os.environ.get("LAB_SNIPPET_EVENTS"):
        return Path(os.environ["LAB_SNIPPET_EVENTS"])
    etc = lab_etc_dir()
    for cand in (Path.home() / ".config/demolab/events.yml", etc / "events.yml" if etc else None):
        if cand and cand.exists():
            return cand
    raise LabError("no events file: create ~/.config/demolab/events.yml or pass --events FILE")


def load_events(path: Path) -> dict[str, dict]:
    """Parse and validate; every error names the file and line."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise LabError(f"cannot read events file {path}: {exc.strerror}") from exc
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        problem = getattr(exc, "problem", None) or str(exc)
        context = getattr(exc, "context_mark", None)
        if context and mark and context.line != mark.line:
            problem += f" ({getattr(exc, 'context', None) or 'construct'} opened at line {context.line + 1})"
        raise LabError(f"{where}: malformed YAML: {problem}") from exc
    if root is None:
        raise LabError(f"{path}: the file holds no events")
    if not isinstance(root, yaml.MappingNode):
        raise LabError(f"{path}:{root.start_mark.line + 1}: expected a mapping of event name -> "
                       "{snippet, command, description}")
    events: dict[str, dict] = {}
    for key_node, val_node in root.value:
        line = key_node.start_mark.line + 1
        name = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
        if not name or not NAME_RE.match(str(name)):
            raise LabError(f"{path}:{line}: bad event name {name!r} (letters, digits, _ . + - only)")
        if name in events:
            raise LabError(f"{path}:{line}: event {name!r} is defined twice")
        if not isinstance(val_node, yaml.MappingNode):
            raise LabError(f"{path}:{val_node.start_mark.line + 1}: event {name!r} must be a mapping with "
                           "snippet and/or command (and an optional description)")
        event: dict[str, str] = {}
        for fk, fv in val_node.value:
            fline = fk.start_mark.line + 1
            if not isinstance(fk, yaml.ScalarNode) or fk.value not in EVENT_KEYS:
                raise LabError(f"{path}:{fline}: event {name!r}: unknown key {getattr(fk, 'value', fk)!r} "
                               f"(allowed: {', '.join(sorted(EVENT_KEYS))})")
            if not isinstance(fv, yaml.ScalarNode):
                raise LabError(f"{path}:{fv.start_mark.line + 1}: event {name!r}: {fk.value} must be a string")
            event[fk.value] = fv.value
        if not event.get("snippet") and not event.get("command"):
            raise LabError(f"{path}:{line}: event {name!r} has neither a snippet nor a command")
        if event.get("clipboard", "clipboard") not in ("clipboard", "primary", "both"):
            raise LabError(f"{path}:{line}: event {name!r}: clipboard must be clipboard, primary or both")
        events[name] = event
    if not events:
        raise LabError(f"{path}: the file holds no events")
    return events


def need_display() -> None:
    if not os.environ.get("DISPLAY"):
        raise LabError("no DISPLAY: the clipboard and the chooser need your X session "
                       "(run from the desktop hotkey or export DISPLAY=:0)")


def copy_to_clipboard(text: str, which: str) -> None:
    need_display()
    if not shutil.which("xclip"):
        raise LabError("xclip is missing (apt-get install xclip)")
    selections = ["clipboard", "primary"] if which == "both" else [which]
    for sel in selections:
        # xclip forks a child that serves the selection until another program takes it.
        # Its stdout/stderr must not be pipes we wait on: the child keeps them open.
        with tempfile.TemporaryFile() as err:
            res = subprocess.run(["xclip", "-selection", sel, "-in"], input=text.encode(),
                                 stdout=subprocess.DEVNULL, stderr=err, timeout=10)
            if res.returncode != 0:
                err.seek(0)
                raise LabError(f"xclip failed: {err.read().decode(errors='replace').strip()}")
        wait_for_selection(sel, text)


def wait_for_selection(sel: str, text: str, timeout: float = 3.0) -> None:
    """Return once the selection holds `text`: xclip's parent exits before its child has taken
    the selection, so a paste right after the hotkey could still get the previous snippet."""
    deadline = time.monotonic() + timeout
    while True:
        got = subprocess.run(["xclip", "-selection", sel, "-out"], capture_output=True, timeout=5, check=False)
        if got.returncode == 0 and got.stdout == text.encode():
            return
        if time.monotonic() > deadline:
            print(f"lab-snippet: the {sel} selection does not hold the snippet after {timeout:.0f} s "
                  "(a clipboard manager rewriting it?)", file=sys.stderr)
            return
        time.sleep(0.02)


def run_command(name: str, command: str) -> int:
    log_dir = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "lab-snippet"
    log_dir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, LAB_SNIPPET_EVENT=name)
    with open(log_dir / "command.log", "ab") as log:
        log.write(f"--- {name}: {command}\n".encode())
        log.flush()
        proc = subprocess.Popen(["/bin/sh", "-c", command], stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, env=env, start_new_session=True)
    return proc.pid


def tone(path: Path) -> Path:
    if not path.exists():
        rate = 22050
        frames = b"".join(struct.pack("<h", int(12000 * math.sin(2 * math.pi * 880 * i / rate)))
                          for i in range(int(rate * 0.08)))
        with wave.open(str(path), "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(rate)
            w.writeframes(frames)
    return path


def beep(enabled: bool) -> None:
    custom = os.environ.get("LAB_SNIPPET_BEEP", "")
    if not enabled or custom == "none":
        return
    cmds: list[list[str]] = []
    if custom:
        cmds.append(shlex.split(custom))
    if shutil.which("beep"):
        cmds.append(["beep", "-f", "880", "-l", "80"])
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "lab-snippet"
    for player in ("paplay", "aplay"):
        if shutil.which(player):
            cache.mkdir(parents=True, exist_ok=True)
            cmds.append([player, str(tone(cache / "beep.wav"))] + (["-q"] if player == "aplay" else []))
    for cmd in cmds:  # best effort: the first player that works
        try:
            if subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, timeout=3).returncode == 0:
                return
        except (OSError, subprocess.TimeoutExpired):
            continue
    sys.stderr.write("\a")


def do_event(name: str, events: dict[str, dict], path: Path, with_beep: bool) -> int:
    if name not in events:
        close = [n for n in events if n.startswith(name[:2])] if name else []
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise LabError(f"unknown event {name!r} in {path}{hint}; `lab-snippet list` shows them")
    event = events[name]
    done = []
    if event.get("snippet"):
        copy_to_clipboard(event["snippet"], event.get("clipboard", "clipboard"))
        done.append("snippet copied to the clipboard")
    if event.get("command"):
        pid = run_command(name, event["command"])
        done.append(f"command started (pid {pid})")
    beep(with_beep)
    print(f"{name}: {', '.join(done)}")
    return 0


def choose(events: dict[str, dict], chooser: str) -> str | None:
    need_display()
    width = max(len(n) for n in events)
    lines = [f"{n:<{width}}  {e.get('description', '')}".rstrip() for n, e in events.items()]
    if chooser == "auto":
        chooser = "dmenu" if shutil.which("dmenu") else "rofi" if shutil.which("rofi") else ""
    if chooser == "dmenu":
        cmd = ["dmenu", "-i", "-l", str(min(len(lines), 20)), "-p", "lab"]
    elif chooser == "rofi":
        cmd = ["rofi", "-dmenu", "-i", "-p", "lab"]
    else:
        raise LabError("no chooser: install dmenu (apt-get install suckless-tools) or rofi")
    if not shutil.which(cmd[0]):
        raise LabError(f"chooser {cmd[0]} is not installed")
    res = subprocess.run(cmd, input="\n".join(lines).encode(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    picked = res.stdout.decode().strip()
    if res.returncode != 0 or not picked:
        return None
    word = picked.split()[0]
    if word in events:
        return word
    # typed text that matched no line exactly: accept a unique prefix
    matches = [n for n in events if n.lower().startswith(word.lower())]
    return matches[0] if len(matches) == 1 else word


def cmd_list(events: dict[str, dict]) -> int:
    rows = [("NAME", "ACTION", "DESCRIPTION")]
    for name, e in events.items():
        action = "+".join(k for k in ("snippet", "command") if e.get(k))
        rows.append((name, action, e.get("description", "").replace("\n", " ")))
    w0 = max(len(r[0]) for r in rows)
    w1 = max(len(r[1]) for r in rows)
    for r in rows:
        print(f"{r[0]:<{w0}}  {r[1]:<{w1}}  {r[2]}".rstrip())
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="lab-snippet", description=__doc__.split("\n")[0])
    parser.add_argument("--events", help="events file (YAML)")
    parser.add_argument("--no-beep", action="store_true")
    parser.add_argument("--beep", help="command that plays the beep (default: $LAB_SNIPPET_BEEP, beep, paplay)")
    parser.add_argument("--chooser", default=os.environ.get("LAB_SNIPPET_CHOOSER", "auto"),
                        choices=["auto", "dmenu", "rofi"])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("choose", help="pick an event in a small chooser window")
    p = sub.add_parser("run", help="run event NAME")
    p.add_argument("name")
    sub.add_parser("list", help="print the events")
    sub.add_parser("check", help="validate the events file")
    args = parser.parse_args(argv)
    if args.beep:
        os.environ["LAB_SNIPPET_BEEP"] = args.beep
    try:
        path = events_path(args.events)
        events = load_events(path)
        if args.command == "list":
            return cmd_list(events)
        if args.command == "check":
            print(f"{path}: {len(events)} events ok")
            return 0
        if args.command == "run":
            return do_event(args.name, events, path, not args.no_beep)
        name = choose(events, args.chooser)
        if name is None:
            print("lab-snippet: cancelled", file=sys.stderr)
            return 4
        return do_event(name, events, path, not args.no_beep)
    except LabError as exc:
        print(f"lab-snippet: error: {exc}", file=sys.stderr)
        return 1
    except subprocess.TimeoutExpired as exc:
        print(f"lab-snippet: error: {exc.cmd[0]} did not answer in time", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
