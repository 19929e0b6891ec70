"""Benchmarks of issue 12 (on stage), all parts real; bench.py runs them after its own.

1. Audience fan-out: N raw Socket.IO clients in their own network namespace (netns.py),
   spread over several client addresses, connected to the app's audience listener on the
   veth's host-side address; Redis PUBLISH in the host namespace → every client, p50/p99
   (goal: p99 <= 200 ms at 1,000 on the 2-core box, clients included).  Both sides read the
   same CLOCK_MONOTONIC (a namespace does not change clocks).
2. Page weight of the demo page (the page and every asset it references, as served).
3. Time to first graph point in headless Chromium (navigation start → first sample drawn).
4. 1,000 concurrent 1 MiB Range requests for one new video (cold cache), with the chunk cache
   and without it (chunk_cache_bytes=0): p50/p99 and the database queries made.

Client mode (run by the benchmark inside the namespace):
    stage.py fanout-client HOST PORT COUNT SOURCES DURATION
"""

from __future__ import annotations

import json
import re
import select
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import requests

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
sys.path.insert(0, str(HERE))

MiB = 1024 * 1024


def percentile(values: list[float], pct: float) -> float:
    from bench import percentile as pick

    return pick(values, pct)


# -- 1. audience fan-out ------------------------------------------------------------------------
def fanout_client(host: str, port: int, count: int, sources: list[str], duration: float) -> None:
    """Inside the namespace: connect, say READY, record announce arrivals, print them."""
    from bench import Clients

    clients = Clients(port, host=host, sources=sources)
    started = time.monotonic()
    clients.connect(count)
    print(json.dumps({"ready": True, "connect_s": time.monotonic() - started}), flush=True)
    clients.pump(lambda: False, duration)
    arrivals = {str(seq): times for seq, times in clients.received.items()}
    clients.close()
    print(json.dumps({"arrivals": arrivals, "joined": len(clients.joined)}), flush=True)


def audience_fanout(
    app: Any, redis_server: Any, netns: Any, count: int, rounds: int, interval: float = 1.0
) -> dict[str, Any]:
    duration = 1.5 + rounds * interval + 3.0
    proc = subprocess.Popen(
        ["ip", "netns", "exec", netns.name, sys.executable, str(HERE / "stage.py"),
         "fanout-client", netns.host_ip, str(app.port), str(count), ",".join(netns.client_ips),
         str(duration)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    ready = json.loads(proc.stdout.readline() or "{}")
    if not ready.get("ready"):
        raise RuntimeError(f"fan-out clients failed: {proc.stderr.read() if proc.stderr else ''}")
    publisher = redis_server.client()
    time.sleep(1.5)  # settle: pings answered, cpu samples drained
    sent: dict[str, float] = {}
    for seq in range(rounds):
        sent[str(seq)] = time.monotonic()
        publisher.publish(app.channel, json.dumps({"type": "bench", "seq": seq}))
        time.sleep(interval)
    out, _ = proc.communicate(timeout=duration + 60)
    result = json.loads(out.strip().splitlines()[-1])
    latencies = []
    missing = 0
    for seq, t0 in sent.items():
        times = result["arrivals"].get(seq, [])
        latencies.extend(t - t0 for t in times)
        missing += count - len(times)
    return {
        "clients": count,
        "addresses": len(netns.client_ips),
        "connect_s": ready["connect_s"],
        "p50_ms": 1000 * percentile(latencies, 50),
        "p99_ms": 1000 * percentile(latencies, 99),
        "max_ms": 1000 * max(latencies, default=float("nan")),
        "missing": missing,
    }


# -- 2. page weight -----------------------------------------------------------------------------
def page_weight(url: str) -> dict[str, int]:
    session = requests.Session()
    page = session.get(url + "/", timeout=10)
    sizes = {"/": len(page.content)}
    for ref in re.findall(r'(?:src|href)="(/[^"]+)"', page.text):
        sizes[ref] = len(session.get(url + ref, timeout=10).content)
    return sizes


# -- 3. time to first graph point ---------------------------------------------------------------
def first_graph_point(url: str, loads: int = 3) -> list[float]:
    from playwright.sync_api import sync_playwright
    from test_browser import ARGS, CHROMIUM

    times = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        for _ in range(loads):
            context = browser.new_context(viewport={"width": 1024, "height": 768})
            page = context.new_page()
            page.goto(url + "/")
            page.wait_for_function("window.demolab && window.demolab.firstPointMs !== null",
                                   timeout=15_000)  # fmt: skip
            times.append(float(page.evaluate("window.demolab.firstPointMs")))
            context.close()
        browser.close()
    return times


# -- 4. many simultaneous Range requests for one new video ----------------------------------
def concurrent_ranges(port: int, path: str, size: int, count: int) -> dict[str, Any]:
    """``count`` sockets, each one GET with a 1 MiB Range, all sent at once; epoll reads."""
    span = min(MiB, size)
    epoll = select.epoll()
    socks: dict[int, socket.socket] = {}
    state: dict[int, dict[str, Any]] = {}
    for i in range(count):
        sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        start = (i * 104729) % max(1, size - span)
        request = (
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Range: bytes={start}-{start + span - 1}\r\nConnection: close\r\n\r\n"
        ).encode()
        socks[sock.fileno()] = sock
        state[sock.fileno()] = {"request": request, "got": 0, "head": b"", "need": None}
    began = time.monotonic()
    for fd, sock in socks.items():
        state[fd]["t0"] = time.monotonic()
        sock.sendall(state[fd]["request"])
        sock.setblocking(False)
        epoll.register(fd, select.EPOLLIN)
    done: list[float] = []
    bad = 0
    deadline = time.monotonic() + 300
    while len(done) + bad < count and time.monotonic() < deadline:
        for fd, _ in epoll.poll(0.5):
            st = state[fd]
            try:
                data = socks[fd].recv(1 << 20)
            except BlockingIOError:
                continue
            if not data:
                epoll.unregister(fd)
                ok = st["need"] is not None and st["got"] >= st["need"]
                if ok:
                    done.append(time.monotonic() - st["t0"])
                else:
                    bad += 1
                continue
            if st["need"] is None:
                st["head"] += data
                if b"\r\n\r\n" in st["head"]:
                    head, _, rest = st["head"].partition(b"\r\n\r\n")
                    if b" 206 " not in head.split(b"\r\n", 1)[0]:
                        bad += 1
                        epoll.unregister(fd)
                        continue
                    length = re.search(rb"(?i)content-length:\s*(\d+)", head)
                    st["need"] = int(length.group(1)) if length else span
                    st["got"] = len(rest)
            else:
                st["got"] += len(data)
            if st["need"] is not None and st["got"] >= st["need"]:
                done.append(time.monotonic() - st["t0"])
                epoll.unregister(fd)
    wall = time.monotonic() - began
    for sock in socks.values():
        sock.close()
    epoll.close()
    return {
        "requests": count,
        "ok": len(done),
        "failed": count - len(done),
        "p50_ms": 1000 * percentile(done, 50),
        "p99_ms": 1000 * percentile(done, 99),
        "wall_s": wall,
    }


def new_video(mongo: Any, database: str, source_id: str) -> tuple[str, int]:
    """A copy of a stored video under a fresh id: nothing of it is cached yet."""
    from bson import ObjectId
    from gridfs import GridFSBucket

    with mongo.client() as client:
        bucket = GridFSBucket(client[database], "videos")
        data = bucket.open_download_stream(ObjectId(source_id)).read()
        return str(bucket.upload_from_stream("copy.webm", data)), len(data)


def cache_stats(url: str) -> dict[str, Any]:
    return requests.get(url + "/healthz", timeout=30).json().get("chunk_cache") or {}


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


if __name__ == "__main__":
    if len(sys.argv) == 7 and sys.argv[1] == "fanout-client":
        _, _, host, port, count, sources, duration = sys.argv
        fanout_client(host, int(port), int(count), sources.split(","), float(duration))
    else:
        sys.exit(__doc__)
