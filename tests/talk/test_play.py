"""lab-play on a real pty: magic typing, live runs, skip/back, fallbacks, copy, pause, and the
terminal restored whatever way it ends."""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pexpect
import pytest
from conftest import (
    BACKSPACE,
    COLS,
    CTRL_C,
    CTRL_F,
    CTRL_L,
    CTRL_N,
    CTRL_P,
    CTRL_Y,
    CTRL_Z,
    ENTER,
    LEFT,
    RIGHT,
    ROWS,
    Lab,
)

HELLO = ('echo "sum=$((6*7)) in $(pwd)"; [ "$(tty)" = "$(readlink /proc/$PPID/fd/0)" ] && echo on-the-tty;'
         ' stty size; greet; echo "$TALK_ENV"')


def three_steps(lab: Lab, **second: object) -> None:
    lab.write_talk([
        {"id": "first", "title": "The first step", "notes": "Say something clever.\nThen type.",
         "command": "touch ran-first && echo first-ran"},
        {"id": "second", "title": "The second step", "command": "touch ran-second && echo second-ran",
         **second},
        {"id": "third", "title": "The third step", "command": "echo third-ran"},
    ])


def test_keys_type_the_command_and_enter_runs_it_live(lab: Lab):
    lab.write_talk([{"id": "hello", "title": "Hello", "notes": "Speaker notes here.", "command": HELLO},
                    {"id": "bye", "title": "Bye", "command": "echo bye"}])
    s = lab.play()
    s.wait(r"── 1/2  Hello")
    s.wait(r"Speaker notes here\.")
    s.wait(r"keys: any key types")                       # the help line
    s.wait_cursor_line("talkdir $")
    s.send("qwertyuiop", pause=0.01)                    # ten key presses, ten characters
    s.wait_cursor_line("talkdir $ " + HELLO[:10])
    s.send(BACKSPACE)
    s.wait_cursor_line("talkdir $ " + HELLO[:9])
    s.send("x" * (len(HELLO) - 9 + 5))                  # keys past the end type nothing more
    s.wait(re.escape(HELLO) + "$")
    assert not (lab.workdir / "sum=42").exists()
    assert "sum=42" not in s.text()                     # only typed so far: nothing ran
    s.send(ENTER)
    s.wait(rf"^sum=42 in {re.escape(str(lab.workdir))}$")   # computed by bash, in the workdir
    s.wait(r"^on-the-tty$")                              # the command has lab-play's own terminal
    s.wait(rf"^{ROWS} {COLS}$")                             # ... of the presenter's size
    s.wait(r"^greeted-by-the-alias$")                    # the presenter's ~/.bashrc: aliases
    s.wait(r"^from-bashrc$")                             # ... and environment
    s.wait(r"✓ exit 0")
    s.wait(r"── 2/2  Bye")


def test_enter_finishes_typing_then_runs(lab: Lab):
    lab.write_talk([{"id": "one", "title": "One", "command": "echo finished-$((1+1))"}])
    s = lab.play()
    s.wait(r"talkdir \$$")
    s.send("ab")
    s.send(ENTER)                                        # the rest typed at once, not run yet
    s.wait(r"talkdir \$ echo finished-\$\(\(1\+1\)\)$")
    assert "finished-2" not in s.settle()
    s.send(ENTER)
    s.wait(r"^finished-2$")
    s.wait(r"── the end \(1 steps\)")
    s.child.expect(pexpect.EOF, timeout=10)
    s.child.close()
    assert s.child.exitstatus == 0


def test_skip_and_back_move_between_steps_without_running(lab: Lab):
    three_steps(lab)
    s = lab.play()
    s.wait(r"── 1/3  The first step")
    s.send(CTRL_N)
    s.wait(r"── 2/3  The second step")
    s.send(RIGHT)
    s.wait(r"── 3/3  The third step")
    s.send(CTRL_P)
    s.wait(r"(?s)── 3/3.*── 2/3  The second step")
    s.send(LEFT)
    s.wait(r"(?s)── 3/3.*── 2/3.*── 1/3  The first step")
    s.send("k" * 40 + ENTER)
    s.wait(r"^first-ran$")
    s.wait(r"(?s)first-ran.*── 2/3  The second step")
    assert (lab.workdir / "ran-first").exists()
    assert not (lab.workdir / "ran-second").exists()     # skipped twice, never run


def test_cd_and_exports_carry_to_the_next_steps_as_rehearsed(lab: Lab):
    lab.write_talk([
        {"id": "go", "title": "Go somewhere", "command": "mkdir -p sub && cd sub && export FOO='bar baz'"},
        {"id": "show", "title": "Show it", "risky": True, "expect": {"output": "^foo=bar baz$"},
         "command": 'echo "pwd=$PWD"; echo "foo=$FOO"; cd .. && unset FOO && export BAR=$TALK_ENV-2'},
        {"id": "again", "title": "And again", "command": 'echo "now=$PWD foo=${FOO-unset} bar=$BAR"'},
        {"id": "end", "title": "The end", "command": "true"},
    ])
    s = lab.play()
    s.wait(r"── 1/4  Go somewhere")
    s.wait_cursor_line("talkdir $")
    s.send(ENTER + ENTER)
    s.wait(r"── 2/4  Show it")
    s.wait(r"^sub \$$")                                   # the prompt is where it will run
    s.send(ENTER + ENTER)                                 # risky with an expect: the script(1) path
    s.wait(rf"^pwd={re.escape(str(lab.workdir))}/sub$")
    s.wait(r"^foo=bar baz$")
    s.wait(r"✓ exit 0")
    s.wait(r"── 3/4  And again")
    s.wait(r"^talkdir \$$")
    s.send(ENTER + ENTER)
    s.wait(rf"^now={re.escape(str(lab.workdir))} foo=unset bar=from-bashrc-2$")
    s.wait(r"── 4/4  The end")
    s.send(CTRL_P)                                        # back: runs nothing, the state stays
    s.wait(r"(?s)── 4/4.*── 3/4  And again")
    s.send(CTRL_P)
    s.wait(r"(?s)── 4/4.*── 3/4.*── 2/4  Show it")
    s.wait_cursor_line("talkdir $")                 # what the last live run left, not sub


def test_start_at_a_step_with_the_rehearsal_verdict(lab: Lab):
    three_steps(lab)
    (lab.state / "rehearsal.json").write_text(json.dumps({"talk": {"steps": [
        {"id": "second", "status": "pass"}, {"id": "third", "status": "fail", "reason": "exit 1"}]}}))
    s = lab.play("--step", "third")
    s.wait(r"── 3/3  The third step  \[third · rehearsed: fail\]")
    assert "1/3" not in s.text()
    s.send(CTRL_P)
    s.wait(r"── 2/3  The second step  \[second · rehearsed: pass\]")


def test_fallback_key_plays_the_recording_at_its_original_pace(lab: Lab):
    three_steps(lab)
    lab.record("second", "printf 'REC-one\\n'; sleep 1.2; printf 'REC-two\\n'")
    s = lab.play("--step", "second")
    s.wait(r"── 2/3  The second step")
    s.send("abc")
    s.send(CTRL_F)
    s.wait(r"^REC-one", timeout=10)
    seen_one = time.monotonic()
    s.wait(r"^REC-two", timeout=10)
    gap = time.monotonic() - seen_one
    assert 0.9 < gap < 3, f"recorded 1.2 s apart, played {gap:.2f} s apart"
    s.wait(r"■ end of the recording")
    s.wait(r"── 3/3  The third step")
    assert not (lab.workdir / "ran-second").exists()     # the fallback replaced the live run


def test_fallback_without_a_recording_says_rehearse_first(lab: Lab):
    three_steps(lab)
    s = lab.play()
    s.wait(r"── 1/3")
    s.send("ab")
    s.send(CTRL_F)
    s.wait(r"no recording for step 'first' \(.*first\.cast is missing\): rehearse first: make rehearse")
    s.wait(r"talkdir \$ to$")                            # back at the prompt, as typed so far
    s.send("u")
    s.wait(r"talkdir \$ tou$")


def test_risky_failure_offers_the_fallback_and_yes_plays_it(lab: Lab):
    lab.write_talk([
        {"id": "breaks", "title": "It breaks on stage", "command": "echo live-attempt; exit 3", "risky": True},
        {"id": "after", "title": "After", "command": "echo after"},
    ])
    lab.record("breaks", "printf 'REC-worked-at-home\\n'")
    s = lab.play()
    s.wait(r"── 1/2  It breaks")
    s.send(ENTER + ENTER)
    s.wait(r"^live-attempt$")
    s.wait(r"✗ exit 3, expected 0")
    s.wait(r"Play the rehearsal recording instead\? \[Y/n\]$")
    s.send("y")
    s.wait(r"^REC-worked-at-home")
    s.wait(r"── 2/2  After")


@pytest.mark.parametrize("step, why", [
    ({"command": "echo nope", "expect": {"output": "^PONG$"}}, r"✗ the output did not show '\^PONG\$'"),
    ({"command": "sleep 30", "timeout": 1}, r"✗ still running after 1 s \(the step's timeout\): stopped"),
], ids=["expect-output", "timeout"])
def test_risky_failures_offer_the_fallback_no_goes_on(lab: Lab, step: dict, why: str):
    lab.write_talk([{"id": "shaky", "title": "Shaky", "risky": True, **step},
                    {"id": "after", "title": "After", "command": "echo after"}])
    lab.record("shaky", "printf 'REC-shaky\\n'")
    s = lab.play()
    s.wait(r"── 1/2  Shaky")
    t0 = time.monotonic()
    s.send(ENTER + ENTER)
    s.wait(why, timeout=15)
    assert time.monotonic() - t0 < 8
    s.wait(r"\[Y/n\]$")
    s.send("n")
    s.wait(r"── 2/2  After")
    assert "REC-shaky" not in s.text()


def test_risky_success_with_expected_output_goes_on(lab: Lab):
    lab.write_talk([{"id": "ok", "title": "Fine", "risky": True, "command": "printf 'PO''NG\\n'",
                     "expect": {"output": "^PONG$"}},
                    {"id": "after", "title": "After", "command": "echo after"}])
    s = lab.play()
    s.wait(r"── 1/2  Fine")
    s.send(ENTER + ENTER)
    s.wait(r"^PONG")
    s.wait(r"✓ exit 0")
    s.wait(r"── 2/2  After")
    assert "[Y/n]" not in s.text()


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGQUIT, signal.SIG_IGN)


# Also when lab-play itself was started with SIGINT ignored (as `cmd &` in a script or nohup
# leave it): a shell gives its jobs the default signals back, and so must lab-play.
@pytest.mark.parametrize("start", [None, _ignore_sigint], ids=["from-a-shell", "sigint-ignored"])
def test_ctrl_c_reaches_the_live_command_not_the_player(lab: Lab, start):
    lab.write_talk([{"id": "server", "title": "A server", "command": "echo serving; sleep 60"},
                    {"id": "after", "title": "After", "command": "echo after"}])
    s = lab.play(preexec_fn=start)
    s.wait(r"── 1/2")
    s.send(ENTER + ENTER)
    s.wait(r"^serving$")
    _wait_in_foreground(s.child.pid, "sleep")   # as a presenter would: once the job runs
    s.send(CTRL_C)
    s.wait(r"✗ exit 130, expected 0")
    s.wait(r"── 2/2  After")
    assert s.child.isalive()


def test_copy_without_a_display_sends_osc52_and_prints_the_snippet(lab: Lab):
    lab.write_talk([{"id": "redis", "title": "Redis", "command": "redis-cli ping",
                     "hotkey": {"name": "redis", "snippet": "r = redis.Redis(port=6379)\nr.ping()\n"}}])
    s = lab.play()
    s.wait(r"── 1/1  Redis")
    s.send(CTRL_Y)
    s.wait(r"^r = redis.Redis\(port=6379\)\nr.ping\(\)$")
    b64 = base64.b64encode(b"r = redis.Redis(port=6379)\nr.ping()\n")
    assert b"\x1b]52;c;" + b64 + b"\x07" in s.raw
    s.wait(r"talkdir \$$")


def test_copy_with_a_display_reaches_the_clipboard_byte_exact(lab: Lab, xdisplay: str):
    snippet = "from bson import ObjectId\n\tObjectId('4e5d')  # tab, quotes, ü\n"
    lab.write_talk([{"id": "objectid", "title": "ObjectId", "notes": "no command",
                     "hotkey": {"name": "oid", "snippet": snippet}}])
    s = lab.play(DISPLAY=xdisplay)
    s.wait(r"── 1/1  ObjectId")
    s.send(CTRL_Y)
    s.wait(r"copied the snippet of 'objectid' to the clipboard selection")
    got = subprocess.run(["xclip", "-o", "-selection", "clipboard"], env={"DISPLAY": xdisplay},
                         capture_output=True, check=True, timeout=10).stdout
    assert got == snippet.encode()


def test_pause_swallows_keys_until_resumed(lab: Lab):
    lab.write_talk([{"id": "one", "title": "One", "command": "echo one"}])
    s = lab.play()
    s.wait(r"talkdir \$$")
    s.send("a")
    s.wait(r"talkdir \$ e$")
    s.send(CTRL_Z)
    s.wait(r"‖ paused: any key resumes")
    s.send("z")                                          # resumes, types nothing
    s.wait(r"(?s)paused.*talkdir \$ e$")
    s.send("b")
    s.wait(r"talkdir \$ ec$")
    s.send(CTRL_L)                                       # redraw: a clean screen with the step
    s.wait(r"^keys: any key types")
    s.wait(r"(?s)── 1/1  One.*talkdir \$ ec$")
    assert "paused" not in s.text()


def _stty(shell) -> str:
    """The shell's terminal settings (stty -g), read off the screen."""
    pattern = r"PRESENTER\$ stty -g\n([0-9a-f:]+)$"
    seen = len(re.findall(pattern, shell.text(), re.MULTILINE))
    shell.send("stty -g\r")
    deadline = time.monotonic() + 10
    while len(found := re.findall(pattern, shell.text(), re.MULTILINE)) <= seen:
        assert time.monotonic() < deadline, shell.text()
        time.sleep(0.05)
    return found[-1]


def test_terminal_restored_after_ctrl_c_and_sigterm(lab: Lab):
    lab.write_talk([{"id": "one", "title": "One", "command": "echo one"}])
    sh = lab.shell()
    sh.wait(r"PRESENTER\$$")
    before = _stty(sh)
    play = f"{sys.executable} {' '.join(lab.argv())}"
    sh.send(play + "\r")
    sh.wait(r"── 1/1  One")
    sh.send("ab")
    sh.send(CTRL_C)
    sh.wait(r"stopped at step 1/1 \(one\); resume with: lab-play --step one")
    sh.wait(r"PRESENTER\$$")
    assert _stty(sh) == before
    sh.send("echo rc=$?\r")                              # the status of stty; lab-play's was 130
    # SIGTERM (as from a closing window or ssh) on the way: the terminal comes back too.
    sh.send("clear; " + play + "; echo rc=$?\r")
    sh.wait(r"── 1/1  One")
    sh.send("xy")
    sh.wait(r"talkdir \$ ec$")
    pid = _child_of(sh.child.pid)
    os.kill(pid, signal.SIGTERM)
    sh.wait(r"lab-play: stopped by signal 15 at step 1/1 \(one\); resume with: lab-play --step one")
    sh.wait(r"^rc=143$")
    assert _stty(sh) == before


def _wait_in_foreground(ancestor: int, program: str, timeout: float = 10) -> None:
    """Until `program`, under `ancestor`, is the terminal's foreground process group: the
    interactive bash running a step starts it a moment after printing what came before it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for proc in Path("/proc").glob("[0-9]*"):
            try:
                stat = (proc / "stat").read_text()
            except OSError:
                continue
            comm = stat[stat.index("(") + 1:stat.rindex(")")]
            fields = stat[stat.rindex(")") + 2:].split()
            pgrp, tpgid = int(fields[2]), int(fields[5])
            if comm == program and pgrp == tpgid and _descends(int(proc.name), ancestor):
                return
        time.sleep(0.02)
    raise AssertionError(f"{program} under pid {ancestor} never became the terminal's foreground job")


def _descends(pid: int, ancestor: int) -> bool:
    while pid > 1:
        if pid == ancestor:
            return True
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return False
        pid = int(stat[stat.rindex(")") + 2:].split()[1])
    return False


def _child_of(ppid: int) -> int:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        kids = Path(f"/proc/{ppid}/task/{ppid}/children").read_text().split()
        if kids:
            return int(kids[0])
        time.sleep(0.05)
    raise AssertionError("lab-play did not start under the shell")


def test_in_tmux_capture_pane(lab: Lab):
    lab.write_talk([{"id": "tmux", "title": "Inside tmux", "command": "echo tmux-$((40+2))"}])
    sock = f"labplay-{os.getpid()}"
    env = lab.env()
    cmd = "env " + " ".join(f"{k}='{v}'" for k, v in env.items()) + " " + \
        f"{sys.executable} {' '.join(lab.argv())}; sleep 30"
    tmux = ["tmux", "-L", sock, "-f", "/dev/null"]
    subprocess.run([*tmux, "new-session", "-d", "-x", "100", "-y", "30", cmd],
                   env={**env, "TMUX": ""}, check=True, timeout=10)

    def pane() -> str:
        return subprocess.run([*tmux, "capture-pane", "-p"], capture_output=True, text=True,
                              check=True, timeout=10).stdout

    def wait(pattern: str) -> None:
        deadline = time.monotonic() + 10
        while not re.search(pattern, pane(), re.MULTILINE):
            if time.monotonic() > deadline:
                pytest.fail(f"{pattern!r} not in the tmux pane:\n{pane()}")
            time.sleep(0.05)
    try:
        wait(r"── 1/1  Inside tmux")
        subprocess.run([*tmux, "send-keys", "-l", "abcdefghijklmn"], check=True, timeout=10)
        wait(r"talkdir \$ echo tmux-\$\(\(4$")
        subprocess.run([*tmux, "send-keys", "-l", "wxyz"], check=True, timeout=10)
        subprocess.run([*tmux, "send-keys", "Enter"], check=True, timeout=10)   # finishes typing
        wait(r"talkdir \$ echo tmux-\$\(\(40\+2\)\)$")
        assert "tmux-42" not in pane().replace("$((40+2))", "")
        subprocess.run([*tmux, "send-keys", "Enter"], check=True, timeout=10)   # runs it
        wait(r"^tmux-42$")
        wait(r"── the end")
    finally:
        subprocess.run([*tmux, "kill-server"], check=False, timeout=10)


# -- bad input: one line, exit 1, nothing else ---------------------------------------------

def _run(lab: Lab, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *lab.argv(*args)], env=lab.env(), capture_output=True,
                          text=True, stdin=subprocess.DEVNULL, timeout=30)


def test_bad_input_no_talk(lab: Lab):
    res = _run(lab)
    assert res.returncode == 1
    assert res.stderr == f"lab-play: {lab.talk}: no such talk file (give --talk FILE, or install the talk: make lab)\n"


def test_bad_input_unknown_step(lab: Lab):
    three_steps(lab)
    res = _run(lab, "--step", "fourth")
    assert res.returncode == 1
    assert res.stderr == f"lab-play: {lab.talk}: no step 'fourth' (the steps: first, second, third)\n"


def test_bad_input_invalid_talk(lab: Lab):
    lab.talk.write_text("title: T\nsteps:\n  - id: a\n    title: A\n    notes: x\n"
                        "  - id: a\n    title: again\n    notes: y\n")
    res = _run(lab)
    assert res.returncode == 1
    assert res.stderr == f"lab-play: {lab.talk}:6: step 'a': duplicate step id (first defined at line 3)\n"


def test_bad_input_no_terminal(lab: Lab):
    three_steps(lab)
    res = _run(lab)
    assert res.returncode == 1
    assert res.stderr.startswith("lab-play: needs a terminal")
    assert res.stderr.count("\n") == 1
