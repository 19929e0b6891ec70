"""The broadcast fast path (broadcast.py): one frame written directly to every websocket.

Against the real app: every one of N raw websocket clients, a long-polling client and a
polling→websocket upgraded client get every message, in order.  In this process (gevent
server, gevent sockets): the direct path is really taken, and a client that stops reading
or is gone does not hold up the others; the stalled one later gets every frame intact.
"""

from __future__ import annotations

import base64
import json
import os
import socket as std_socket
import struct
import time
from collections.abc import Callable
from typing import Any

import pytest
import requests
from conftest import Listener
from servers import AppServer, RedisServer
from wsproto.frame_protocol import FrameProtocol

from demolab_app.broadcast import text_frame


class RawClient:
    """A bare Engine.IO v4 / Socket.IO v5 websocket client (no extensions), joined to "/"."""

    def __init__(self, port: int, sockets: Any = std_socket, rcvbuf: int = 0) -> None:
        self.sock = sockets.socket(std_socket.AF_INET, std_socket.SOCK_STREAM)
        if rcvbuf:
            self.sock.setsockopt(std_socket.SOL_SOCKET, std_socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(20)
        self.sock.connect(("127.0.0.1", port))
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            (
                "GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\n"
                f"Host: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        self.buf = bytearray()

    def join(self) -> RawClient:
        """Finish the handshake and join "/" (after all clients sent theirs: faster)."""
        while b"\r\n\r\n" not in self.buf:
            self._fill()
        head, _, rest = bytes(self.buf).partition(b"\r\n\r\n")
        assert b" 101 " in head.split(b"\r\n", 1)[0], head
        self.buf = bytearray(rest)
        opened = self.next_text()
        assert opened.startswith("0")  # Engine.IO OPEN
        self.eio_sid = json.loads(opened[1:])["sid"]
        self.send_text("40")  # Socket.IO CONNECT to "/"
        while not self.next_text().startswith("40"):
            pass
        return self

    def _fill(self) -> None:
        data = self.sock.recv(1 << 16)
        if not data:
            raise ConnectionError("closed by the server")
        self.buf += data

    def send_text(self, text: str) -> None:
        mask = os.urandom(4)
        payload = bytes(b ^ mask[i % 4] for i, b in enumerate(text.encode()))
        self.sock.sendall(bytes([0x81, 0x80 | len(payload)]) + mask + payload)

    def next_text(self) -> str:
        """The next text frame's payload (answers Engine.IO pings on the way)."""
        while True:
            while len(self.buf) < 2:
                self._fill()
            assert self.buf[0] & 0x70 == 0, "no extension was negotiated: RSV bits set"
            size, offset = self.buf[1] & 0x7F, 2
            if size == 126:
                while len(self.buf) < 4:
                    self._fill()
                size, offset = struct.unpack_from("!H", self.buf, 2)[0], 4
            elif size == 127:
                while len(self.buf) < 10:
                    self._fill()
                size, offset = struct.unpack_from("!Q", self.buf, 2)[0], 10
            while len(self.buf) < offset + size:
                self._fill()
            opcode = self.buf[0] & 0x0F
            text = bytes(self.buf[offset : offset + size]).decode()
            del self.buf[: offset + size]
            if opcode == 0x1 and text == "2":
                self.send_text("3")
            elif opcode == 0x1:
                return text

    def next_event(self, name: str) -> Any:
        prefix = f'42["{name}",'
        while not (text := self.next_text()).startswith(prefix):
            pass
        return json.loads(text[2:])[1]

    def close(self, reset: bool = False) -> None:
        if reset:  # an abrupt end: RST instead of FIN
            self.sock.setsockopt(
                std_socket.SOL_SOCKET, std_socket.SO_LINGER, struct.pack("ii", 1, 0)
            )
        self.sock.close()


@pytest.mark.parametrize("size", [0, 125, 126, 65535, 65536, 200_000])
def test_text_frame_is_the_frame_wsproto_sends(size: int) -> None:
    text = "x" * size
    assert text_frame(text.encode()) == FrameProtocol(False, []).send_data(text, True)


def test_broadcast_reaches_every_client_in_order(
    app: AppServer, redis_server: RedisServer, listener_factory: Callable[..., Listener]
) -> None:
    count, messages = 200, 10
    raw = [c.join() for c in [RawClient(app.port) for _ in range(count)]]
    polling = listener_factory(transports=["polling"])
    upgraded = listener_factory(transports=["polling", "websocket"])
    assert requests.get(app.url + "/healthz", timeout=5).json()["clients"] >= count + 2
    publisher = redis_server.client()
    for seq in range(messages):
        publisher.publish(app.channel, json.dumps({"type": "fanout", "seq": seq}))
    started = time.monotonic()
    for client in raw:
        got = [client.next_event("announce")["seq"] for _ in range(messages)]
        assert got == list(range(messages))
        client.close()
    elapsed = time.monotonic() - started
    for listener in (polling, upgraded):
        for seq in range(messages):
            listener.wait("announce", lambda d, s=seq: d.get("seq") == s, timeout=10)
        seqs = [d["seq"] for d, _ in listener.of("announce") if d.get("type") == "fanout"]
        assert seqs == list(range(messages))
    assert upgraded.client.transport() == "websocket"
    assert polling.client.transport() == "polling"
    assert elapsed < 10, elapsed


def test_stalled_and_closed_clients_do_not_hold_up_the_others() -> None:
    """In-process gevent server: count direct writes, stall one client, reset another."""
    import gevent
    import gevent.socket
    import socketio
    from gevent.pywsgi import WSGIServer

    from demolab_app.broadcast import Broadcaster

    sio = socketio.Server(async_mode="gevent")
    broadcaster = Broadcaster(sio)
    server = WSGIServer(("127.0.0.1", 0), socketio.WSGIApp(sio), log=None)
    server.start()
    try:
        port = server.server_port
        healthy = [RawClient(port, gevent.socket).join() for _ in range(10)]
        stalled = RawClient(port, gevent.socket, rcvbuf=4096).join()  # then never reads
        gone = RawClient(port, gevent.socket).join()
        # a small send buffer on the server side: 64 KiB frames to it are written in parts
        server_side = broadcaster.direct[stalled.eio_sid].ws.sock
        server_side.setsockopt(std_socket.SOL_SOCKET, std_socket.SO_SNDBUF, 8192)
        gevent.sleep(0.1)
        broadcaster.emit("announce", {"seq": -1})
        assert broadcaster.stats == {"direct": 12, "queued": 0}
        gone.close(reset=True)
        gevent.sleep(0.1)
        assert gone.eio_sid not in broadcaster.direct  # its session ended as before
        assert len(list(sio.manager.get_participants("/", None))) == 11

        # 64 KiB messages until the stalled client's socket buffers are full (its writes
        # fall back to the queued path), then 20 more; a None seq ends the run
        pad = "x" * 65536
        received: dict[int, list[int]] = {i: [] for i in range(len(healthy))}

        def read(index: int, client: RawClient) -> None:
            while (seq := client.next_event("announce")["seq"]) is not None:
                received[index].append(seq)

        readers = [gevent.spawn(read, i, c) for i, c in enumerate(healthy)]
        sent = [-1]
        extra = 20
        while extra > 0 and len(sent) < 2000:  # 2000 x 64 KiB: beyond any socket buffer
            for _ in range(2):  # two at once, as from a burst of Redis messages
                broadcaster.emit("announce", {"seq": len(sent) - 1, "pad": pad})
                sent.append(len(sent) - 1)
            gevent.sleep(0)  # let the readers (and writers) run, as the relay's loop does
            if broadcaster.stats["queued"]:
                extra -= 2
        broadcaster.emit("announce", {"seq": None})
        gevent.joinall(readers, timeout=30, raise_error=True)
        assert all(r == sent for r in received.values())
        assert broadcaster.stats["queued"] > 0, broadcaster.stats  # the stalled one fell back
        assert broadcaster.stats["direct"] > 10 * len(sent), broadcaster.stats

        # the stalled client, reading at last, gets every frame whole and in order
        seqs = [stalled.next_event("announce")["seq"] for _ in sent]
        assert seqs == sent
        for client in [*healthy, stalled]:
            client.close()
    finally:
        server.stop(timeout=1)
