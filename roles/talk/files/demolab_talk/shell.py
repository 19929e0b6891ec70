"""The presenter's terminal between steps: the directory it is in and what it exported.

One mechanism for the rehearsal (rehearse.py) and the stage (play.py), so the talk runs on
stage exactly as it was rehearsed. Each step's command runs in its own interactive bash
(`/bin/bash -i SCRIPT`: the presenter's ~/.bashrc first), from a script that

  1. writes the shell's pid (the rehearsal kills the step's session by it on a timeout) and
     the environment as ~/.bashrc left it (`env.before`),
  2. sets an EXIT trap that writes the exit status, the exported environment (`env -0`) and
     the working directory (`pwd`) to the state directory,
  3. exports what earlier steps exported and `cd`s where the last one ended,
  4. runs the step's command as typed.

After the run, update() reads those files: the next step starts in that directory with every
exported variable whose value differs from what ~/.bashrc gives (a variable the step unset is
gone; shell variables that were not exported, aliases and functions are not carried, as with
any child shell). A run that left no state (killed with SIGKILL, `exec`ed another program)
changes nothing. A directory that no longer exists makes the next step fail with bash's own
`cd` error (exit 97) and start over in the base directory.
"""

from __future__ import annotations

import os
import re
import shlex
from pathlib import Path

BASH = "/bin/bash"
CD_FAILED = 97
# Never carried: the shell and the terminal set these themselves.
NOT_CARRIED = {"PWD", "OLDPWD", "SHLVL", "_", "ASCIINEMA_REC", "COLUMNS", "LINES", "TERM"}
NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def parse_env0(data: bytes) -> dict[str, str]:
    """`env -0` output as a dict (names that are not shell names are left out)."""
    out = {}
    for item in data.decode(errors="replace").split("\0"):
        key, sep, value = item.partition("=")
        if sep and NAME.match(key):
            out[key] = value
    return out


class ShellState:
    """Where the next step starts and what it inherits; the files the steps' scripts write."""

    def __init__(self, state_dir: Path, cwd: str) -> None:
        self.dir = state_dir
        self.base = cwd
        self.cwd = cwd
        self.carried: dict[str, str] = {}
        self.pid_file = state_dir / "pid"
        self.rc_file = state_dir / "rc"
        self.before_file = state_dir / "env.before"
        self.env_file = state_dir / "env"
        self.cwd_file = state_dir / "cwd"

    def argv(self, script: Path) -> list[str]:
        return [BASH, "-i", str(script)]

    def script(self, command: str, *, stdin_null: bool = False) -> str:
        """The text of the step's script (clears the previous run's files)."""
        for f in (self.pid_file, self.rc_file, self.before_file, self.env_file, self.cwd_file):
            f.unlink(missing_ok=True)
        q = shlex.quote
        exports = "".join(f"export {k}={q(v)}\n" for k, v in self.carried.items())
        return (
            f"echo $$ > {q(str(self.pid_file))}\n"
            f"command -p env -0 > {q(str(self.before_file))}\n"
            f"trap '__demolab_rc=$?; command -p env -0 > {q(str(self.env_file))}; "
            f"pwd > {q(str(self.cwd_file))}; echo $__demolab_rc > {q(str(self.rc_file))}' EXIT\n"
            f"{exports}cd {q(self.cwd)} || exit {CD_FAILED}\n"
            + ("exec < /dev/null\n" if stdin_null else "")
            + f"{command}\n")

    def update(self) -> int | None:
        """Take in what the run left: the next step's directory and variables; the exit status
        the trap saw (None when the shell ended without running it)."""
        try:
            now = parse_env0(self.env_file.read_bytes())
        except OSError:
            return None
        try:
            before = parse_env0(self.before_file.read_bytes())
        except OSError:
            before = {}
        self.carried = {k: v for k, v in now.items()
                        if k not in NOT_CARRIED and not k.startswith("BASH_FUNC_") and before.get(k) != v}
        try:
            cwd = self.cwd_file.read_text().rstrip("\n")
        except OSError:
            cwd = ""
        self.cwd = cwd if cwd and os.path.isdir(cwd) else self.base
        try:
            return int(self.rc_file.read_text().strip())
        except (OSError, ValueError):
            return None
