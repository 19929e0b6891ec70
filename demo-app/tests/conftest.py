"""Session fixtures: real redis-server, real SecantusDB, the real app, generated clips."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import socketio
from servers import SCREENSHOTS, AppServer, RedisServer, SecantusServer, make_clip

MAX_UPLOAD = 8 * 1024 * 1024


class Listener:
    """A python-socketio client that records every event with its arrival time."""

    def __init__(self, url: str, transports: list[str] | None = None) -> None:
        self.client = socketio.Client(reconnection=True, reconnection_delay=0.2)
        self.events: list[tuple[str, Any, float]] = []
        self.cond = threading.Condition()

        @self.client.on("*")
        def catch_all(event: str, data: Any = None) -> None:
            with self.cond:
                self.events.append((event, data, time.monotonic()))
                self.cond.notify_all()

        self.client.connect(url, transports=transports or ["websocket"], wait_timeout=10)

    @property
    def sid(self) -> str:
        return str(self.client.get_sid())

    def of(self, event: str) -> list[tuple[Any, float]]:
        with self.cond:
            return [(data, t) for name, data, t in self.events if name == event]

    def wait(
        self, event: str, predicate: Callable[[Any], bool] = lambda _: True, timeout: float = 10
    ) -> tuple[Any, float]:
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for name, data, t in self.events:
                    if name == event and predicate(data):
                        return data, t
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"no {event!r} event matching within {timeout}s")
                self.cond.wait(remaining)

    def close(self) -> None:
        # websocket-client waits ~5 s for the closing handshake: don't hold the test for it
        threading.Thread(target=self.client.disconnect, daemon=True).start()


SESSION_START = time.time()


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """The presenter pages' numbers (tests/test_presenter.py), when they were measured."""
    metrics = SCREENSHOTS / "metrics.json"
    if metrics.exists() and metrics.stat().st_mtime >= SESSION_START:
        numbers = metrics.read_text().strip()
        terminalreporter.write_line(f"presenter pages ({SCREENSHOTS}): {numbers}")


@pytest.fixture(scope="session")
def artifacts() -> Path:
    """Screenshots kept after the run (DEMOLAB_TEST_ARTIFACTS, default demo-app/test-artifacts)."""
    default = Path(__file__).resolve().parent.parent / "test-artifacts"
    path = Path(os.environ.get("DEMOLAB_TEST_ARTIFACTS") or default)
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="session")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("demolab")


@pytest.fixture(scope="session")
def redis_server(workdir: Path) -> Iterator[RedisServer]:
    server = RedisServer(workdir / "redis")
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def mongo_server(workdir: Path) -> Iterator[SecantusServer]:
    server = SecantusServer(workdir / "secantus")
    server.provision()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def app(
    workdir: Path, redis_server: RedisServer, mongo_server: SecantusServer
) -> Iterator[AppServer]:
    server = AppServer(
        workdir / "app",
        redis_server,
        mongo_server,
        extra_env={"DEMOLAB_MAX_UPLOAD_BYTES": str(MAX_UPLOAD), "DEMOLAB_VIDEO_BITRATE": "1M"},
    )
    server.start()
    yield server
    leftover = server.ffmpeg_children()
    server.stop()
    assert not leftover, f"ffmpeg {leftover} still running at the end of the session"


@pytest.fixture
def listener_factory(app: AppServer) -> Iterator[Callable[..., Listener]]:
    made: list[Listener] = []

    def make(transports: list[str] | None = None) -> Listener:
        listener = Listener(app.url, transports)
        made.append(listener)
        return listener

    yield make
    for listener in made:
        listener.close()


@pytest.fixture(scope="session")
def clip(workdir: Path) -> Path:
    return make_clip(workdir / "clip.mp4", seconds=3)


@pytest.fixture(scope="session")
def big_clip(workdir: Path) -> Path:
    """Noisy 640x360 clip: its WebM spans several GridFS chunks."""
    return make_clip(workdir / "noisy.mp4", seconds=6, size="640x360", noise=True)


def upload(
    app: AppServer,
    path: Path,
    *,
    filename: str | None = None,
    sid: str = "",
    codec: str = "",
    uploader: str = "pytest",
) -> requests.Response:
    with path.open("rb") as handle:
        return requests.post(
            app.url + "/upload",
            files={"file": (filename or path.name, handle, "application/octet-stream")},
            data={"sid": sid, "codec": codec, "uploader": uploader},
            timeout=60,
        )


def upload_and_wait(
    app: AppServer, listener: Listener, path: Path, **kwargs: Any
) -> dict[str, Any]:
    response = upload(app, path, sid=listener.sid, **kwargs)
    assert response.status_code == 202, response.text
    job = response.json()["job"]
    done, _ = listener.wait(
        "upload_done",
        lambda d: d["job"] == job,
        timeout=60,
    )
    return done["video"]  # type: ignore[no-any-return]


@pytest.fixture(scope="session")
def stored_video(app: AppServer, big_clip: Path) -> Iterator[dict[str, Any]]:
    listener = Listener(app.url)
    try:
        yield upload_and_wait(app, listener, big_clip)
    finally:
        listener.close()
