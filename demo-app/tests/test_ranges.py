"""/video/{id}.webm: Range conformance with byte-exact bodies against GridFS."""

from __future__ import annotations

from typing import Any

import pytest
import requests
from bson import ObjectId
from gridfs import GridFSBucket
from servers import AppServer, SecantusServer


@pytest.fixture(scope="module")
def original(stored_video: dict[str, Any], mongo_server: SecantusServer, app: AppServer) -> bytes:
    with mongo_server.client() as client:
        bucket = GridFSBucket(client[app.database], "videos")
        data = bucket.open_download_stream(ObjectId(stored_video["fileid"])).read()
    assert len(data) > 2 * 261120, "clip should span several GridFS chunks"
    return data


def get(app: AppServer, video: dict[str, Any], **headers: str) -> requests.Response:
    return requests.get(app.url + video["url"], headers=headers, timeout=30)


def test_full_body(app: AppServer, stored_video: dict[str, Any], original: bytes) -> None:
    response = get(app, stored_video)
    assert response.status_code == 200
    assert response.headers["Accept-Ranges"] == "bytes"
    assert response.headers["ETag"] == f'"{stored_video["fileid"]}"'
    assert int(response.headers["Content-Length"]) == len(original)
    assert response.content == original


@pytest.mark.parametrize(
    "spec",
    [
        "first",  # bytes=0-99
        "middle",  # across the first chunk boundary
        "last",  # the last 100 bytes, explicit
        "suffix",  # bytes=-500
        "open",  # bytes=N-
        "beyond",  # end past the length is clipped
        "single",  # one byte
    ],
)
def test_partial_content(
    app: AppServer, stored_video: dict[str, Any], original: bytes, spec: str
) -> None:
    size = len(original)
    chunk = 261120
    start, end, header = {
        "first": (0, 99, "bytes=0-99"),
        "middle": (chunk - 1000, chunk + 1000, f"bytes={chunk - 1000}-{chunk + 1000}"),
        "last": (size - 100, size - 1, f"bytes={size - 100}-{size - 1}"),
        "suffix": (size - 500, size - 1, "bytes=-500"),
        "open": (size // 2, size - 1, f"bytes={size // 2}-"),
        "beyond": (size - 10, size - 1, f"bytes={size - 10}-{size + 5000}"),
        "single": (chunk, chunk, f"bytes={chunk}-{chunk}"),
    }[spec]
    response = get(app, stored_video, Range=header)
    assert response.status_code == 206
    assert response.headers["Content-Range"] == f"bytes {start}-{end}/{size}"
    assert int(response.headers["Content-Length"]) == end - start + 1
    assert response.content == original[start : end + 1]


def test_not_modified(app: AppServer, stored_video: dict[str, Any]) -> None:
    etag = f'"{stored_video["fileid"]}"'
    response = get(app, stored_video, **{"If-None-Match": etag})
    assert response.status_code == 304
    assert response.content == b""
    assert response.headers["ETag"] == etag
    response = get(app, stored_video, **{"If-None-Match": '"other", W/' + etag})
    assert response.status_code == 304


def test_range_not_satisfiable(
    app: AppServer, stored_video: dict[str, Any], original: bytes
) -> None:
    response = get(app, stored_video, Range=f"bytes={len(original)}-")
    assert response.status_code == 416
    assert response.headers["Content-Range"] == f"bytes */{len(original)}"


def test_if_range_mismatch_sends_everything(
    app: AppServer, stored_video: dict[str, Any], original: bytes
) -> None:
    response = get(app, stored_video, Range="bytes=0-9", **{"If-Range": '"stale"'})
    assert response.status_code == 200
    assert response.content == original


def test_head(app: AppServer, stored_video: dict[str, Any], original: bytes) -> None:
    response = requests.head(app.url + stored_video["url"], timeout=10)
    assert response.status_code == 200
    assert int(response.headers["Content-Length"]) == len(original)


@pytest.mark.parametrize("fileid", ["0123456789abcdef01234567", "not-an-id", "zz"])
def test_unknown_or_invalid_id_is_404(app: AppServer, fileid: str) -> None:
    response = requests.get(f"{app.url}/video/{fileid}.webm", timeout=10)
    assert response.status_code == 404
