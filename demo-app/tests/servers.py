"""Real processes for tests and the benchmark: redis-server, SecantusDB, the app itself.

Everything binds to 127.0.0.1 on free ports, in its own directory, and is stopped by
``stop()``; nothing depends on a system-wide Redis or MongoDB.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pymongo
import redis
import requests

VENV_BIN = Path(sys.executable).parent
# Test artifacts kept after the run (screenshots, measured numbers)
ARTIFACTS_DEFAULT = Path(__file__).resolve().parents[1] / ".run" / "screenshots"
SCREENSHOTS = Path(os.environ.get("DEMOLAB_SCREENSHOTS", ARTIFACTS_DEFAULT))
LOOPBACK = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def wait_for(predicate: Any, timeout: float, what: str, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            result = predicate()
            if result:
                return result
        except Exception as exc:
            last_error = exc
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what} (last error: {last_error})")


def stop_process(proc: subprocess.Popen[Any] | None, timeout: float = 10.0) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class RedisServer:
    """redis-server (Debian package) with requirepass, no persistence."""

    def __init__(self, workdir: Path, password: str = "test-redis-secret") -> None:
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.password = password
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://{LOOPBACK}:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis(host=LOOPBACK, port=self.port, password=self.password)

    def start(self) -> None:
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        cmd = [
            binary, "--bind", LOOPBACK, "--port", str(self.port),
            "--requirepass", self.password, "--save", "", "--appendonly", "no",
            "--dir", str(self.workdir), "--timeout", "0", "--daemonize", "no",
            "--maxclients", "10000", "--protected-mode", "yes",
        ]  # fmt: skip
        log = (self.workdir / "redis.log").open("ab")
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        wait_for(lambda: self.client().ping(), 15, "redis-server")

    def stop(self) -> None:
        stop_process(self.proc)
        self.proc = None


class SecantusServer:
    """SecantusDB (MongoDB wire protocol) with a SCRAM-SHA-256 user and --auth."""

    def __init__(
        self, workdir: Path, username: str = "demolab", password: str = "test-mongo-secret"
    ) -> None:
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.username = username
        self.password = password
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def uri(self) -> str:
        return f"mongodb://{LOOPBACK}:{self.port}/"

    def client(self, **kwargs: Any) -> pymongo.MongoClient[dict[str, Any]]:
        return pymongo.MongoClient(
            self.uri,
            username=self.username,
            password=self.password,
            authMechanism="SCRAM-SHA-256",
            serverSelectionTimeoutMS=3000,
            **kwargs,
        )

    def _launch(self, auth: bool) -> None:
        cmd = [
            str(VENV_BIN / "secantusd-py"), "--host", LOOPBACK, "--port", str(self.port),
            "--storage-path", str(self.workdir / "data"), "--standalone",
            "--log-level", "WARNING",
        ]  # fmt: skip
        if auth:
            cmd.append("--auth")
        log = (self.workdir / "secantus.log").open("ab")
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=self.workdir)

    def _wait(self, **kwargs: Any) -> None:
        def ping() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"secantusd-py exited with {self.proc.returncode}")
            with pymongo.MongoClient(self.uri, serverSelectionTimeoutMS=500, **kwargs) as client:
                client.admin.command("ping")
            return True

        wait_for(ping, 60, "SecantusDB", interval=0.2)

    def provision(self) -> None:
        """First start: no auth, create the user, then restart with --auth."""
        self._launch(auth=False)
        self._wait()
        with pymongo.MongoClient(self.uri, serverSelectionTimeoutMS=3000) as client:
            client.admin.command(
                "createUser",
                self.username,
                pwd=self.password,
                roles=["root"],
                mechanisms=["SCRAM-SHA-256"],
            )
        self.stop()
        self.start()

    def start(self) -> None:
        self._launch(auth=True)
        self._wait(username=self.username, password=self.password, authMechanism="SCRAM-SHA-256")

    def stop(self) -> None:
        stop_process(self.proc, timeout=20)
        self.proc = None


class AppServer:
    """The demo app as its console entry point, configured by environment variables."""

    def __init__(
        self,
        workdir: Path,
        redis_server: RedisServer,
        mongo: SecantusServer,
        extra_env: Mapping[str, str] | None = None,
    ) -> None:
        self.workdir = workdir
        self.upload_dir = workdir / "uploads"
        self.tmp_dir = workdir / "tmp"
        for path in (self.workdir, self.upload_dir, self.tmp_dir):
            path.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.channel = "demolab:test:announce"
        self.database = "demolab_test"
        self.env = {
            **os.environ,
            "TMPDIR": str(self.tmp_dir),
            "DEMOLAB_HOST": LOOPBACK,
            "DEMOLAB_PORT": str(self.port),
            "DEMOLAB_REDIS_URL": redis_server.url,
            "DEMOLAB_REDIS_PASSWORD": redis_server.password,
            "DEMOLAB_REDIS_CHANNEL": self.channel,
            "DEMOLAB_MONGODB_URI": mongo.uri,
            "DEMOLAB_MONGODB_USERNAME": mongo.username,
            "DEMOLAB_MONGODB_PASSWORD": mongo.password,
            "DEMOLAB_MONGODB_DATABASE": self.database,
            "DEMOLAB_MONGODB_TIMEOUT_MS": "1500",
            "DEMOLAB_UPLOAD_DIR": str(self.upload_dir),
            **(extra_env or {}),
        }
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def start(self) -> None:
        log = (self.workdir / "app.log").open("ab")
        self.proc = subprocess.Popen(
            [str(VENV_BIN / "demolab-app")],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.workdir,
        )

        def healthy() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"demolab-app exited with {self.proc.returncode}")
            return requests.get(self.url + "/healthz", timeout=5).status_code == 200

        wait_for(healthy, 30, "demolab-app /healthz", interval=0.1)

    def stop(self) -> None:
        stop_process(self.proc)
        self.proc = None

    def log_text(self) -> str:
        return (self.workdir / "app.log").read_text(errors="replace")

    def spool_fds(self) -> list[str]:
        """Open descriptors of the app that still point at an (unlinked) upload spool."""
        if self.proc is None:
            return []
        found = []
        for link in Path(f"/proc/{self.proc.pid}/fd").iterdir():
            try:
                target = os.readlink(link)
            except OSError:
                continue
            if "demolab-upload-" in target:
                found.append(target)
        return found

    def ffmpeg_children(self) -> list[int]:
        if self.proc is None:
            return []
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            name = stat[stat.index("(") + 1 : stat.rindex(")")]
            ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
            if ppid == self.proc.pid and name.startswith("ff"):
                found.append(int(entry.name))
        return found


def make_clip(
    path: Path, seconds: float = 3, size: str = "320x240", noise: bool = False, rate: int = 25
) -> Path:
    """A small H.264/AAC MP4 from lavfi test sources (testsrc + sine)."""
    video = f"testsrc=size={size}:rate={rate}"
    filters = ["-vf", "noise=alls=30:allf=t", "-b:v", "2M"] if noise else []
    cmd = [
        shutil.which("ffmpeg") or "ffmpeg", "-nostdin", "-v", "error", "-y",
        "-f", "lavfi", "-i", video, "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100",
        "-t", str(seconds), *filters, "-c:v", "libx264", "-preset", "ultrafast",
        "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest", str(path),
    ]  # fmt: skip
    subprocess.run(cmd, check=True, timeout=120)
    return path


def ffprobe_json(path: Path) -> dict[str, Any]:
    import json

    done = subprocess.run(
        ["ffprobe", "-v", "error", "-print_format", "json", "-show_format", "-show_streams",
         str(path)],
        capture_output=True, check=True, timeout=60,
    )  # fmt: skip
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def media_duration(path: Path) -> float:
    """Last video packet's end time, for files without a Duration header."""
    done = subprocess.run(
        ["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries",
         "packet=pts_time,duration_time", "-of", "csv=p=0", str(path)],
        capture_output=True, check=True, timeout=60, text=True,
    )  # fmt: skip
    ends = []
    for line in done.stdout.split():
        pts, _, duration = line.partition(",")
        if pts and pts != "N/A":
            ends.append(float(pts) + (float(duration) if duration not in ("", "N/A") else 0.0))
    return max(ends, default=0.0)
