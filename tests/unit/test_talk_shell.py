"""The state a step leaves for the next (roles/talk/files/demolab_talk/shell.py), shared by the
rehearsal and lab-play: real interactive bash runs with a fixture ~/.bashrc, one after another."""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "roles" / "talk" / "files"))

from demolab_talk.shell import CD_FAILED, ShellState  # noqa: E402


class Steps:
    def __init__(self, tmp: Path) -> None:
        self.home = tmp / "home"
        self.home.mkdir()
        (self.home / ".bashrc").write_text("export FROM_RC=rc\nexport STAMP=$RANDOM$RANDOM\n")
        self.work = tmp / "work"
        self.work.mkdir()
        state = tmp / "state"
        state.mkdir()
        self.state = ShellState(state, str(self.work))

    def run(self, command: str) -> tuple[int, int | None, str]:
        script = self.state.dir / "step.sh"
        script.write_text(self.state.script(command, stdin_null=True))
        done = subprocess.run(self.state.argv(script), cwd=self.state.base, capture_output=True, text=True,
                              env={"HOME": str(self.home), "PATH": "/usr/bin:/bin", "TERM": "dumb"},
                              stdin=subprocess.DEVNULL, timeout=30, check=False)
        return done.returncode, self.state.update(), done.stdout


@pytest.fixture
def steps(tmp_path: Path) -> Steps:
    return Steps(tmp_path)


def test_cd_and_exports_carry_byte_exact(steps: Steps):
    value = "it's \"quoted\" $HOME `x`\nsecond line"
    steps.run(f"mkdir -p a/b && cd a/b && export ODD={shlex.quote(value)}")
    assert steps.state.cwd == str(steps.work / "a" / "b")
    assert steps.state.carried == {"ODD": value}
    _, rc, out = steps.run('pwd; printf "%s" "$ODD"')
    assert rc == 0
    assert out == f"{steps.work}/a/b\n{value}"


def test_only_what_differs_from_bashrc_is_carried(steps: Steps):
    steps.run("export FROM_RC=changed PLAIN=1; NOT_EXPORTED=1")
    # STAMP differs in every shell (bashrc gives it anew): not the step's doing, not carried.
    assert steps.state.carried == {"FROM_RC": "changed", "PLAIN": "1"}
    _, _, out = steps.run('echo "$FROM_RC $PLAIN ${NOT_EXPORTED-unset}"; unset PLAIN; export FROM_RC=rc')
    assert out == "changed 1 unset\n"
    assert steps.state.carried == {}


def test_exit_status_kept_and_state_taken_on_failure(steps: Steps):
    code, rc, _ = steps.run("cd /tmp && export AFTER=fail && exit 3")
    assert (code, rc) == (3, 3)
    assert steps.state.cwd == "/tmp"
    assert steps.state.carried == {"AFTER": "fail"}


def test_a_directory_gone_starts_over_in_the_base(steps: Steps):
    steps.run("mkdir gone && cd gone")
    assert steps.state.cwd == str(steps.work / "gone")
    (steps.work / "gone").rmdir()
    code, rc, _ = steps.run("echo never")
    assert (code, rc) == (CD_FAILED, CD_FAILED)        # bash's own cd error, the command not run
    assert steps.state.cwd == str(steps.work)
    _, rc, out = steps.run("pwd")
    assert (rc, out) == (0, f"{steps.work}\n")


def test_a_run_that_left_no_state_changes_nothing(steps: Steps):
    steps.run("cd /tmp && export KEPT=1")
    code, rc, _ = steps.run("cd / && export LOST=1 && exec true")   # exec: no trap ran
    assert (code, rc) == (0, None)
    assert steps.state.cwd == "/tmp"
    assert steps.state.carried == {"KEPT": "1"}
