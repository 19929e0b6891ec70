"""lab-record with the real lab FFmpeg under a real Xvfb and a real PulseAudio null sink."""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import time
from pathlib import Path

import pytest
from conftest import LAB_RECORD, ffmpeg_pids, probe, run


def lab_record(args, env, timeout=60, check=True):
    return run([LAB_RECORD, *args], env=env, timeout=timeout, check=check)


@pytest.fixture
def screen_activity(xvfb):
    """Something that changes on screen while recording: dmenu windows flashing text."""
    env = dict(os.environ, DISPLAY=xvfb)
    proc = subprocess.Popen(["sh", "-c", "while :; do date +%T.%N | dmenu -b -p lab-record-test & sleep 0.5; "
                             "kill $! 2>/dev/null; wait $! 2>/dev/null; done"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    yield
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(5)


def middle_frame_stats(ffmpeg: str, path: Path, at: float) -> tuple[float, int]:
    res = subprocess.run([ffmpeg, "-hide_banner", "-nostdin", "-v", "error", "-ss", f"{at:.2f}", "-i", str(path),
                          "-frames:v", "1", "-vf", "scale=256:192,format=gray", "-f", "rawvideo", "-"],
                         capture_output=True, timeout=60, stdin=subprocess.DEVNULL)
    assert res.returncode == 0 and len(res.stdout) == 256 * 192, res.stderr
    pixels = list(res.stdout)
    return statistics.pstdev(pixels), len(set(pixels))


def test_record_10_seconds(record_env, pulse, ffmpeg, ffprobe, tmp_path, screen_activity):
    out = tmp_path / "talk.mkv"
    started = lab_record(["start", "--out", out, "--audio", "pulse", "--audio-device", pulse["source"]], record_env)
    assert "recording" in started.stdout
    assert lab_record(["status"], record_env).returncode == 0
    time.sleep(10)
    stopped = lab_record(["stop"], record_env)
    assert "stopped" in stopped.stdout
    assert lab_record(["status"], record_env, check=False).returncode == 3
    info = probe(ffprobe, out)
    duration = float(info["format"]["duration"])
    assert 9.0 <= duration <= 11.0, f"duration {duration}"
    video = next(s for s in info["streams"] if s["codec_type"] == "video")
    assert (video["codec_name"], video["pix_fmt"], video["width"], video["height"]) == ("h264", "yuv420p", 1024, 768)
    assert any(s["codec_type"] == "audio" for s in info["streams"])
    stdev, distinct = middle_frame_stats(ffmpeg, out, duration / 2)
    assert stdev > 2 and distinct > 4, f"middle frame looks blank (stdev {stdev:.1f}, {distinct} grey levels)"


def test_kill_9_then_stop_leaves_playable_file(record_env, ffprobe, tmp_path):
    out = tmp_path / "crash.mkv"
    lab_record(["start", "--out", out, "--audio", "none", "--fps", "12"], record_env)
    again = lab_record(["start", "--out", tmp_path / "second.mkv", "--audio", "none"], record_env, check=False)
    assert again.returncode == 1 and "already recording" in again.stderr
    time.sleep(5)
    state = json.loads((Path(record_env["LAB_RECORD_STATE_DIR"]) / "state.json").read_text())
    os.kill(state["pid"], signal.SIGKILL)
    time.sleep(0.5)
    assert lab_record(["status"], record_env, check=False).returncode == 3
    res = lab_record(["stop"], record_env)
    assert "stopped" in res.stdout
    info = probe(ffprobe, out)
    assert float(info["format"]["duration"]) >= 1.5
    # playable to the end
    run([Path(ffprobe).with_name("ffmpeg"), "-hide_banner", "-nostdin", "-v", "error", "-i", out, "-f", "null", "-"],
        timeout=60)


def test_render_fixes_fps_and_muxes_audio(record_env, ffmpeg, ffprobe, tmp_path):
    rec = tmp_path / "rec.mkv"
    lab_record(["start", "--out", rec, "--audio", "none", "--size", "640x480", "--fps", "12"], record_env)
    time.sleep(4)
    lab_record(["stop"], record_env)
    wav = tmp_path / "voice.wav"
    run([ffmpeg, "-hide_banner", "-nostdin", "-v", "error", "-f", "lavfi", "-i", "sine=frequency=300:duration=6",
         str(wav)])
    for fmt, vcodec, acodec in (("webm", "vp9", "opus"), ("mp4", "h264", "aac")):
        out = tmp_path / f"final.{fmt}"
        res = lab_record(["render", rec, "--audio", wav, "--fps", "25", "--format", fmt, "--normalize", out],
                         record_env, timeout=300)
        assert "rendered" in res.stdout
        info = probe(ffprobe, out)
        video = next(s for s in info["streams"] if s["codec_type"] == "video")
        audio = [s for s in info["streams"] if s["codec_type"] == "audio"]
        assert video["codec_name"] == vcodec and video["r_frame_rate"] == "25/1", video
        assert video["pix_fmt"] == "yuv420p"
        assert audio and audio[0]["codec_name"] == acodec


def test_no_display(record_env, tmp_path):
    env = dict(record_env)
    env.pop("DISPLAY")
    before = ffmpeg_pids()
    res = lab_record(["start", "--out", tmp_path / "x.mkv", "--audio", "none"], env, timeout=30, check=False)
    assert res.returncode == 1 and "no DISPLAY" in res.stderr
    assert ffmpeg_pids() - before == set()
    assert not (Path(env["LAB_RECORD_STATE_DIR"]) / "state.json").exists()


def test_x_server_unreachable(record_env, tmp_path):
    env = dict(record_env, DISPLAY=":187")
    res = lab_record(["start", "--out", tmp_path / "x.mkv", "--audio", "none"], env, timeout=30, check=False)
    assert res.returncode == 1 and "unreachable" in res.stderr, res.stderr


def test_no_pulseaudio(record_env, tmp_path):
    empty = tmp_path / "runtime"
    empty.mkdir(mode=0o700)
    env = dict(record_env, XDG_RUNTIME_DIR=str(empty))
    before = ffmpeg_pids()
    res = lab_record(["start", "--out", tmp_path / "x.mkv", "--audio", "pulse"], env, timeout=30, check=False)
    assert res.returncode == 1 and "--audio none" in res.stderr, res.stderr
    assert ffmpeg_pids() - before == set()


def test_unknown_pulse_source_leaves_no_process(record_env, tmp_path):
    before = ffmpeg_pids()
    res = lab_record(["start", "--out", tmp_path / "x.mkv", "--audio", "pulse", "--audio-device", "no-such-source"],
                     record_env, timeout=30, check=False)
    assert res.returncode == 1 and "audio" in res.stderr, res.stderr
    time.sleep(0.3)
    assert ffmpeg_pids() - before == set()
    assert not (Path(record_env["LAB_RECORD_STATE_DIR"]) / "state.json").exists()


def test_no_alsa_capture_device(record_env, tmp_path):
    if list(Path("/dev/snd").glob("pcmC*D*c")) if Path("/dev/snd").is_dir() else []:
        pytest.skip("this machine has an ALSA capture device")
    res = lab_record(["start", "--out", tmp_path / "x.mkv", "--audio", "alsa"], record_env, timeout=30, check=False)
    assert res.returncode == 1 and "ALSA" in res.stderr


def test_render_rejects_corrupt_input_quickly(record_env, tmp_path):
    bad = tmp_path / "bad.mkv"
    bad.write_bytes(b"\x1a\x45\xdf\xa3" + os.urandom(200_000))
    res = lab_record(["render", bad, tmp_path / "out.webm"], record_env, timeout=60, check=False)
    assert res.returncode == 1 and "not a readable video" in res.stderr
    assert not (tmp_path / "out.webm").exists()


def test_size_larger_than_screen(record_env, tmp_path):
    before = ffmpeg_pids()
    res = lab_record(["start", "--out", tmp_path / "x.mkv", "--audio", "none", "--size", "2000x2000"], record_env,
                     timeout=30, check=False)
    assert res.returncode == 1 and "larger than the screen (1024x768)" in res.stderr, res.stderr
    time.sleep(0.3)
    assert ffmpeg_pids() - before == set()
