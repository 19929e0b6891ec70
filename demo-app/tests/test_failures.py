"""Error paths of the transcoder: FFmpeg is always killed and reaped, nothing half-stored."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import Listener, upload
from servers import AppServer, RedisServer, SecantusServer, make_clip, wait_for


@pytest.fixture
def slow_app(
    workdir: Path,
    redis_server: RedisServer,
    mongo_server: SecantusServer,
    request: pytest.FixtureRequest,
) -> Iterator[AppServer]:
    """A second app whose transcodes time out after 0.5 s."""
    server = AppServer(
        workdir / f"app-{request.node.name}",
        redis_server,
        mongo_server,
        extra_env={"DEMOLAB_TRANSCODE_TIMEOUT": "0.5", "DEMOLAB_VIDEO_CODEC": "vp9",
                   "DEMOLAB_REDIS_CHANNEL": "demolab:test:slow"},
    )  # fmt: skip
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def long_clip(workdir: Path) -> Path:
    return make_clip(workdir / "long.mp4", seconds=20, size="640x360")


def chunk_and_file_counts(mongo: SecantusServer, app: AppServer) -> tuple[int, int]:
    with mongo.client() as client:
        db = client[app.database]
        return db["videos.files"].count_documents({}), db["videos.chunks"].count_documents({})


def test_transcode_timeout_kills_ffmpeg_and_stores_nothing(
    slow_app: AppServer, mongo_server: SecantusServer, long_clip: Path
) -> None:
    before = chunk_and_file_counts(mongo_server, slow_app)
    listener = Listener(slow_app.url)
    try:
        response = upload(slow_app, long_clip, sid=listener.sid)
        assert response.status_code == 202, response.text
        error, _ = listener.wait("upload_error", timeout=30)
        assert "took too long" in error["error"]
        assert not listener.of("upload_done")
    finally:
        listener.close()
    assert not slow_app.ffmpeg_children()
    assert chunk_and_file_counts(mongo_server, slow_app) == before
    assert not os.listdir(slow_app.upload_dir)
    assert not slow_app.spool_fds()


def test_ffmpeg_dies_with_a_killed_app(
    workdir: Path, redis_server: RedisServer, mongo_server: SecantusServer, long_clip: Path
) -> None:
    app = AppServer(workdir / "app-killed", redis_server, mongo_server,
                    extra_env={"DEMOLAB_VIDEO_CODEC": "vp9"})  # fmt: skip
    app.start()
    try:
        assert upload(app, long_clip).status_code == 202
        children = wait_for(app.ffmpeg_children, 10, "ffmpeg to start")
        assert app.proc is not None
        app.proc.send_signal(signal.SIGKILL)
        app.proc.wait()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and any(Path(f"/proc/{p}").exists() for p in children):
            time.sleep(0.05)
        alive = [p for p in children if Path(f"/proc/{p}/stat").exists()
                 and ") Z " not in Path(f"/proc/{p}/stat").read_text()]  # fmt: skip
        assert not alive, f"ffmpeg {alive} outlived its app"
    finally:
        app.stop()
