"""lab-play: the talk on stage, one step at a time, in the presenter's terminal.

  lab-play [--talk FILE] [--step ID] [--workdir DIR] [--speed N]

For each step it shows n/N, the title and the speaker notes, then "magic types" the step's
command: every key the presenter presses prints the next character(s) of the command, so any
rhythm of key mashing looks like fluent typing. Enter runs the command for real, in an
interactive bash (the presenter's ~/.bashrc: aliases, FFMPEG, PIP_INDEX_URL, proxies), with
the real terminal: its output is never hidden or rewritten. The keys:

  any key  type the next character(s)      Enter  run it (finish typing first, if needed)
  Ctrl-N   skip to the next step (also ->, PgDn)     Ctrl-P  back a step (also <-, PgUp)
  Ctrl-F   fall back: play the step's rehearsal recording at its original pace
  Ctrl-Y   copy the step's snippet (xclip when DISPLAY is set, else OSC 52 and printed)
  Ctrl-Z   pause (any key resumes)          Ctrl-L  redraw the step    Ctrl-C  quit

When a `risky` step's live run fails (exit status, the expected output or URL status, or it
is still running after the step's timeout), the recording is offered: Enter or y plays it.

Why not doitlive (read for the idea: magic typing in termios raw mode, one key -> `speed`
characters, backspace un-types): its unit is a flat session file of commands run one after
another with state carried between them; it has no steps with notes, no going back or
skipping, no recorded fallback and no expect checks, and it would be a second talk format
beside talk/talk.yml. demo-magic (bash: `pe` types at a fixed rate through `pv`, then waits
for Enter) sets the pace itself instead of following the presenter's keys. The player below
is doitlive's one idea plus the step/fallback model, on the standard library only (termios
raw mode and plain ANSI, no curses), so it runs the same over SSH and in tmux. Fallbacks play
with Debian's `asciinema play`.

Steps share the state of a presenter's terminal, exactly as the rehearsal runs them (one
mechanism for both: shell.py): the first live step starts in the talk's workdir, and each
live step starts where the last live run ended (`cd`) with what it exported (`export`).
Skipping, going back and playing a recording run nothing, so they change nothing: the next
live step starts from whatever the last live run left (after going back, a step runs again on
top of what later steps did; after a fallback, without what the live step would have done).
--step starts in the workdir with nothing carried.

Exit codes: 0 the end of the talk, 1 bad input (no talk, bad talk, unknown step, no terminal),
2 usage, 130 quit with Ctrl-C.
"""

from __future__ import annotations

import argparse
import base64
import codecs
import json
import os
import re
import select
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import termios
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from . import paths
from .model import Step, Talk, TalkError, load
from .shell import ShellState

PROG = "lab-play"
REHEARSE_HINT = "rehearse first: make rehearse"
KILL_GRACE = 3.0          # seconds between SIGTERM and SIGKILL for a step past its timeout
ESC_WAIT = 0.03           # seconds to wait for the rest of an escape sequence

# Key names (what read_keys() yields besides single printable characters).
ENTER, BACKSPACE, ESC, TAB = "enter", "backspace", "esc", "tab"
NEXT, BACK, FALLBACK, COPY, PAUSE, REDRAW, QUIT = "next", "back", "fallback", "copy", "pause", "redraw", "quit"
IGNORED = "ignored"
CONTROL = {
    "\r": ENTER, "\n": ENTER, "\x7f": BACKSPACE, "\x08": BACKSPACE, "\t": TAB,
    "\x0e": NEXT, "\x10": BACK, "\x06": FALLBACK, "\x19": COPY, "\x1a": PAUSE, "\x0c": REDRAW,
    "\x03": QUIT,
}
ESCAPES = {  # CSI / SS3 sequences of the keys we use (xterm, tmux, screen, the Linux console)
    "\x1b[C": NEXT, "\x1bOC": NEXT, "\x1b[6~": NEXT,
    "\x1b[D": BACK, "\x1bOD": BACK, "\x1b[5~": BACK,
}
HELP = ("keys: any key types · Enter runs · ^N/→ next · ^P/← back · ^F fallback (recording)"
        " · ^Y copy snippet · ^Z pause · ^L redraw · ^C quit")


class PlayError(Exception):
    """Bad input for lab-play: the message is one line saying what to do."""


class Stopped(BaseException):
    """SIGTERM or SIGHUP (a closing window, a dropped SSH): unwind, restoring the terminal."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


# --------------------------------------------------------------------------------------------
# Keys

def split_keys(text: str) -> tuple[list[str], str]:
    """Split decoded terminal input into keys; return (keys, an incomplete escape left over)."""
    keys: list[str] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "\x1b":
            if i + 1 == len(text):
                return keys, text[i:]
            nxt = text[i + 1]
            if nxt in "[O":
                j = i + 2
                # CSI: parameter bytes 0x30-0x3f, then one final byte 0x40-0x7e; SS3: one byte.
                while nxt == "[" and j < len(text) and "\x30" <= text[j] <= "\x3f":
                    j += 1
                if j >= len(text):
                    return keys, text[i:]
                seq = text[i:j + 1]
                keys.append(ESCAPES.get(seq, IGNORED))
                i = j + 1
                continue
            keys.append(ESC)   # a lone Esc (or Alt+key: treated as Esc, then the key)
            i += 1
            continue
        if ch in CONTROL:
            keys.append(CONTROL[ch])
        elif ch < " ":
            keys.append(IGNORED)
        else:
            keys.append(ch)
        i += 1
    return keys, ""


class Terminal:
    """The presenter's terminal: raw-ish input mode, plain ANSI output, restored on every exit.

    Raw here means: no echo, no line editing, no signals from keys (Ctrl-C arrives as a byte),
    no XON/XOFF, CR not turned into NL; output post-processing stays on."""

    def __init__(self, fd_in: int, fd_out: int) -> None:
        self.fd_in = fd_in
        self.fd_out = fd_out
        self.saved = termios.tcgetattr(fd_in)
        self.is_raw = False
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self._pending = ""
        self.color = "NO_COLOR" not in os.environ

    def raw(self) -> None:
        attrs = termios.tcgetattr(self.fd_in)
        attrs[0] &= ~(termios.IXON | termios.ICRNL | termios.INLCR | termios.IGNCR | termios.ISTRIP)
        attrs[3] &= ~(termios.ECHO | termios.ICANON | termios.ISIG | termios.IEXTEN)
        attrs[6][termios.VMIN] = 1
        attrs[6][termios.VTIME] = 0
        termios.tcsetattr(self.fd_in, termios.TCSANOW, attrs)
        self.is_raw = True

    def restore(self) -> None:
        """The terminal exactly as lab-play found it (also for the commands it runs)."""
        try:
            termios.tcsetattr(self.fd_in, termios.TCSADRAIN, self.saved)
        except termios.error:
            pass   # the terminal is gone (SSH dropped): nothing to restore
        self.is_raw = False

    def write(self, text: str) -> None:
        data = text.replace("\n", "\r\n").encode("utf-8", "replace")
        while data:
            n = os.write(self.fd_out, data)
            data = data[n:]

    def style(self, text: str, sgr: str) -> str:
        return f"\x1b[{sgr}m{text}\x1b[0m" if self.color else text

    def keys(self) -> list[str]:
        """Block until at least one key; return every key that has arrived."""
        while True:
            data = os.read(self.fd_in, 1024)
            if not data:
                raise EOFError("the terminal closed")
            text = self._pending + self._decoder.decode(data)
            keys, self._pending = split_keys(text)
            while self._pending:
                # The rest of an escape sequence is on its way (or it was a lone Esc).
                ready, _, _ = select.select([self.fd_in], [], [], ESC_WAIT)
                if not ready:
                    more, self._pending = split_keys(self._pending + "\x00")
                    keys.extend(more)
                    break
                data = os.read(self.fd_in, 1024)
                more, self._pending = split_keys(self._pending + self._decoder.decode(data))
                keys.extend(more)
            keys = [k for k in keys if k != IGNORED]
            if keys:
                return keys

    def key(self) -> str:
        return self.keys()[0]

    def discard_input(self) -> None:
        termios.tcflush(self.fd_in, termios.TCIFLUSH)
        self._pending = ""


# --------------------------------------------------------------------------------------------
# Running things in the foreground of the real terminal

@dataclass
class RunResult:
    code: int | None        # the exit status (128+N for signal N); None when it was stopped
    seconds: float
    timed_out: bool = False


JOB_SIGNALS = (signal.SIGINT, signal.SIGQUIT, signal.SIGTSTP, signal.SIGTTIN, signal.SIGTTOU)


def _take_terminal(fd: int, pgid: int) -> None:
    old = signal.signal(signal.SIGTTOU, signal.SIG_IGN)
    try:
        os.tcsetpgrp(fd, pgid)
    except OSError:
        pass
    finally:
        signal.signal(signal.SIGTTOU, old)


def run_foreground(term: Terminal, argv: list[str], *, cwd: str | None = None,
                   env: dict[str, str] | None = None, timeout: float | None = None) -> RunResult:
    """Run argv as the terminal's foreground job (its own process group, the real terminal as
    stdin/stdout/stderr, the presenter's terminal settings), like a shell runs a command:
    Ctrl-C and Ctrl-\\ reach it, not lab-play. After `timeout` seconds it is stopped."""
    term.restore()
    fd = term.fd_in

    def child_setup() -> None:
        # A job gets the terminal's signals as a shell gives them: lab-play started where
        # SIGINT/SIGQUIT are ignored (from `cmd &` in a script, nohup, some launchers) must not
        # pass that on, or Ctrl-C would never stop a live step.
        for sig in JOB_SIGNALS:
            signal.signal(sig, signal.SIG_DFL)
        os.setpgid(0, 0)
        signal.signal(signal.SIGTTOU, signal.SIG_IGN)
        try:
            os.tcsetpgrp(fd, os.getpgrp())
        except OSError:
            pass
        signal.signal(signal.SIGTTOU, signal.SIG_DFL)

    start = time.monotonic()
    # Popen returns once the child has exec'd, so child_setup has given it the terminal. Not
    # again from here: by then an interactive bash may have handed the terminal on to its own
    # job's group, and taking it back for bash would keep Ctrl-C from that job.
    proc = subprocess.Popen(argv, cwd=cwd, env=env, preexec_fn=child_setup)
    timed_out = False
    deadline = start + timeout if timeout else None
    kill_at = None
    status = None
    try:
        while status is None:
            pid, st = os.waitpid(proc.pid, os.WNOHANG | os.WUNTRACED)
            if pid:
                if os.WIFSTOPPED(st):
                    # Ctrl-Z in a live step: there is no job control here, so carry on.
                    _take_terminal(fd, proc.pid)
                    os.killpg(proc.pid, signal.SIGCONT)
                    continue
                status = st
                break
            now = time.monotonic()
            if deadline and now >= deadline and not timed_out:
                timed_out = True
                _signal_job(fd, proc.pid, signal.SIGTERM)
                kill_at = now + KILL_GRACE
            elif kill_at and now >= kill_at:
                _signal_job(fd, proc.pid, signal.SIGKILL)
                kill_at = None
            time.sleep(0.01)
    finally:
        proc.returncode = 0   # reaped above (or abandoned on an exit path): Popen must not wait
        if status is None:
            _signal_job(fd, proc.pid, signal.SIGTERM)
        _take_terminal(fd, os.getpgrp())
        try:
            term.raw()
            term.discard_input()   # keys typed while it ran were not meant for the next step
        except termios.error:
            pass                   # the terminal hung up: the caller is on its way out
    code = os.waitstatus_to_exitcode(status)
    if code < 0:
        code = 128 - code
    return RunResult(code=code, seconds=time.monotonic() - start, timed_out=timed_out)


def _signal_job(fd: int, pgid: int, sig: int) -> None:
    """Signal the job's process group and whatever group it put in the terminal's foreground
    (an interactive bash gives a pipeline its own group)."""
    groups = {pgid}
    try:
        groups.add(os.tcgetpgrp(fd))
    except OSError:
        pass
    groups.discard(os.getpgrp())
    for g in groups:
        try:
            os.killpg(g, sig)
        except (ProcessLookupError, PermissionError):
            pass


# --------------------------------------------------------------------------------------------
# The player

@dataclass
class Outcome:
    ok: bool
    line: str


def load_rehearsal(path: Path) -> dict[str, dict]:
    """The last rehearsal's verdict per step id ({} when there was none or it is unreadable)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return {s["id"]: s for s in data["talk"]["steps"] if isinstance(s, dict) and "id" in s}
    except (OSError, ValueError, KeyError, TypeError):
        return {}


class Player:
    def __init__(self, talk: Talk, term: Terminal, *, workdir: Path, state_dir: Path, speed: int = 1,
                 rehearsal: dict[str, dict] | None = None) -> None:
        self.talk = talk
        self.term = term
        self.workdir = workdir
        # The presenter's terminal between live steps: directory and exports (shell.py).
        self.shell = ShellState(state_dir, str(workdir))
        self.script = state_dir / "step.sh"
        self.speed = max(1, speed)
        self.rehearsal = rehearsal or {}

    # -- output helpers -----------------------------------------------------------------
    def say(self, text: str, sgr: str = "2") -> None:
        """A message of the player's own on a line of its own."""
        self.term.write(f"\n{self.term.style(text, sgr)}\n")

    def header(self, idx: int) -> None:
        s = self.talk.steps[idx]
        t = self.term
        tags = [s.id] + (["risky"] if s.risky else [])
        rehearsed = self.rehearsal.get(s.id, {}).get("status")
        if rehearsed:
            tags.append(f"rehearsed: {rehearsed}")
        t.write("\n" + t.style(f"── {idx + 1}/{len(self.talk.steps)}  {s.title}", "1;36")
                + "  " + t.style(f"[{' · '.join(tags)}]", "2") + "\n")
        for line in s.notes.rstrip("\n").splitlines():
            t.write(t.style(f"   {line}", "3") + "\n")
        if s.hotkey is not None:
            t.write(t.style(f"   hotkey: {s.hotkey.name}", "2") + "\n")
        if s.open:
            t.write(t.style(f"   open: {s.open}", "2") + "\n")
        if s.command is None:
            t.write(t.style("   (no command here: Enter goes on)", "2") + "\n")

    def show_prompt(self, step: Step, typed: int) -> None:
        here = Path(self.shell.cwd).name or "/"    # where the command will run, like a shell's \W
        self.term.write(self.term.style(f"{here} $", "1;32") + " " + self._render(step.command or "", 0, typed))

    def _render(self, command: str, start: int, end: int) -> str:
        return command[start:end].replace("\n", "\n> ")

    # -- the talk -----------------------------------------------------------------------
    def play(self, start: int = 0) -> int:
        idx = start
        self.term.write(self.term.style(f"{self.talk.title} · {len(self.talk.steps)} steps · "
                                        f"workdir {self.workdir}", "1") + "\n")
        self.term.write(self.term.style(HELP, "2") + "\n")
        while 0 <= idx < len(self.talk.steps):
            try:
                action = self.step(idx)
            except Stopped as sig:
                self.stopped(idx, f"stopped by signal {sig.signum}")
                return 128 + sig.signum
            if action == QUIT:
                self.stopped(idx, "stopped")
                return 130
            idx = max(0, idx - 1) if action == BACK else idx + 1
        self.say(f"── the end ({len(self.talk.steps)} steps)", "1;36")
        return 0

    def stopped(self, idx: int, how: str) -> None:
        s = self.talk.steps[idx]
        try:
            self.say(f"{PROG}: {how} at step {idx + 1}/{len(self.talk.steps)} ({s.id}); "
                     f"resume with: {PROG} --step {s.id}", "0")
        except OSError:
            pass   # no terminal left to tell

    def step(self, idx: int) -> str:
        """Play one step; return NEXT, BACK or QUIT."""
        s = self.talk.steps[idx]
        self.header(idx)
        command = s.command or ""
        typed = 0
        if s.command is not None:
            self.show_prompt(s, typed)
        while True:
            for key in self.term.keys():
                if key in (QUIT, NEXT, BACK):
                    self.term.write("\n")
                    return key
                if key == FALLBACK:
                    if self.fallback(s):
                        return NEXT
                elif key == COPY:
                    self.copy(s)
                elif key == PAUSE:
                    self.say("‖ paused: any key resumes", "1;33")
                    self.term.key()
                    self.term.discard_input()
                elif key == REDRAW:
                    self.term.write("\x1b[H\x1b[2J")
                    self.term.write(self.term.style(HELP, "2") + "\n")
                    self.header(idx)
                elif key == ENTER:
                    if s.command is None:
                        self.term.write("\n")
                        return NEXT
                    if typed < len(command):
                        self.term.write(self._render(command, typed, len(command)))
                        typed = len(command)
                        continue
                    self.term.write("\n")
                    return self.run(idx)
                elif key == BACKSPACE:
                    if typed and command[typed - 1] != "\n":
                        typed -= 1
                        self.term.write("\b \b")
                    continue
                elif key == ESC or s.command is None or typed >= len(command):
                    continue
                else:   # any other key: magic typing
                    end = min(len(command), typed + self.speed)
                    self.term.write(self._render(command, typed, end))
                    typed = end
                    continue
                # A message was printed: the prompt again, as far as it was typed.
                if s.command is not None:
                    self.term.write("\n")
                    self.show_prompt(s, typed)

    def run(self, idx: int) -> str:
        """Enter on a typed command: run it live; a risky step that fails offers the fallback."""
        s = self.talk.steps[idx]
        outcome = self.live(s)
        self.term.write(self.term.style(outcome.line, "1;32" if outcome.ok else "1;31") + "\n")
        if outcome.ok or not s.risky:
            return NEXT
        if not paths.cast_path(s.id).is_file():
            self.say(f"no recording for step {s.id!r} to fall back on ({REHEARSE_HINT})", "1;33")
            return NEXT
        self.term.write(self.term.style("Play the rehearsal recording instead? [Y/n] ", "1;33"))
        self.term.discard_input()
        while True:
            key = self.term.key()
            if key in (ENTER, FALLBACK, "y", "Y"):
                self.term.write("yes\n")
                self.fallback(s)
                return NEXT
            if key in ("n", "N", ESC, NEXT):
                self.term.write("no\n")
                return NEXT
            if key in (QUIT, BACK):
                self.term.write("\n")
                return key

    def live(self, s: Step) -> Outcome:
        assert s.command is not None and s.expect is not None
        env = dict(os.environ)
        capture = s.risky and s.expect.output is not None
        log = None
        self.script.write_text(self.shell.script(s.command))
        argv = self.shell.argv(self.script)
        if capture:
            # The expected output can only be checked with a copy of it: util-linux script(1)
            # relays the command through a pty of its own (still a terminal, sized like this
            # one) and keeps that copy.
            fdesc, log = tempfile.mkstemp(prefix="lab-play-", suffix=".log")
            os.close(fdesc)
            env["SHELL"] = "/bin/bash"
            argv = ["script", "-q", "-e", "-c", shlex.join(argv), log]
        try:
            res = run_foreground(self.term, argv, cwd=self.shell.base, env=env,
                                 timeout=s.timeout if s.risky else None)
            output = _script_output(log) if log else ""
        finally:
            self.shell.update()
            if log:
                os.unlink(log)
        took = f"{res.seconds:.1f} s"
        if res.timed_out:
            return Outcome(False, f"✗ still running after {s.timeout} s (the step's timeout): stopped")
        if res.code != s.expect.exit:
            return Outcome(False, f"✗ exit {res.code}, expected {s.expect.exit} · {took}")
        if capture and not re.search(s.expect.output or "", output, re.MULTILINE):
            return Outcome(False, f"✗ the output did not show {s.expect.output!r} · {took}")
        if s.expect.url:
            got = _http_status(s.expect.url)
            if got != str(s.expect.status):
                return Outcome(False, f"✗ {s.expect.url} answered {got}, expected {s.expect.status}")
        return Outcome(True, f"✓ exit {res.code} · {took}")

    def fallback(self, s: Step) -> bool:
        """Play the step's rehearsal recording; False (and why) when there is none."""
        cast = paths.cast_path(s.id)
        if not cast.is_file():
            self.say(f"no recording for step {s.id!r} ({cast} is missing): {REHEARSE_HINT}", "1;33")
            return False
        player = shutil.which("asciinema")
        if player is None:
            self.say("asciinema is not installed: apt-get install asciinema (the talk role installs it)",
                     "1;33")
            return False
        when = self.rehearsal.get(s.id, {}).get("status")
        self.say(f"▶ the rehearsal recording of {s.id!r}" + (f" (rehearsed: {when})" if when else "")
                 + ", at its original pace (space pauses, Ctrl-C stops)", "1;35")
        run_foreground(self.term, [player, "play", str(cast)], cwd=str(self.workdir))
        self.term.discard_input()
        self.say("■ end of the recording", "1;35")
        return True

    def copy(self, s: Step) -> None:
        text = s.hotkey.snippet if s.hotkey and s.hotkey.snippet is not None else s.command
        if not text:
            self.say(f"step {s.id!r} has no snippet or command to copy", "1;33")
            return
        selection = s.hotkey.clipboard if s.hotkey else "clipboard"
        if os.environ.get("DISPLAY") and shutil.which("xclip"):
            targets = ["clipboard", "primary"] if selection == "both" else [selection]
            try:
                for target in targets:
                    subprocess.run(["xclip", "-selection", target, "-i"], input=text.encode(),
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                   start_new_session=True, check=True, timeout=5)
                missing = [t for t in targets if not _selection_holds(t, text.encode())]
            except (subprocess.SubprocessError, OSError) as exc:
                self.say(f"xclip failed ({exc}); the snippet:", "1;33")
                self.term.write(text if text.endswith("\n") else text + "\n")
                return
            if missing:
                self.say(f"the {' and '.join(missing)} selection does not hold the snippet after "
                         f"{SELECTION_WAIT:.0f} s (a clipboard manager rewriting it?); the snippet:", "1;33")
                self.term.write(text if text.endswith("\n") else text + "\n")
                return
            self.say(f"⧉ copied the snippet of {s.id!r} to the {' and '.join(targets)} selection")
            return
        # No X display (SSH, a console): OSC 52 asks the terminal itself to set its clipboard,
        # and the snippet is printed for selecting by hand where the terminal ignores OSC 52.
        b64 = base64.b64encode(text.encode()).decode()
        self.term.write(f"\x1b]52;c;{b64}\x07")
        self.say(f"⧉ the snippet of {s.id!r} (sent to the terminal's clipboard with OSC 52):")
        self.term.write(text if text.endswith("\n") else text + "\n")


# xclip's parent returns before the child that serves the selection has taken it: "copied" is
# said only once a read-back holds the snippet (a paste right after Ctrl-Y got the old one).
SELECTION_WAIT = 3.0


def _selection_holds(target: str, data: bytes) -> bool:
    deadline = time.monotonic() + SELECTION_WAIT
    while True:
        out = subprocess.run(["xclip", "-selection", target, "-o"], capture_output=True,
                             timeout=5, check=False)
        if out.returncode == 0 and out.stdout == data:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)


def _script_output(log: str) -> str:
    try:
        text = Path(log).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    lines = text.splitlines()
    if lines and lines[0].startswith("Script started on "):
        lines = lines[1:]
    if lines and lines[-1].startswith("Script done on "):
        lines = lines[:-1]
    return "\n".join(lines)


def _http_status(url: str) -> str:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return str(resp.status)
    except urllib.error.HTTPError as exc:
        return str(exc.code)
    except (urllib.error.URLError, OSError) as exc:
        return f"nothing ({getattr(exc, 'reason', exc)})"


# --------------------------------------------------------------------------------------------

def _on_signal(signum: int, _frame: object) -> None:
    raise Stopped(signum)


def prepare(a: argparse.Namespace) -> tuple[Talk, int, Path]:
    """Everything that can be checked before the terminal is touched."""
    talk_path = Path(a.talk)
    if not talk_path.exists():
        raise PlayError(f"{talk_path}: no such talk file (give --talk FILE, or install the talk: make lab)")
    try:
        talk = load(talk_path)
    except TalkError as exc:
        raise PlayError(str(exc)) from None
    start = 0
    if a.step:
        ids = [s.id for s in talk.steps]
        if a.step not in ids:
            raise PlayError(f"{talk_path}: no step {a.step!r} (the steps: {', '.join(ids)})")
        start = ids.index(a.step)
    workdir = Path(os.path.expanduser(a.workdir or talk.workdir))
    try:
        workdir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise PlayError(f"cannot use the workdir {workdir}: {exc.strerror} (give --workdir DIR)") from None
    if not (os.isatty(0) and os.isatty(1)):
        raise PlayError("needs a terminal: run it in the presenter's terminal (ssh -t, tmux work too)")
    return talk, start, workdir


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog=PROG, description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--talk", default=os.environ.get("DEMOLAB_TALK"),
                    help="the talk file (default: $DEMOLAB_TALK, else the installed talk)")
    ap.add_argument("--step", help="start at this step id")
    ap.add_argument("--workdir", help="where the commands run (default: the talk's workdir)")
    ap.add_argument("--speed", type=int, default=1, help="characters typed per key press (default 1)")
    a = ap.parse_args(argv)
    try:
        a.talk = a.talk or str(paths.TALK_FILE)
        talk, start, workdir = prepare(a)
        rehearsal = load_rehearsal(paths.REHEARSAL_JSON)
    except (PlayError, paths.LabNotProvisioned) as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 1
    term = Terminal(0, 1)
    handlers = {sig: signal.signal(sig, _on_signal) for sig in (signal.SIGTERM, signal.SIGHUP)}
    state_dir = Path(tempfile.mkdtemp(prefix="lab-play-"))
    try:
        term.raw()
        player = Player(talk, term, workdir=workdir, state_dir=state_dir, speed=a.speed,
                        rehearsal=rehearsal)
        return player.play(start)
    except EOFError:
        return 1
    except KeyboardInterrupt:
        return 130
    except Stopped as sig:
        return 128 + sig.signum
    finally:
        term.restore()
        try:
            term.write("\x1b[0m")
        except OSError:
            pass
        for sig, old in handlers.items():
            signal.signal(sig, old)
        shutil.rmtree(state_dir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
