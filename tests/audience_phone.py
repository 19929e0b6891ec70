"""The audience's phone and the presenter, on lab test hosts (standard library only: a bare test
host has python3 and nothing else). tests/lifecycle.py pipes this file to `python3 -` over ssh.

    audience_phone.py present URL CLIP
        on the lab host: the presenter's upload over loopback (POST URL/upload, no token);
        prints {"status": ..., "body": ...}
    audience_phone.py phone URL CLIP --probe PORT...
        on another host: the room's phone. GET the page, the ports that answer on URL's host,
        /videos, Socket.IO (long-polling) until the CPU graph has updated twice, POST /upload
        without the token; prints that as one JSON line ({"ready": true, ...}); then waits for
        the next announced video, reads /videos again and the video's first bytes (Range), and
        prints a second JSON line.
"""

from __future__ import annotations

import argparse
import http.client
import json
import socket
import sys
import time
import uuid
from typing import Any
from urllib.parse import urlparse

EIO = "/socket.io/?EIO=4&transport=polling"
WEBM_MAGIC = "1a45dfa3"  # EBML header


def out(data: Any) -> None:
    print(json.dumps(data), flush=True)


def request(url: str, method: str = "GET", path: str = "/", body: bytes | None = None,
            headers: dict[str, str] | None = None, timeout: float = 30) -> tuple[int, dict[str, str], bytes]:
    """One request, straight to the host (no proxy from the environment)."""
    parts = urlparse(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def multipart(clip: str, filename: str) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    with open(clip, "rb") as f:
        data = f.read()
    body = (f'--{boundary}\r\nContent-Disposition: form-data; name="uploader"\r\n\r\nlifecycle\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def upload(url: str, clip: str, filename: str) -> dict[str, Any]:
    body, ctype = multipart(clip, filename)
    status, _, reply = request(url, "POST", "/upload", body, {"Content-Type": ctype}, timeout=60)
    try:
        parsed: Any = json.loads(reply)
    except ValueError:
        parsed = reply[:300].decode(errors="replace")
    return {"status": status, "body": parsed}


class SocketIO:
    """A Socket.IO v5 client over Engine.IO v4 long-polling, as a browser falls back to."""

    def __init__(self, url: str) -> None:
        self.url = url
        status, _, body = request(url, path=f"{EIO}&t={uuid.uuid4().hex[:8]}")
        text = body.decode()
        if status != 200 or not text.startswith("0"):
            raise RuntimeError(f"Engine.IO handshake: {status} {text[:200]}")
        handshake = json.loads(text[1:])
        self.sid, self.ping_ms = handshake["sid"], handshake["pingInterval"]
        self.send("40")  # connect to the default namespace

    def send(self, packet: str) -> None:
        status, _, body = request(self.url, "POST", f"{EIO}&sid={self.sid}", packet.encode(),
                                  {"Content-Type": "text/plain;charset=UTF-8"})
        if status != 200:
            raise RuntimeError(f"Socket.IO send: {status} {body[:200]!r}")

    def events(self, deadline: float):
        """(event, data) as they come, answering the server's pings, until the deadline."""
        while time.monotonic() < deadline:
            status, _, body = request(self.url, path=f"{EIO}&sid={self.sid}",
                                      timeout=self.ping_ms / 1000 + 10)
            if status != 200:
                raise RuntimeError(f"Socket.IO poll: {status} {body[:200]!r}")
            for packet in body.decode().split("\x1e"):
                if packet == "2":
                    self.send("3")
                elif packet.startswith("42"):
                    event = json.loads(packet[2:])
                    yield event[0], (event[1] if len(event) > 1 else None)
                elif packet.startswith(("41", "44", "1")):
                    raise RuntimeError(f"Socket.IO closed: {packet[:200]}")


def probe(host: str, ports: list[int]) -> dict[str, str]:
    found = {}
    for port in ports:
        try:
            with socket.create_connection((host, port), timeout=2):
                found[str(port)] = "open"
        except ConnectionRefusedError:
            found[str(port)] = "refused"
        except OSError as exc:
            found[str(port)] = type(exc).__name__
    return found


def video_ids(url: str) -> list[str]:
    status, _, body = request(url, path="/videos")
    if status != 200:
        raise RuntimeError(f"GET /videos: {status}")
    return [v["fileid"] for v in json.loads(body)["videos"]]


def phone(url: str, clip: str, ports: list[int]) -> None:
    status, _, page = request(url)
    before = video_ids(url)
    sio = SocketIO(url)
    cpu: list[Any] = []
    for event, data in sio.events(time.monotonic() + 15):
        if event == "cpu":
            cpu.append(data)
            if len(cpu) >= 2:
                break
    refused = upload(url, clip, "from-the-room.webm")
    out({"ready": True, "page_status": status, "page": page.decode(errors="replace"),
         "ports": probe(urlparse(url).hostname or "", ports), "cpu": cpu, "refused": refused,
         "videos_before": before})
    announced = None
    for event, data in sio.events(time.monotonic() + 120):
        if event == "announce" and data and data.get("fileid") not in before:
            announced = data
            break
    result: dict[str, Any] = {"announced": announced}
    if announced:
        result["videos_after"] = video_ids(url)
        status, headers, body = request(url, path=announced["url"], headers={"Range": "bytes=0-1023"})
        result.update(range_status=status, content_range=headers.get("content-range", ""),
                      range_bytes=len(body), magic=body[:4].hex())
    out(result)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    present = sub.add_parser("present")
    present.add_argument("url")
    present.add_argument("clip")
    room = sub.add_parser("phone")
    room.add_argument("url")
    room.add_argument("clip")
    room.add_argument("--probe", type=int, nargs="*", default=[])
    a = ap.parse_args()
    if a.cmd == "present":
        out(upload(a.url, a.clip, "from-the-stage.webm"))
    else:
        phone(a.url, a.clip, a.probe)
    return 0


if __name__ == "__main__":
    sys.exit(main())
