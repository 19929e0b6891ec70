"""Benchmark of the demo app, all parts real, loopback only, bounded in time.

1. Redis PUBLISH → every Socket.IO client: p50/p99 at 100, 1000, 5000 clients
   (goals: p99 <= 100 ms at 1000, <= 1 s at 5000).
2. Upload of a 30 s 640x360 clip → announcement received (goal <= 10 s).
3. 1 MiB Range read from GridFS vs the same bytes from a local file through the same app
   (goal <= 1.5x with the chunk cache; the same app without it for comparison).
4. bench/stage.py (issue 12): audience fan-out from clients in a network namespace, page
   weight, time to first graph point in Chromium, 1,000 concurrent Range requests for one
   new video (with and without the chunk cache).

The clients are minimal Engine.IO v4 / Socket.IO v5 websocket clients on one epoll loop
(one process, thousands of sockets); the app, redis-server and SecantusDB run as in the
tests.
Run: ``make -C demo-app bench`` (or ``.venv/bin/python bench/bench.py --clients 100,1000``).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import resource
import select
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from servers import AppServer, RedisServer, SecantusServer, make_clip

MiB = 1024 * 1024


def percentile(values: list[float], pct: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(pct / 100 * len(ordered) + 0.5) - 1))
    return ordered[index]


class Clients:
    """N raw websocket clients on one epoll loop: Engine.IO v4 / Socket.IO v5, just enough to
    join "/", answer pings and timestamp ``announce`` events.  No coroutine or thread per
    client, so the measuring side costs far less CPU per frame than the server side."""

    def __init__(
        self, port: int, host: str = "127.0.0.1", sources: list[str] | None = None
    ) -> None:
        self.port = port
        self.host = host
        self.sources = sources or []  # client addresses to spread the connections over
        self.epoll = select.epoll()
        self.socks: dict[int, socket.socket] = {}
        self.buffers: dict[int, bytearray] = {}
        self.joined: set[int] = set()
        self.received: dict[Any, list[float]] = {}
        self.videos: list[tuple[float, dict[str, Any]]] = []

    def connect(self, count: int, batch: int = 200) -> None:
        for first in range(0, count, batch):
            fresh = []
            for i in range(min(batch, count - first)):
                source = (
                    (self.sources[(first + i) % len(self.sources)], 0) if self.sources else None
                )
                sock = socket.create_connection(
                    (self.host, self.port), timeout=30, source_address=source
                )
                key = base64.b64encode(os.urandom(16)).decode()
                sock.sendall(
                    (
                        "GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\n"
                        f"Host: {self.host}:{self.port}\r\nUpgrade: websocket\r\n"
                        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                        "Sec-WebSocket-Version: 13\r\n\r\n"
                    ).encode()
                )
                fresh.append(sock)
            for sock in fresh:
                head = b""
                while b"\r\n\r\n" not in head:
                    data = sock.recv(4096)
                    if not data:
                        raise ConnectionError("closed during the websocket handshake")
                    head += data
                status, _, rest = head.partition(b"\r\n\r\n")
                if b" 101 " not in status.split(b"\r\n", 1)[0]:
                    raise ConnectionError(status[:80])
                sock.setblocking(False)
                fd = sock.fileno()
                self.socks[fd] = sock
                self.buffers[fd] = bytearray(rest)
                self.epoll.register(fd, select.EPOLLIN)
                self._parse(fd, time.monotonic())
            target = first + len(fresh)
            self.pump(lambda t=target: len(self.joined) >= t, 60)

    def send_text(self, fd: int, text: bytes) -> None:
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(text))
        self.socks[fd].send(bytes([0x81, 0x80 | len(text)]) + mask + masked)

    def _parse(self, fd: int, now: float) -> None:
        buf = self.buffers[fd]
        while len(buf) >= 2:
            length = buf[1] & 0x7F
            offset = 2
            if length == 126:
                if len(buf) < 4:
                    return
                length = struct.unpack_from("!H", buf, 2)[0]
                offset = 4
            elif length == 127:
                if len(buf) < 10:
                    return
                length = struct.unpack_from("!Q", buf, 2)[0]
                offset = 10
            if len(buf) < offset + length:
                return
            opcode = buf[0] & 0x0F
            payload = bytes(buf[offset : offset + length])
            del buf[: offset + length]
            if opcode == 0x1:
                self._packet(fd, payload, now)

    def _packet(self, fd: int, payload: bytes, now: float) -> None:
        if payload.startswith(b"0"):
            self.send_text(fd, b"40")  # Socket.IO CONNECT to "/"
        elif payload == b"2":
            self.send_text(fd, b"3")  # Engine.IO ping -> pong
        elif payload.startswith(b"40"):
            self.joined.add(fd)
        elif payload.startswith(b'42["announce"'):
            msg = json.loads(payload[2:])[1]
            if msg.get("type") == "bench":
                self.received.setdefault(msg["seq"], []).append(now)
            else:
                self.videos.append((now, msg))

    def pump(self, done: Any, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not done():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            for fd, _ in self.epoll.poll(min(remaining, 0.01)):
                now = time.monotonic()
                try:
                    data = self.socks[fd].recv(1 << 18)
                except BlockingIOError:
                    continue
                if not data:
                    self.epoll.unregister(fd)
                    continue
                self.buffers[fd] += data
                self._parse(fd, now)
        return True

    def close(self) -> None:
        for sock in self.socks.values():
            sock.close()
        self.epoll.close()


def fanout(app: AppServer, redis_server: RedisServer, count: int, rounds: int) -> dict[str, Any]:
    clients = Clients(app.port)
    started = time.monotonic()
    clients.connect(count)
    connect_s = time.monotonic() - started
    clients.pump(lambda: False, 1.5)  # settle: answer pings, drain cpu samples
    publisher = redis_server.client()
    latencies: list[float] = []
    missing = 0
    try:
        for seq in range(rounds):
            sent = time.monotonic()
            publisher.publish(app.channel, json.dumps({"type": "bench", "seq": seq}))
            clients.pump(lambda s=seq: len(clients.received.get(s, [])) >= count, 10)
            arrivals = clients.received.get(seq, [])
            latencies.extend(t - sent for t in arrivals)
            missing += count - len(arrivals)
            clients.pump(lambda: False, 0.7)
    finally:
        clients.close()
    return {
        "clients": count,
        "connect_s": connect_s,
        "p50_ms": 1000 * percentile(latencies, 50),
        "p99_ms": 1000 * percentile(latencies, 99),
        "max_ms": 1000 * max(latencies, default=float("nan")),
        "missing": missing,
        "rounds": rounds,
    }


def upload_to_announce(app: AppServer, clip: Path) -> tuple[float, dict[str, Any]]:
    watcher = Clients(app.port)
    watcher.connect(1)
    result: dict[str, Any] = {}

    def post() -> None:
        with clip.open("rb") as handle:
            result["response"] = requests.post(
                app.url + "/upload",
                files={"file": (clip.name, handle, "video/mp4")},
                data={"uploader": "bench"},
                timeout=120,
            )

    started = time.monotonic()
    poster = threading.Thread(target=post)
    poster.start()
    try:
        ok = watcher.pump(
            lambda: any(m.get("filename") == clip.name for _, m in watcher.videos), 120
        )
    finally:
        poster.join()
        watcher.close()
    response = result["response"]
    if response.status_code != 202:
        raise RuntimeError(f"upload refused: {response.status_code} {response.text}")
    if not ok:
        raise RuntimeError("no announcement within 120 s")
    arrived, msg = next((t, m) for t, m in watcher.videos if m.get("filename") == clip.name)
    return arrived - started, msg


def range_reads(app: AppServer, video: dict[str, Any], local_dir: Path, reads: int) -> dict:
    session = requests.Session()
    body = session.get(app.url + video["url"], timeout=60).content
    (local_dir / "same.webm").write_bytes(body)
    size = len(body)
    if size <= MiB:
        raise RuntimeError(f"stored video too small for 1 MiB ranges: {size}")
    offsets = [int(i * (size - MiB) / max(1, reads - 1)) for i in range(reads)]

    def timed(url: str) -> list[float]:
        times = []
        for offset in offsets:
            header = {"Range": f"bytes={offset}-{offset + MiB - 1}"}
            t0 = time.perf_counter()
            response = session.get(url, headers=header, timeout=30)
            times.append(time.perf_counter() - t0)
            if response.status_code != 206 or response.content != body[offset : offset + MiB]:
                raise RuntimeError(f"bad range reply from {url}")
        return times

    gridfs_url = app.url + video["url"]
    local_url = app.url + "/local/same.webm"
    timed(gridfs_url)  # warm both paths once
    timed(local_url)
    gridfs, local = [], []
    for _ in range(3):  # interleave: both see the same machine state
        gridfs += timed(gridfs_url)
        local += timed(local_url)
    return {
        "size": size,
        "gridfs_ms": 1000 * statistics.median(gridfs),
        "local_ms": 1000 * statistics.median(local),
        "ratio": statistics.median(gridfs) / statistics.median(local),
    }


def ffmpeg_alone(clip: Path, work: Path) -> float:
    """The same FFmpeg command the app runs, writing to a file: the machine's floor."""
    from demolab_app.transcode import encoder_args

    cmd = [
        "ffmpeg", "-nostdin", "-v", "error", "-y", "-i", str(clip), "-map", "0:v:0",
        "-map", "0:a:0", *encoder_args("vp8", "1M", "128k"), "-pix_fmt", "yuv420p",
        "-f", "webm", str(work / "alone.webm"),
    ]  # fmt: skip
    started = time.monotonic()
    subprocess.run(cmd, check=True, timeout=300)
    return time.monotonic() - started


def raise_nofile() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


class _nothing:  # noqa: N801  (a no-op context manager when there is no namespace)
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--clients", default="100,1000,5000", help="comma-separated; empty: skip the fan-out"
    )
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument(
        "--cpu-interval", type=float, default=1.0, help="the app's CPU broadcast period (s)"
    )
    parser.add_argument("--reads", type=int, default=10)
    parser.add_argument(
        "--audience", default="200,1000",
        help="audience fan-out client counts, from a network namespace (needs root); empty: skip",
    )  # fmt: skip
    parser.add_argument("--burst", type=int, default=1000, help="simultaneous Range requests")
    args = parser.parse_args()
    counts = [int(c) for c in args.clients.split(",") if c]
    nofile = raise_nofile()
    usable = nofile - 200  # server and clients are separate processes, each under nofile
    counts = [c for c in counts if c <= usable] or counts[:1]
    load = os.getloadavg()
    print(f"nofile limit {nofile}; client counts {counts}; load avg {load[0]:.1f}", flush=True)

    import stage
    from netns import ClientNetns

    audience_counts = [int(c) for c in args.audience.split(",") if c]
    netns = ClientNetns(tag="bench", addresses=70) if audience_counts else None
    with tempfile.TemporaryDirectory(prefix="demolab-bench-") as tmp, netns or _nothing():
        work = Path(tmp)
        local_dir = work / "local"
        local_dir.mkdir()
        redis_server = RedisServer(work / "redis")
        mongo = SecantusServer(work / "secantus")
        redis_server.start()
        mongo.provision()
        app = AppServer(
            work / "app",
            redis_server,
            mongo,
            extra_env={
                "DEMOLAB_LOCAL_MEDIA_DIR": str(local_dir),
                "DEMOLAB_VIDEO_BITRATE": "1M",
                "DEMOLAB_CPU_INTERVAL": str(args.cpu_interval),
                **(
                    {"DEMOLAB_AUDIENCE_HOST": netns.host_ip,
                     "DEMOLAB_AUDIENCE_MAX_CONNECTIONS": "20000"}
                    if netns else {}
                ),
            },
        )  # fmt: skip
        # the same app without the chunk cache: the before of the Range numbers
        uncached = AppServer(
            work / "app-nocache", redis_server, mongo,
            extra_env={"DEMOLAB_LOCAL_MEDIA_DIR": str(local_dir), "DEMOLAB_CHUNK_CACHE_BYTES": "0"},
        )  # fmt: skip
        app.start()
        uncached.start()
        try:
            results = []
            for count in counts:
                result = fanout(app, redis_server, count, args.rounds)
                results.append(result)
                print(
                    f"fanout {count:>5} clients: connect {result['connect_s']:.1f}s, "
                    f"p50 {result['p50_ms']:.1f} ms, p99 {result['p99_ms']:.1f} ms, "
                    f"max {result['max_ms']:.1f} ms, missing {result['missing']}",
                    flush=True,
                )
            clip = make_clip(work / "talk-30s.mp4", seconds=30, size="640x360")
            elapsed, video = upload_to_announce(app, clip)
            print(f"upload 30 s 640x360 -> announcement: {elapsed:.2f} s (goal <= 10 s)")
            alone = ffmpeg_alone(clip, work)
            print(f"  same ffmpeg command alone, to a file: {alone:.2f} s (this machine's floor)")
            reads = range_reads(app, video, local_dir, args.reads)
            print(
                f"1 MiB range: GridFS {reads['gridfs_ms']:.2f} ms, local file "
                f"{reads['local_ms']:.2f} ms, ratio {reads['ratio']:.2f}x (goal <= 1.5x)"
            )
            before = range_reads(uncached, video, local_dir, args.reads)
            print(
                f"  without the chunk cache: GridFS {before['gridfs_ms']:.2f} ms, local file "
                f"{before['local_ms']:.2f} ms, ratio {before['ratio']:.2f}x"
            )
            bursts = {}
            runs = (("local file", app), ("cache, new video", app), ("cache, again", app),
                    ("no cache, new video", uncached))  # fmt: skip
            path = ""
            for name, server in runs:
                if name == "local file":  # the floor: the same bytes from a file, same app
                    path, size = "/local/same.webm", reads["size"]
                elif name != "cache, again":  # "again": the same video, now in memory
                    fresh, size = stage.new_video(mongo, server.database, video["fileid"])
                    path = f"/video/{fresh}.webm"
                stats0 = stage.cache_stats(server.url)
                burst = stage.concurrent_ranges(server.port, path, size, args.burst)
                stats1 = stage.cache_stats(server.url)
                queries = stats1.get("queries", 0) - stats0.get("queries", 0) if stats1 else None
                queries = None if name == "local file" else queries
                bursts[name] = burst
                print(
                    f"{args.burst} simultaneous 1 MiB ranges ({name}): "
                    f"p50 {burst['p50_ms']:.0f} ms, p99 {burst['p99_ms']:.0f} ms, "
                    f"all in {burst['wall_s']:.1f} s, failed {burst['failed']}, "
                    f"chunk queries {queries if queries is not None else 'n/a'}",
                    flush=True,
                )
            weight = stage.page_weight(app.url)
            print(f"page weight of the demo page: {sum(weight.values()) / 1024:.0f} KiB "
                  + ", ".join(f"{k} {v / 1024:.0f}" for k, v in weight.items()))  # fmt: skip
            firsts = stage.first_graph_point(app.url)
            print("time to first graph point in Chromium: "
                  + ", ".join(f"{t:.0f}" for t in firsts) + " ms")  # fmt: skip
            audience = []
            for count in audience_counts:
                assert netns is not None
                result = stage.audience_fanout(app, redis_server, netns, count, args.rounds)
                audience.append(result)
                print(
                    f"audience fan-out {count:>5} clients over {result['addresses']} addresses "
                    f"(netns): connect {result['connect_s']:.1f}s, p50 {result['p50_ms']:.1f} ms, "
                    f"p99 {result['p99_ms']:.1f} ms, max {result['max_ms']:.1f} ms, "
                    f"missing {result['missing']}",
                    flush=True,
                )
            print("\nsummary (goal in brackets)")
            for r in results:
                goal = {1000: " [p99 <= 100 ms]", 5000: " [p99 <= 1000 ms]"}.get(r["clients"], "")
                print(
                    f"  publish->all {r['clients']:>5}: p50 {r['p50_ms']:.0f} ms, "
                    f"p99 {r['p99_ms']:.0f} ms{goal}"
                )
            print(f"  upload->announce: {elapsed:.2f} s [<= 10 s] (ffmpeg alone {alone:.2f} s)")
            print(f"  gridfs/local 1 MiB range: {reads['ratio']:.2f}x [<= 1.5x] "
                  f"(without the chunk cache {before['ratio']:.2f}x)")  # fmt: skip
            for name, burst in bursts.items():
                print(f"  {args.burst} simultaneous 1 MiB ranges, {name}: "
                      f"p99 {burst['p99_ms']:.0f} ms")  # fmt: skip
            for r in audience:
                goal = " [p99 <= 200 ms]" if r["clients"] == 1000 else ""
                print(f"  audience publish->all {r['clients']:>5}: p50 {r['p50_ms']:.0f} ms, "
                      f"p99 {r['p99_ms']:.0f} ms{goal}")  # fmt: skip
            print(f"  demo page weight: {sum(weight.values()) / 1024:.0f} KiB; first graph "
                  f"point {stage.median(firsts):.0f} ms (median)")  # fmt: skip
        finally:
            uncached.stop()
            app.stop()
            mongo.stop()
            redis_server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
