"""The talk's rehearsal (roles/talk/files/demolab_talk/rehearse.py) on this machine, with the
real tools: Debian's asciinema records each step, a real interactive bash reads a fixture
presenter's ~/.bashrc, a real HTTP server on loopback answers the snippets' URLs, real pip
reports the package it cannot find. One rehearsal of a small fixture talk; each test reads
one part of its report. (The shipped talk on a fresh offline host: tests/lifecycle.py.)
"""

from __future__ import annotations

import functools
import http.server
import json
import os
import re
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PKG = REPO / "roles" / "talk" / "files"
sys.path.insert(0, str(PKG))
sys.path.insert(0, str(REPO / "tests" / "harness"))

import labjson  # noqa: E402
from demolab_talk.rehearse import fs_paths, html_refs, programs_in, read_cast, urls_in  # noqa: E402

BASHRC = """\
# the presenter's own settings
case $- in *i*) ;; *) return;; esac
# BEGIN DEMOLAB PRESENTER KIT
export DEMO_GREETING=lab
alias greet='echo greeted by an alias'
# END DEMOLAB PRESENTER KIT
"""

TALK = """\
title: Fixture talk
workdir: ~/talk
requires:
  env: [DEMO_GREETING, DEMOLAB_NEVER_SET]
  aliases: [greet]
  commands: [bash, python3]
steps:
  - id: intro
    title: Only notes
    notes: Say hello to the room.
  - id: hello
    title: Say hello
    command: echo "hello $DEMO_GREETING"; greet
    expect: {output: "^hello lab$"}
  - id: state
    title: cd and export, as the presenter would
    command: mkdir sub && cd sub && export CARRIED=yes
  - id: carried
    title: The next step is in the same place with the same variables
    command: pwd; echo "carried=$CARRIED"
    expect: {output: "/work/sub\\n.*carried=yes"}
  - id: fails
    title: A failing command
    command: echo about to fail; exit 3
  - id: nomatch
    title: An expect that does not match
    command: echo "the answer is 41"
    expect: {output: "answer is 42"}
  - id: slow
    title: Too slow
    command: sleep 31.4159
    timeout: 2
  - id: goodsnip
    title: A snippet whose URL, path and program are right
    hotkey:
      name: goodsnip
      snippet: |
        cat /etc/hostname
        curl -s {base}/page.html
      run: bash -c true
    yasnippets:
      - {mode: html-mode, key: sio, body: '<script src="/static/app.js"></script>'}
    open: {base}/page.html
  - id: badport
    title: A snippet URL on a wrong port
    hotkey: {name: badport, snippet: "curl -s http://127.0.0.1:{closed}/page.html"}
  - id: badref
    title: A yasnippet that loads a file the app does not serve
    yasnippets:
      - {mode: html-mode, key: bad, body: '<script src="/static/js/app.js"></script>'}
  - id: badpath
    title: A snippet naming a path that does not exist
    hotkey: {name: badpath, snippet: "ls /opt/demolab-no-such-dir/venv"}
  - id: badprog
    title: A hotkey that runs a program nobody installed
    hotkey: {name: badprog, run: "demolab-no-such-program --go"}
  - id: nopip
    title: pip install of a package the index does not have
    command: python3 -m pip download --no-index --find-links . -d dl demolab-no-such-package==1.0
  - id: needsmiss
    title: A need demolab-rehearse found missing
    needs: {pip: [demolab-unmirrored==2.0], apt: [bash]}
    notes: The package comes from the lab index.
  - id: status
    title: An expect url
    expect: {url: "{base}/page.html", status: 200}
  - id: badstatus
    title: An expect url that answers another status
    expect: {url: "{base}/missing.html", status: 200}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def rehearsed(tmp_path_factory):
    root = tmp_path_factory.mktemp("rehearse")
    www = root / "www"
    (www / "static").mkdir(parents=True)
    (www / "page.html").write_text("<p>hello</p>\n")
    (www / "static" / "app.js").write_text("console.log(1)\n")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(www))
    handler.log_message = lambda *a: None  # type: ignore[method-assign]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    home = root / "home"
    home.mkdir()
    (home / ".bashrc").write_text(BASHRC)
    talk = root / "talk.yml"
    talk.write_text(TALK.replace("{base}", base).replace("{closed}", str(free_port())))
    misses = root / "misses.json"
    misses.write_text(json.dumps([{"kind": "pip", "what": "demolab-unmirrored==2.0", "fix": "lock it"}]))
    out = root / "report.json"
    env = dict(os.environ, DEMOLAB_LAB_JSON=str(labjson.write(root)), PYTHONPATH=str(PKG), PIP_NO_INDEX="1")
    env.pop("DISPLAY", None)
    done = subprocess.run(
        [sys.executable, "-m", "demolab_talk", "rehearse", "--talk", str(talk), "--user", "root",
         "--home", str(home), "--demo", base, "--proxy", "http://127.0.0.1:9", "--misses", str(misses),
         "--miss-log", str(root / "no-miss-log"), "--out", str(out)],
        env=env, capture_output=True, text=True, timeout=120, check=False)
    server.shutdown()
    report = json.loads(out.read_text()) if out.exists() else {}
    return {"rc": done.returncode, "stdout": done.stdout, "stderr": done.stderr, "report": report,
            "steps": {s["id"]: s for s in report.get("steps", [])}, "state": root / "state"}


def test_exit_code_and_counts(rehearsed):
    rep = rehearsed["report"]
    assert rehearsed["rc"] == 1, rehearsed["stdout"] + rehearsed["stderr"]
    statuses = {sid: s["status"] for sid, s in rehearsed["steps"].items()}
    assert statuses == {
        "intro": "skip", "hello": "pass", "state": "pass", "carried": "pass", "fails": "fail",
        "nomatch": "fail", "slow": "fail", "goodsnip": "pass", "badport": "fail", "badref": "fail",
        "badpath": "fail", "badprog": "fail", "nopip": "fail", "needsmiss": "fail", "status": "pass",
        "badstatus": "fail"}, rehearsed["stdout"]
    assert (rep["passed"], rep["failed"], rep["skipped"]) == (5, 10, 1)


def test_terminal_report_agrees_with_json(rehearsed):
    for sid, step in rehearsed["steps"].items():
        line = next(ln for ln in rehearsed["stdout"].splitlines() if re.match(rf"\s+\w{{4}}  {sid}\s", ln))
        assert line.split()[0] == step["status"].upper()
        assert step["reason"] in line


def test_requires_are_checked_in_the_presenters_shell(rehearsed):
    # DEMO_GREETING and the greet alias come from the fixture ~/.bashrc: not reported.
    assert rehearsed["report"]["requires"] == ["env DEMOLAB_NEVER_SET is not set in root's shell"]
    assert "FAIL  requires: env DEMOLAB_NEVER_SET" in rehearsed["stdout"]


def test_a_passing_step_is_recorded_as_asciicast_v2(rehearsed):
    step = rehearsed["steps"]["hello"]
    cast = Path(step["cast"])
    assert cast == rehearsed["state"] / "rehearsal" / "casts" / "hello.cast"
    assert cast.stat().st_mode & 0o777 == 0o644
    assert cast.parent.stat().st_mode & 0o777 == 0o755
    header, events = read_cast(cast)
    assert header["version"] == 2 and header["width"] == 100 and header["title"] == "Say hello"
    printed = "".join(e[2] for e in events if e[1] == "o")
    # What the step printed, the alias from the presenter's ~/.bashrc included.
    assert printed == "hello lab\r\ngreeted by an alias\r\n"
    assert all(isinstance(e[0], float) for e in events)


def test_asciinema_plays_the_cast(rehearsed):
    cast = rehearsed["steps"]["hello"]["cast"]
    played = subprocess.run(["asciinema", "play", "-s", "5", "-i", "0.2", cast], stdin=subprocess.DEVNULL,
                            capture_output=True, text=True, timeout=30, check=False)
    assert played.returncode == 0, played.stderr
    assert "hello lab" in played.stdout and "greeted by an alias" in played.stdout


def test_cd_and_exports_carry_to_the_next_step(rehearsed):
    assert rehearsed["steps"]["carried"]["status"] == "pass", rehearsed["steps"]["carried"]


def test_exit_code_mismatch_is_the_reason(rehearsed):
    step = rehearsed["steps"]["fails"]
    assert step["exit"] == 3
    assert step["reason"] == "exited 3 (expected 0): last output: about to fail"
    assert "about to fail" in "".join(e[2] for e in read_cast(Path(step["cast"]))[1])


def test_output_mismatch_is_the_reason(rehearsed):
    assert rehearsed["steps"]["nomatch"]["reason"] == \
        "output does not match /answer is 42/ (last line: the answer is 41)"


def _cmdline(proc: Path) -> bytes:
    """A process's command line; b"" when it ended meanwhile (a busy machine starts and ends many)."""
    try:
        return (proc / "cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError):
        return b""


def test_timeout_kills_the_whole_session(rehearsed):
    step = rehearsed["steps"]["slow"]
    assert step["reason"] == "timed out after 2 s"
    assert step["seconds"] < 8
    left = [p for p in Path("/proc").iterdir() if p.name.isdigit() and b"31.4159" in _cmdline(p)]
    assert not left, "the step's sleep survived its timeout"
    read_cast(Path(step["cast"]))  # still a valid cast


def test_snippet_urls_paths_and_programs(rehearsed):
    steps = rehearsed["steps"]
    assert steps["goodsnip"]["status"] == "pass", steps["goodsnip"]
    assert "Connection refused" in steps["badport"]["reason"]
    assert steps["badport"]["reason"].startswith("hotkey badport snippet: http://127.0.0.1:")
    assert steps["badref"]["reason"].startswith("yasnippet html-mode/bad: /static/js/app.js on the demo app:")
    assert steps["badref"]["reason"].endswith("/static/js/app.js answered 404")
    assert steps["badpath"]["reason"] == "hotkey badpath snippet: path /opt/demolab-no-such-dir/venv does not exist"
    assert steps["badprog"]["reason"] == "hotkey badprog: program demolab-no-such-program is not in root's PATH"


def test_an_unmirrored_pip_package_is_a_miss_of_its_step(rehearsed):
    step = rehearsed["steps"]["nopip"]
    assert step["misses"] == [{"kind": "pip", "what": "demolab-no-such-package==1.0",
                               "fix": "add it to mirror/requirements.in, run mirror/lock.py, then `make online`"}]
    assert step["reason"].startswith("pip: demolab-no-such-package==1.0 is not in the lab index; exited 1")


def test_needs_missed_by_demolab_rehearse_are_attributed(rehearsed):
    step = rehearsed["steps"]["needsmiss"]
    assert step["misses"] == [{"kind": "pip", "what": "demolab-unmirrored==2.0", "fix": "lock it"}]
    assert step["reason"] == "needs pip demolab-unmirrored==2.0, which the lab's mirrors do not have"


def test_expect_url_status(rehearsed):
    assert rehearsed["steps"]["status"]["reason"].endswith("/page.html answered 200")
    assert rehearsed["steps"]["badstatus"]["reason"].endswith("/missing.html answered 404 (expected 200)")


def test_only_command_steps_have_casts(rehearsed):
    casts = sorted(p.stem for p in (rehearsed["state"] / "rehearsal" / "casts").iterdir())
    assert casts == ["carried", "fails", "hello", "nomatch", "nopip", "slow", "state"]
    assert all(s["clip"] is None for s in rehearsed["steps"].values())  # no display here


def test_heuristics():
    assert programs_in("sudo apt-get update && redis-cli ping | head -1\n# c\nFOO=1 lab-record start") == \
        [["apt-get", "redis-cli", "head"], ["lab-record"]]
    assert programs_in("$FFMPEG -i a.mkv out.webm; ./run.sh; for f in *; do echo $f; done") == [["echo"]]
    assert programs_in("cat <<EOF\nnot-a-program here\nEOF\nls") == [["cat"], ["ls"]]
    assert programs_in('echo "open quote\nstill open"') == []
    # What an install line installs may be the next line's program: not checked.
    assert programs_in("sudo apt-get install redis-server\nredis-cli ping") == [["apt-get"]]
    assert programs_in("python3 -m pip install x\nx-server --go") == [["python3"]]
    assert urls_in('open http://127.0.0.1:8080/x, then "https://e.test/a?b=1". ${1:http://x/$y}') == \
        ["http://127.0.0.1:8080/x", "https://e.test/a?b=1"]
    assert html_refs('<script src="/static/socket.io.min.js"></script><a href="//cdn/x">') == \
        ["/static/socket.io.min.js"]
    assert fs_paths("cd /opt/demolab/demo-app; see http://h/opt/x and ~/talk/app.py, /tmp/x") == \
        ["/opt/demolab/demo-app", "~/talk/app.py"]
