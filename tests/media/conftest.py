"""Fixtures for the media suite: the REAL lab FFmpeg (built once, cached), Xvfb, PulseAudio.

Environment:
  LAB_FFMPEG_STORE   artifact store used by the tests (default /var/cache/demolab/ffmpeg)
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO / "roles/ffmpeg/files/lab_ffmpeg_build.py"
LAB_RECORD = REPO / "roles/screen_recording/files/lab_record.py"
LAB_SNIPPET = REPO / "roles/presenter_kit/files/lab_snippet.py"
STORE = Path(os.environ.get("LAB_FFMPEG_STORE", "/var/cache/demolab/ffmpeg"))


def load_talk(path):
    """The talk file's model (roles/talk/files/demolab_talk): events and yasnippets come from it."""
    sys.path.insert(0, str(REPO / "roles/talk/files"))
    from demolab_talk import load  # noqa: PLC0415 - the talk role's package, found at run time

    return load(path)


def run(cmd, timeout=60, check=True, **kw):
    """subprocess.run with a timeout always set (nothing in this suite may hang)."""
    kw.setdefault("capture_output", True)
    kw.setdefault("text", True)
    res = subprocess.run([str(c) for c in cmd], timeout=timeout, stdin=subprocess.DEVNULL, **kw)
    if check and res.returncode != 0:
        raise AssertionError(f"{cmd} exited {res.returncode}\nstdout: {res.stdout}\nstderr: {res.stderr}")
    return res


@pytest.fixture(scope="session")
def artifact() -> dict:
    """The lab FFmpeg artifact: built by run.sh (or here, once) and described by the script."""
    res = run([BUILD_SCRIPT, "--store", STORE, "describe"], check=False)
    if res.returncode != 0:  # not built yet: build now (~5 min on 2 cores)
        res = run([BUILD_SCRIPT, "--store", STORE, "ensure"], timeout=3600)
    return json.loads(res.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="session")
def lab_root(artifact, tmp_path_factory) -> Path:
    """The .deb unpacked into a fresh directory: no build, no system install needed."""
    root = tmp_path_factory.mktemp("labroot")
    run(["dpkg-deb", "-x", artifact["deb"], root])
    return root


@pytest.fixture(scope="session")
def ffmpeg(artifact, lab_root) -> str:
    return str(lab_root / artifact["ffmpeg"].lstrip("/"))


@pytest.fixture(scope="session")
def ffprobe(artifact, lab_root) -> str:
    return str(lab_root / artifact["ffprobe"].lstrip("/"))


def probe(ffprobe: str, path) -> dict:
    res = run([ffprobe, "-v", "error", "-print_format", "json", "-show_format", "-show_streams", path], timeout=60)
    return json.loads(res.stdout)


def _free_display() -> int:
    for n in range(90, 200):
        if not Path(f"/tmp/.X11-unix/X{n}").exists() and not Path(f"/tmp/.X{n}-lock").exists():
            return n
    raise RuntimeError("no free X display number")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def _wait_for_socket(proc: subprocess.Popen, sock: Path, what: str, timeout: float = 10) -> None:
    """Wait until a server we started creates its socket; stop it and fail otherwise."""
    deadline = time.monotonic() + timeout
    while not sock.exists():
        if time.monotonic() > deadline:
            _stop(proc)
            pytest.fail(f"{what} did not start ({sock} missing after {timeout:.0f} s)")
        time.sleep(0.1)


@pytest.fixture(scope="session")
def xvfb():
    """A real Xvfb 1024x768x24 with something on screen (xeyes-free: a busy xterm-less root)."""
    if not shutil.which("Xvfb"):
        pytest.fail("Xvfb missing: run tests/media/run.sh (installs tests/apt/media.txt)")
    num = _free_display()
    proc = subprocess.Popen(["Xvfb", f":{num}", "-screen", "0", "1024x768x24", "-nolisten", "tcp"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _wait_for_socket(proc, Path(f"/tmp/.X11-unix/X{num}"), "Xvfb")
    yield f":{num}"
    _stop(proc)


@pytest.fixture(scope="session")
def pulse(tmp_path_factory):
    """PulseAudio in user mode with a null sink `demo` (its monitor is the capture source)."""
    runtime = tmp_path_factory.mktemp("xdg-runtime")
    runtime.chmod(0o700)
    home = tmp_path_factory.mktemp("pulse-home")
    env = dict(os.environ, XDG_RUNTIME_DIR=str(runtime), HOME=str(home))
    env.pop("PULSE_SERVER", None)
    proc = subprocess.Popen(["pulseaudio", "-n", "--daemonize=no", "--exit-idle-time=-1", "--disallow-exit",
                             "--load=module-native-protocol-unix", "--load=module-null-sink sink_name=demo"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _wait_for_socket(proc, runtime / "pulse/native", "pulseaudio")
    yield {"XDG_RUNTIME_DIR": str(runtime), "source": "demo.monitor", "sink": "demo", "env": env}
    _stop(proc)


@pytest.fixture
def record_env(tmp_path, ffmpeg, xvfb, pulse) -> dict:
    env = dict(os.environ, DISPLAY=xvfb, FFMPEG=ffmpeg, XDG_RUNTIME_DIR=pulse["XDG_RUNTIME_DIR"],
               LAB_RECORD_STATE_DIR=str(tmp_path / "state"), LAB_RECORD_CONFIG=str(tmp_path / "none.ini"))
    env.pop("PULSE_SERVER", None)
    return env


def ffmpeg_pids() -> set[int]:
    pids = set()
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmd = (proc / "cmdline").read_bytes().split(b"\0")[0]
                state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
            except OSError:
                continue
            if cmd.endswith(b"ffmpeg") and state not in ("Z", "X"):
                pids.add(int(proc.name))
    return pids
