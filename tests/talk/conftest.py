"""tests/talk: lab-play in a real pseudo-terminal (pexpect), its screen read with pyte.

Every test writes a small talk file, records real fallbacks with `asciinema rec`, and runs
`python -m demolab_talk.play` with DEMOLAB_LAB_JSON naming a lab.json rooted in its tmp_path, HOME
at a tmp home whose ~/.bashrc is the presenter's shell.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pexpect
import pyte
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "harness"))
import labjson  # noqa: E402

TALK_LIB = REPO / "roles" / "talk" / "files"
ROWS, COLS = 60, 200

# Keys as a terminal sends them.
CTRL_C, CTRL_F, CTRL_N, CTRL_P, CTRL_Y, CTRL_Z, CTRL_L = "\x03", "\x06", "\x0e", "\x10", "\x19", "\x1a", "\x0c"
RIGHT, LEFT, ENTER, BACKSPACE = "\x1b[C", "\x1b[D", "\r", "\x7f"


class Screen:
    """A process in a pty of ROWS x COLS, its output fed to a pyte screen as it arrives."""

    def __init__(self, child: pexpect.spawn) -> None:
        self.child = child
        self.screen = pyte.Screen(COLS, ROWS)
        self.stream = pyte.ByteStream(self.screen)
        self.raw = b""

    def pump(self, timeout: float = 0.02) -> None:
        while True:
            try:
                data = self.child.read_nonblocking(65536, timeout=timeout)
            except pexpect.TIMEOUT:
                return
            except pexpect.EOF:
                return
            self.raw += data
            self.stream.feed(data)
            timeout = 0

    def text(self) -> str:
        self.pump()
        return "\n".join(line.rstrip() for line in self.screen.display).rstrip()

    def wait(self, pattern: str, timeout: float = 10) -> re.Match:
        deadline = time.monotonic() + timeout
        while True:
            self.pump(0.02)
            found = re.search(pattern, self.text(), re.MULTILINE)
            if found:
                return found
            if time.monotonic() > deadline:
                pytest.fail(f"{pattern!r} not on the screen after {timeout} s; the screen:\n{self.text()}")

    def wait_cursor_line(self, expected: str, timeout: float = 10) -> None:
        """Until the cursor's line reads `expected` (a loaded machine echoes late)."""
        deadline = time.monotonic() + timeout
        while (line := self.cursor_line()) != expected:
            assert time.monotonic() < deadline, f"the cursor's line is {line!r}, not {expected!r}"

    def cursor_line(self) -> str:
        self.pump(0.05)
        return self.screen.display[self.screen.cursor.y].rstrip()

    def send(self, keys: str, pause: float = 0.0) -> None:
        for key in [keys] if not pause else list(keys):
            self.child.send(key)
            if pause:
                time.sleep(pause)

    def settle(self, seconds: float = 0.3) -> str:
        """The screen once the output has stopped changing for a moment."""
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.pump(0.05)
        return self.text()


class Lab:
    """A talk file, its rehearsal state (casts) and the presenter's environment, in tmp_path."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.home = tmp / "home"
        self.state = tmp / "state"
        self.etc = tmp / "etc"
        self.workdir = tmp / "talkdir"
        self.casts = self.state / "rehearsal" / "casts"
        for d in (self.home, self.casts, self.etc):
            d.mkdir(parents=True)
        self.lab_json = labjson.write(tmp)
        (self.home / ".bashrc").write_text(
            "# the presenter's shell (what presenter_kit adds to ~/.bashrc)\n"
            "alias greet='echo greeted-by-the-alias'\n"
            "export TALK_ENV=from-bashrc\n")
        self.talk = tmp / "talk.yml"
        self.children: list[pexpect.spawn] = []

    def env(self, **extra: str) -> dict[str, str]:
        env = {
            "PATH": f"{Path(sys.executable).parent}:/usr/local/bin:/usr/bin:/bin",
            "HOME": str(self.home), "TERM": "xterm", "LANG": "C.UTF-8",
            "PYTHONPATH": str(TALK_LIB), "DEMOLAB_LAB_JSON": str(self.lab_json),
            "ASCIINEMA_CONFIG_HOME": str(self.tmp / "asciinema"),
        }
        env.update(extra)
        return env

    def write_talk(self, steps: list[dict], **top: object) -> Path:
        doc = {"title": "The test talk", "workdir": str(self.workdir), **top, "steps": steps}
        self.talk.write_text(yaml.safe_dump(doc, sort_keys=False))
        return self.talk

    def record(self, step_id: str, script: str) -> Path:
        """A real fallback: `asciinema rec` of a shell script, where the rehearsal puts it."""
        cast = self.casts / f"{step_id}.cast"
        subprocess.run(["asciinema", "rec", "-q", "--overwrite", "-c", script, str(cast)],
                       env=self.env(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                       check=True, timeout=60)
        return cast

    def argv(self, *args: str) -> list[str]:
        return ["-m", "demolab_talk.play", "--talk", str(self.talk), *args]

    def play(self, *args: str, preexec_fn=None, **env: str) -> Screen:
        child = pexpect.spawn(sys.executable, self.argv(*args), env=self.env(**env),
                              dimensions=(ROWS, COLS), cwd=str(self.tmp), preexec_fn=preexec_fn)
        self.children.append(child)
        return Screen(child)

    def shell(self) -> Screen:
        """A plain interactive bash in a pty (to run lab-play from, as the presenter does)."""
        child = pexpect.spawn("bash", ["--norc", "--noprofile", "-i"], env=self.env(PS1="PRESENTER$ "),
                              dimensions=(ROWS, COLS), cwd=str(self.tmp))
        self.children.append(child)
        return Screen(child)

    def close(self) -> None:
        for child in self.children:
            if child.isalive():
                child.terminate(force=True)


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    lab = Lab(tmp_path)
    try:
        yield lab
    finally:
        lab.close()


@pytest.fixture
def xdisplay(tmp_path: Path) -> Iterator[str]:
    """A real X server (Xvfb) for the clipboard; its display number chosen by Xvfb itself."""
    read, write = os.pipe()
    proc = subprocess.Popen(["Xvfb", "-displayfd", str(write), "-nolisten", "tcp", "-screen", "0", "640x480x24"],
                            pass_fds=(write,), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.close(write)
    try:
        with os.fdopen(read) as f:
            number = f.readline().strip()
        assert number, "Xvfb did not start"
        yield f":{number}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)
