"""Socket.IO: one CPU broadcaster at ~1/s, and Redis PUBLISH relayed within 100 ms."""

from __future__ import annotations

import itertools
import json
import statistics
import time
from collections.abc import Callable

from conftest import Listener
from servers import AppServer, RedisServer


def test_cpu_samples_arrive_about_once_per_second(
    listener_factory: Callable[[], Listener],
) -> None:
    listener = listener_factory()
    history, _ = listener.wait("cpu_history", timeout=5)
    assert isinstance(history, list)
    listener.wait("cpu", lambda _: len(listener.of("cpu")) >= 4, timeout=8)
    samples = listener.of("cpu")
    gaps = [b[1] - a[1] for a, b in itertools.pairwise(samples)]
    assert all(0.6 < gap < 1.5 for gap in gaps), gaps
    for data, _ in samples:
        assert 0.0 <= data["usage"] <= 100.0
        assert abs(data["t"] / 1000 - time.time()) < 30


def test_two_clients_share_one_broadcaster(listener_factory: Callable[[], Listener]) -> None:
    first, second = listener_factory(), listener_factory()
    first.wait("cpu", lambda _: len(first.of("cpu")) >= 2, timeout=5)
    second.wait("cpu", lambda _: len(second.of("cpu")) >= 2, timeout=5)
    # same sample (same timestamp) reaches both: one loop, not one per client
    stamps_a = {d["t"] for d, _ in first.of("cpu")}
    stamps_b = {d["t"] for d, _ in second.of("cpu")}
    assert stamps_a & stamps_b


def test_redis_publish_reaches_client_within_100ms(
    app: AppServer, redis_server: RedisServer, listener_factory: Callable[[], Listener]
) -> None:
    listener = listener_factory()
    publisher = redis_server.client()
    latencies = []
    for i in range(7):
        payload = {"type": "ping", "seq": i}
        sent = time.monotonic()
        assert publisher.publish(app.channel, json.dumps(payload)) == 1
        _, received = listener.wait("announce", lambda d, i=i: d.get("seq") == i, timeout=5)
        latencies.append(received - sent)
        time.sleep(0.05)
    assert statistics.median(latencies) < 0.1, latencies
    assert max(latencies) < 0.5, latencies


def test_plain_text_message_is_relayed(
    app: AppServer, redis_server: RedisServer, listener_factory: Callable[[], Listener]
) -> None:
    listener = listener_factory()
    redis_server.client().publish(app.channel, "hello <b>world</b>")
    data, _ = listener.wait("announce", lambda d: d.get("type") == "text", timeout=5)
    assert data["text"] == "hello <b>world</b>"
