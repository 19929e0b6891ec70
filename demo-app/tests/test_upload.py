"""Upload → ffprobe → FFmpeg → GridFS → Redis announcement, with real parts."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
import requests
from bson import ObjectId
from conftest import MAX_UPLOAD, Listener, upload, upload_and_wait
from servers import AppServer, SecantusServer, ffprobe_json, media_duration


def gridfs_count(mongo: SecantusServer, app: AppServer) -> int:
    with mongo.client() as client:
        return client[app.database]["videos.files"].count_documents({})


@pytest.mark.parametrize(
    ("codec", "video_codec", "audio_codec", "label"),
    [("vp8", "vp8", "vorbis", "vp8/vorbis"), ("vp9", "vp9", "opus", "vp9/opus")],
)
def test_upload_is_transcoded_stored_and_announced(
    app: AppServer,
    mongo_server: SecantusServer,
    listener_factory: Callable[[], Listener],
    clip: Path,
    tmp_path: Path,
    codec: str,
    video_codec: str,
    audio_codec: str,
    label: str,
) -> None:
    uploader, watcher = listener_factory(), listener_factory()
    video = upload_and_wait(app, uploader, clip, codec=codec, uploader="Ada")

    # progress was reported live to the uploader only
    progress = uploader.of("progress")
    assert progress, "no progress events"
    assert progress[-1][0]["percent"] == pytest.approx(100, abs=1)
    assert not watcher.of("progress")

    # both clients got the announcement
    for listener in (uploader, watcher):
        data, _ = listener.wait("announce", lambda d: d.get("fileid") == video["fileid"])
        assert data["type"] == "video"
        assert data["url"] == f"/video/{video['fileid']}.webm"
        assert data["filename"] == clip.name

    # the stored WebM plays
    body = requests.get(app.url + video["url"], timeout=30)
    assert body.status_code == 200
    assert body.headers["Content-Type"].startswith("video/webm")
    out = tmp_path / "out.webm"
    out.write_bytes(body.content)
    info = ffprobe_json(out)
    assert "webm" in info["format"]["format_name"] or "matroska" in info["format"]["format_name"]
    codecs = {s["codec_type"]: s["codec_name"] for s in info["streams"]}
    assert codecs == {"video": video_codec, "audio": audio_codec}
    # streamed (non-seekable) WebM has no Duration element: measure the packets instead
    assert media_duration(out) == pytest.approx(3.0, abs=0.3)

    # metadata in GridFS
    with mongo_server.client() as client:
        db = client[app.database]
        doc = db["videos.files"].find_one({"_id": ObjectId(video["fileid"])})
        assert doc is not None
        meta = doc["metadata"]
        assert meta["original_filename"] == clip.name
        assert meta["uploader"] == "Ada"
        assert meta["duration"] == pytest.approx(3.0, abs=0.1)
        assert meta["size"] == doc["length"] == len(body.content)
        assert meta["codec"] == label

    # nothing left behind
    assert not os.listdir(app.upload_dir)
    assert not app.spool_fds()
    assert not os.listdir(app.tmp_dir)
    assert not app.ffmpeg_children()


def test_non_video_is_refused_and_nothing_stored(
    app: AppServer, mongo_server: SecantusServer, tmp_path: Path
) -> None:
    before = gridfs_count(mongo_server, app)
    bogus = tmp_path / "notes.txt"
    bogus.write_text("this is not a video\n" * 100)
    response = upload(app, bogus)
    assert response.status_code == 400
    error = response.json()["error"]
    assert "not a video" in error and "notes.txt" in error and "nothing was stored" in error
    assert str(app.upload_dir) not in error
    assert gridfs_count(mongo_server, app) == before
    assert not os.listdir(app.upload_dir)
    assert not app.spool_fds()


def test_still_image_is_not_a_video(app: AppServer, tmp_path: Path) -> None:
    import subprocess

    image = tmp_path / "pic.png"
    subprocess.run(
        ["ffmpeg", "-nostdin", "-v", "error", "-f", "lavfi", "-i", "testsrc=size=64x64",
         "-frames:v", "1", str(image)],
        check=True,
    )  # fmt: skip
    response = upload(app, image)
    assert response.status_code == 400
    assert "not a video" in response.json()["error"]


def test_over_limit_is_413(app: AppServer, mongo_server: SecantusServer, tmp_path: Path) -> None:
    before = gridfs_count(mongo_server, app)
    big = tmp_path / "big.mp4"
    big.write_bytes(os.urandom(MAX_UPLOAD + 1024))
    response = upload(app, big)
    assert response.status_code == 413
    assert "too large" in response.json()["error"]
    assert gridfs_count(mongo_server, app) == before
    assert not os.listdir(app.upload_dir)
    assert requests.get(app.url + "/healthz", timeout=10).status_code == 200


def test_markup_in_filename_is_kept_as_text(
    app: AppServer, listener_factory: Callable[[], Listener], clip: Path
) -> None:
    listener = listener_factory()
    name = "<script>alert(1)<script> & <b>x.mp4"  # a file name cannot hold a "/"
    video = upload_and_wait(app, listener, clip, filename=name)
    assert video["filename"] == name
    listed = requests.get(app.url + "/videos", timeout=10).json()["videos"]
    assert any(v["filename"] == name for v in listed)


def test_missing_file_field_is_400(app: AppServer) -> None:
    response = requests.post(app.url + "/upload", data={"x": "y"}, timeout=10)
    assert response.status_code == 400
    assert "No file" in response.json()["error"]
