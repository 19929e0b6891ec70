"""The talk's rehearsal with a display: a screen clip per command step, recorded by the real
lab-record (lab FFmpeg, x11grab on Xvfb); without a display, none."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from conftest import LAB_RECORD, REPO, probe

sys.path.insert(0, str(REPO / "tests" / "harness"))
import labjson  # noqa: E402

TALK = """\
title: Clip fixture
steps:
  - id: busy
    title: A step the screen records
    command: sleep 2; echo clip-step-done
    expect: {output: clip-step-done}
  - id: notes
    title: Notes only
    notes: nothing to record
"""


def rehearse(tmp_path: Path, env: dict) -> dict:
    home = tmp_path / "home"
    home.mkdir()
    (home / ".bashrc").write_text("")
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "lab-record").symlink_to(LAB_RECORD)
    talk = tmp_path / "talk.yml"
    talk.write_text(TALK)
    out = tmp_path / "report.json"
    env = dict(env, DEMOLAB_LAB_JSON=str(labjson.write(tmp_path)), PYTHONPATH=str(REPO / "roles/talk/files"),
               PATH=f"{bindir}:{env['PATH']}")
    done = subprocess.run([sys.executable, "-m", "demolab_talk", "rehearse", "--talk", str(talk), "--user", "root",
                           "--home", str(home), "--miss-log", str(tmp_path / "none"), "--out", str(out)],
                          env=env, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    return {s["id"]: s for s in json.loads(out.read_text())["steps"]}


def test_a_clip_per_command_step_with_a_display(tmp_path, record_env, ffprobe):
    steps = rehearse(tmp_path, record_env)
    clip = Path(steps["busy"]["clip"])
    assert clip == tmp_path / "state/rehearsal/clips/busy.mkv"
    assert clip.stat().st_mode & 0o777 == 0o644
    info = probe(ffprobe, clip)
    video = [s for s in info["streams"] if s["codec_type"] == "video"]
    assert video and (video[0]["width"], video[0]["height"]) == (1024, 768)
    assert float(info["format"]["duration"]) >= 1.0
    assert steps["notes"]["clip"] is None and steps["notes"]["status"] == "skip"


def test_no_clip_without_a_display(tmp_path, record_env):
    env = {k: v for k, v in record_env.items() if k != "DISPLAY"}
    steps = rehearse(tmp_path, env)
    assert steps["busy"]["status"] == "pass" and steps["busy"]["clip"] is None
    assert not (tmp_path / "state/rehearsal/clips").exists()
    assert os.access(steps["busy"]["cast"], os.R_OK)
