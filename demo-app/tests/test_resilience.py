"""Dependencies going away: the app keeps serving and recovers."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import requests
from conftest import Listener, upload
from servers import AppServer, RedisServer, SecantusServer, wait_for


def test_redis_restart_mid_test(
    app: AppServer, redis_server: RedisServer, listener_factory: Callable[[], Listener]
) -> None:
    listener = listener_factory()
    redis_server.client().publish(app.channel, json.dumps({"type": "ping", "seq": "before"}))
    listener.wait("announce", lambda d: d.get("seq") == "before", timeout=5)

    redis_server.stop()
    try:
        health = requests.get(app.url + "/healthz", timeout=10)
        assert health.status_code == 503
        assert health.json()["redis"]["ok"] is False
        assert requests.get(app.url + "/", timeout=10).status_code == 200
        listener.wait("cpu", lambda _: True, timeout=5)  # the page keeps its graph
        time.sleep(1.0)  # let the relay notice and back off
    finally:
        redis_server.start()
    restarted = time.monotonic()
    publisher = redis_server.client()

    def delivered() -> bool:
        publisher.publish(app.channel, json.dumps({"type": "ping", "seq": "after"}))
        try:
            listener.wait("announce", lambda d: d.get("seq") == "after", timeout=0.25)
        except TimeoutError:
            return False
        return True

    wait_for(delivered, 5, "an announcement after the Redis restart", interval=0)
    assert time.monotonic() - restarted < 5
    wait_for(
        lambda: requests.get(app.url + "/healthz", timeout=10).status_code == 200, 5, "healthz"
    )


def test_mongodb_down_upload_fails_clearly(
    app: AppServer, mongo_server: SecantusServer, clip: Path
) -> None:
    mongo_server.stop()
    try:
        response = upload(app, clip)
        assert response.status_code == 503
        assert "MongoDB is unavailable" in response.json()["error"]
        health = requests.get(app.url + "/healthz", timeout=10)
        assert health.status_code == 503
        assert health.json()["mongodb"]["ok"] is False
        assert requests.get(app.url + "/", timeout=10).status_code == 200
        listed = requests.get(app.url + "/videos", timeout=10)
        assert listed.status_code == 503
        assert "MongoDB is unavailable" in listed.json()["error"]
        missing = requests.get(app.url + "/video/0123456789abcdef01234567.webm", timeout=10)
        assert missing.status_code == 503
    finally:
        mongo_server.start()
    wait_for(
        lambda: requests.get(app.url + "/healthz", timeout=10).status_code == 200,
        20,
        "healthz after MongoDB restart",
    )
