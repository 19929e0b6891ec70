"""Broadcast to every Socket.IO client with one encode and one non-blocking write per client.

``sio.emit`` to all clients costs ~60 µs of CPU per client: python-engineio puts the packet
on each client's queue, wakes that client's writer greenlet, and wsproto frames the same
bytes again for every socket.  A server→client websocket frame is not masked, so the frame
for a broadcast is the same for every plain websocket client: :class:`Broadcaster` builds
it once and writes it straight to each socket (``send`` with timeout 0: never waits).

A client gets the library's own path (its queue and writer greenlet), exactly as before,
whenever a direct write could reorder or block: long-polling or still upgrading, a
permessage-deflate connection (browsers offer it: its frames differ per client), packets
still queued or a write in progress, or a full socket buffer (a slow client: it waits in
its own greenlet, not in the broadcast loop).  A partial write leaves the rest of the frame
as a backlog that is written before anything else goes out on that socket.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import struct
from typing import Any

import gevent
import socketio
from engineio import packet as eio_packet
from engineio.async_drivers.gevent import WebSocketWSGI
from gevent.lock import Semaphore
from socketio import packet as sio_packet
from wsproto.events import Message, TextMessage

log = logging.getLogger(__name__)

NAMESPACE = "/"


def text_frame(payload: bytes) -> bytes:
    """One unmasked, final websocket text frame (RFC 6455 §5.2), as a server sends it."""
    size = len(payload)
    if size < 126:
        header = struct.pack("!BB", 0x81, size)
    elif size < 1 << 16:
        header = struct.pack("!BBH", 0x81, 126, size)
    else:
        header = struct.pack("!BBQ", 0x81, 127, size)
    return header + payload


class DirectWebSocket(WebSocketWSGI):  # type: ignore[misc]
    """engine.io's gevent websocket wrapper (simple-websocket), plus :meth:`write_now`.

    engine.io creates one per websocket with its socket's ``_websocket_handler`` as the
    handler; while that handler runs, the wrapper is listed in ``registry`` under the
    engine.io sid.
    """

    def __init__(self, handler: Any, server: Any, registry: dict[str, DirectWebSocket]) -> None:
        self.eio_socket = getattr(handler, "__self__", None)  # None: never registered
        self.registry = registry
        self.plain = False  # no extension negotiated: our frame is the library's frame
        self.lock = Semaphore()  # held while a frame goes out through this wrapper
        self.backlog = b""  # the unsent rest of a partially written frame

        def serve(ws: DirectWebSocket) -> Any:
            sid = getattr(self.eio_socket, "sid", None)
            extensions = ws.ws.environ.get("HTTP_SEC_WEBSOCKET_EXTENSIONS", "")
            self.plain = "permessage-deflate" not in extensions.lower()
            # Push frames out at once: with Nagle, a frame sent while the previous one is not
            # yet acknowledged waits for the client's delayed ACK (up to 40 ms).
            with contextlib.suppress(OSError):  # a peer already gone: no matter
                ws.ws.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if sid is not None:
                registry[sid] = self
            try:
                return handler(ws)
            finally:
                if sid is not None and registry.get(sid) is self:
                    del registry[sid]

        super().__init__(serve, server)

    def send(self, message: Any) -> None:
        """The engine.io writer's path: after any backlog, never interleaved with one.

        As simple-websocket's ``send``, but with ``sendall``: its plain ``send`` drops the
        rest of a frame that a slow client's full buffer accepted only in part.
        """
        with self.lock:
            self._flush_backlog()
            if not self.ws.connected:
                raise OSError("websocket closed")  # as engine.io's wrapper reports it
            if isinstance(message, bytes):
                event: Message | TextMessage = Message(data=message)
            else:
                event = TextMessage(data=str(message))
            self.ws.sock.sendall(self.ws.ws.send(event))

    def write_now(self, frame: bytes) -> bool:
        """Write ``frame`` without waiting if order allows; False: use the queued path."""
        sock = self.eio_socket
        if (
            not self.plain
            or self.backlog
            or self.lock.locked()
            or not self.ws.connected
            or sock is None
            or not sock.upgraded
            or sock.upgrading
            or sock.closing
            or sock.closed
            or not sock.queue.empty()
        ):
            return False
        try:
            sent = self.ws.sock.send(frame, 0, timeout=0.0)  # gevent: 0.0 = don't wait
        except OSError:  # full buffer (BlockingIOError) or a dead peer: the library decides
            return False
        if sent < len(frame):
            self.backlog = frame[sent:]
            gevent.spawn(self._finish_backlog)
        return True

    def _flush_backlog(self) -> None:
        if self.backlog:
            rest, self.backlog = self.backlog, b""
            self.ws.sock.sendall(rest)

    def _finish_backlog(self) -> None:
        with self.lock:
            try:
                self._flush_backlog()
            except OSError:  # the peer is gone; its reader greenlet closes the session
                log.debug("backlog write failed", exc_info=True)


class Broadcaster:
    """``emit(event, data)`` to all clients of the default namespace, like ``sio.emit``."""

    def __init__(self, sio: socketio.Server) -> None:
        self.sio = sio
        self.direct: dict[str, DirectWebSocket] = {}  # engine.io sid → its websocket
        self.stats = {"direct": 0, "queued": 0}

        def make(handler: Any, server: Any) -> DirectWebSocket:
            return DirectWebSocket(handler, server, self.direct)

        # engine.io looks its websocket class up in this per-server dict (shared with the
        # module, hence a copy); async_mode="gevent" with simple-websocket is what we replace.
        sio.eio._async = {**sio.eio._async, "websocket": make}

    def emit(self, event: str, data: Any) -> None:
        pkt = self.sio.packet_class(sio_packet.EVENT, namespace=NAMESPACE, data=[event, data])
        encoded = pkt.encode()
        if isinstance(encoded, list):  # binary attachments: several packets, rare here
            self.sio.emit(event, data)
            return
        eio_pkt = eio_packet.Packet(eio_packet.MESSAGE, encoded)
        frame = text_frame(eio_pkt.encode().encode("utf-8"))
        direct = queued = 0
        for _sid, eio_sid in self.sio.manager.get_participants(NAMESPACE, None):
            ws = self.direct.get(eio_sid)
            if ws is not None and ws.write_now(frame):
                direct += 1
            else:
                self.sio.eio.send_packet(eio_sid, eio_pkt)  # what sio.emit does per client
                queued += 1
        self.stats["direct"] += direct
        self.stats["queued"] += queued
