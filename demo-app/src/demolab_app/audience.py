"""Audience mode: the app also listens on the lab network address, read-only for the room.

The presenter's listener (``host``, loopback) is unchanged.  A second listener on
``audience_host`` (same port) serves the audience's phones through ``AudienceGate``:

- read-only routes only: the page, its static assets, Socket.IO (the live CPU graph and the
  announcements), the video list and the videos themselves; everything else is 404 there
  (``/healthz``, the presenter's pages);
- ``POST /upload`` needs the presenter's upload token in the ``X-Demolab-Upload-Token``
  header (constant-time comparison), else 403 before the body is looked at: nothing is
  stored.  The loopback page shows the token (folded away) and a link for the presenter's
  own other devices that carries it in the URL *fragment*, which browsers never send; the
  audience URL never carries it.
- ``AudienceServer`` counts open TCP connections per client address and in total; past
  either limit the connection gets a short "room is full" page (503) and is closed, before
  any request reaches the app.
"""

from __future__ import annotations

import hmac
import json
import logging
import re
import secrets
import socket
from collections.abc import Callable
from typing import Any

from gevent.pywsgi import WSGIServer

from .access import is_local_address
from .config import Settings

log = logging.getLogger(__name__)

AUDIENCE_KEY = "demolab.audience"  # set in the WSGI environ of requests from the audience
TOKEN_HEADER = "HTTP_X_DEMOLAB_UPLOAD_TOKEN"
DRAIN_LIMIT = 16 * 1024 * 1024
READ_ONLY = re.compile(r"^/(|videos|video/[0-9a-fA-F]{24}\.webm|static/.+|socket\.io/.*)$")

ROOM_FULL_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="refresh" content="30">
<title>The room is full</title>
<style>body{{font:1.6em/1.4 sans-serif;background:#000;color:#fff;margin:2em;}}
h1{{font-size:2em;color:#ffd54f;}}</style></head>
<body><h1>The room is full</h1>
<p>{reason}</p>
<p>This page tries again by itself in 30 seconds; meanwhile, watch the projector.</p>
</body></html>
"""


def is_presenter(environ: dict[str, Any]) -> bool:
    """Loopback peer on the presenter's listener (never a request from the audience's)."""
    return not environ.get(AUDIENCE_KEY) and is_local_address(environ.get("REMOTE_ADDR"))


def upload_token(settings: Settings) -> str:
    """The configured token, or one random token for this process's lifetime."""
    return settings.upload_token or _RANDOM_TOKEN


_RANDOM_TOKEN = secrets.token_urlsafe(24)


def audience_url(settings: Settings, port: int) -> str:
    """What the room types or scans: never carries the token."""
    if settings.audience_url:
        return settings.audience_url
    if not settings.audience_host:
        return ""
    host = settings.audience_host
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}/"


def page_context(environ: dict[str, Any], settings: Settings, port: int) -> dict[str, str]:
    """Template values of the demo page for this viewer (plain text: the caller escapes)."""
    presenter = is_presenter(environ)
    url = audience_url(settings, port)
    return {
        "role": "presenter" if presenter else "audience",
        "audience_url": url,
        # only the presenter's own page ever contains the token
        "upload_token": upload_token(settings) if presenter and url else "",
    }


def _json_reply(
    start_response: Callable[..., Any], status: str, message: str, close: bool = False
) -> list[bytes]:
    body = json.dumps({"error": message}).encode()
    headers = [
        ("Content-Type", "application/json"),
        ("Content-Length", str(len(body))),
        ("Cache-Control", "no-store"),
    ]
    if close:
        headers.append(("Connection", "close"))
    start_response(status, headers)
    return [body]


def _drain(environ: dict[str, Any]) -> None:
    """Read (and drop) a refused upload's body, up to a limit, so the client sees our answer."""
    try:
        remaining = min(int(environ.get("CONTENT_LENGTH") or 0), DRAIN_LIMIT)
    except ValueError:
        return
    stream = environ["wsgi.input"]
    while remaining > 0:
        data = stream.read(min(256 * 1024, remaining))
        if not data:
            break
        remaining -= len(data)


class AudienceGate:
    """WSGI middleware in front of the whole app, on the audience's listener only."""

    def __init__(self, app: Callable[..., Any], settings: Settings) -> None:
        self.app = app
        self.settings = settings

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        environ[AUDIENCE_KEY] = True
        method = environ.get("REQUEST_METHOD", "GET")
        path = environ.get("PATH_INFO", "")
        if path == "/upload" and method == "POST":
            given = environ.get(TOKEN_HEADER, "")
            if not given or not hmac.compare_digest(
                given.encode(), upload_token(self.settings).encode()
            ):
                _drain(environ)
                return _json_reply(
                    start_response,
                    "403 Forbidden",
                    "Only the presenter uploads here: this device has no valid upload token "
                    "(the presenter's page on the laptop shows the link with it); nothing was "
                    "stored",
                    close=True,
                )
            return self.app(environ, start_response)
        socket_io = path.startswith("/socket.io/") and method == "POST"  # long-polling
        if READ_ONLY.match(path) and (method in {"GET", "HEAD"} or socket_io):
            return self.app(environ, start_response)
        return _json_reply(start_response, "404 Not Found", "Not available on this address")


class AudienceServer(WSGIServer):
    """gevent WSGIServer that caps open connections per client address and in total."""

    def __init__(self, listener: Any, application: Any, *, max_total: int, max_per_address: int,
                 **kwargs: Any) -> None:  # fmt: skip
        super().__init__(listener, application, **kwargs)
        self.max_total = max_total
        self.max_per_address = max_per_address
        self.open_total = 0
        self.open_by_address: dict[str, int] = {}
        self.refused = 0

    def stats(self) -> dict[str, int]:
        return {
            "connections": self.open_total,
            "addresses": len(self.open_by_address),
            "max_connections": self.max_total,
            "max_per_address": self.max_per_address,
            "refused": self.refused,
        }

    def handle(self, sock: socket.socket, address: Any) -> None:
        peer = str(address[0]) if address else "?"
        mine = self.open_by_address.get(peer, 0)
        if self.open_total >= self.max_total:
            self._refuse(
                sock,
                f"{self.open_total} connections are open, the most this laptop serves to the room.",
            )
            return
        if mine >= self.max_per_address:
            self._refuse(
                sock,
                f"Your device already has {mine} connections open: close other tabs of this "
                "page and reload.",
            )
            return
        self.open_total += 1
        self.open_by_address[peer] = mine + 1
        try:
            super().handle(sock, address)
        finally:
            self.open_total -= 1
            left = self.open_by_address.get(peer, 1) - 1
            if left > 0:
                self.open_by_address[peer] = left
            else:
                self.open_by_address.pop(peer, None)

    def _refuse(self, sock: socket.socket, reason: str) -> None:
        """Read the request head (briefly), answer 503 with the room-full page, close."""
        self.refused += 1
        body = ROOM_FULL_PAGE.format(reason=reason).encode()
        head = (
            "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/html; charset=utf-8\r\n"
            f"Content-Length: {len(body)}\r\nRetry-After: 30\r\nCache-Control: no-store\r\n"
            "Connection: close\r\n\r\n"
        ).encode()
        try:
            sock.settimeout(2.0)
            seen = b""
            while b"\r\n\r\n" not in seen and len(seen) < 16384:
                data = sock.recv(4096)
                if not data:
                    break
                seen += data
            sock.sendall(head + body)
            sock.shutdown(socket.SHUT_WR)
            sock.recv(4096)  # let the client read before the close (no RST over the answer)
        except OSError:
            pass
        finally:
            sock.close()


def make_server(settings: Settings, app: Any, port: int, **kwargs: Any) -> AudienceServer | None:
    """The audience's listener, or None when audience mode is off."""
    if not settings.audience_host:
        return None
    return AudienceServer(
        (settings.audience_host, port),
        AudienceGate(app, settings),
        max_total=settings.audience_max_connections,
        max_per_address=settings.audience_max_per_address,
        **kwargs,
    )
