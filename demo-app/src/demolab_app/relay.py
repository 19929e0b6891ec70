"""Redis Pub/Sub → Socket.IO relay (plain JSON), and the publisher side.

The relay is one background task with a reconnect loop and exponential backoff.  Its pub/sub
connection uses ``socket_timeout=None``: a listener waits indefinitely for the next message
(with a finite timeout redis-py 8 ends up in an endless retry loop).  TCP keepalive still
notices a dead peer.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

import redis
import socketio

log = logging.getLogger(__name__)

ANNOUNCE_EVENT = "announce"


def redis_client(url: str, password: str, *, socket_timeout: float | None) -> redis.Redis:
    return redis.Redis.from_url(
        url,
        password=password or None,
        socket_timeout=socket_timeout,
        socket_connect_timeout=2.0,
        socket_keepalive=True,
        retry_on_timeout=False,
        decode_responses=False,
    )


def decode_message(data: bytes | str) -> Any:
    """A channel message as JSON if it parses, else as text."""
    text = data.decode("utf-8", errors="replace") if isinstance(data, bytes) else data
    try:
        return json.loads(text)
    except ValueError:
        return {"type": "text", "text": text}


class Relay:
    """Subscribes to one channel and broadcasts every message to all Socket.IO clients."""

    def __init__(
        self,
        sio: socketio.Server,
        url: str,
        password: str,
        channel: str,
        min_backoff: float = 0.1,
        max_backoff: float = 1.0,
        broadcast: Callable[[str, Any], None] | None = None,
    ) -> None:
        self.sio = sio
        self.broadcast = broadcast or sio.emit  # (event, data) to every client
        self.url = url
        self.password = password
        self.channel = channel
        self.min_backoff = min_backoff
        self.max_backoff = max_backoff
        self.subscribed = False
        self.relayed = 0
        self._started = False

    def start(self) -> None:
        if not self._started:
            self._started = True
            self.sio.start_background_task(self.run)

    def run(self) -> None:
        backoff = self.min_backoff
        while True:
            client = redis_client(self.url, self.password, socket_timeout=None)
            pubsub = client.pubsub(ignore_subscribe_messages=True)
            try:
                pubsub.subscribe(self.channel)
                self.subscribed = True
                backoff = self.min_backoff
                log.info("relay subscribed to %s", self.channel)
                for message in pubsub.listen():
                    if message.get("type") != "message":
                        continue
                    self.broadcast(ANNOUNCE_EVENT, decode_message(message["data"]))
                    self.relayed += 1
                log.warning("relay: subscription ended")
            except (redis.RedisError, OSError) as exc:
                log.warning("relay: Redis unavailable (%s); retrying in %.1fs", exc, backoff)
            except Exception:
                log.exception("relay: unexpected error; retrying in %.1fs", backoff)
            finally:
                self.subscribed = False
                try:
                    pubsub.close()
                    client.close()
                except Exception:  # closing a broken connection may fail too
                    log.debug("relay: close failed", exc_info=True)
            self.sio.sleep(backoff)
            backoff = min(backoff * 2, self.max_backoff)


class Publisher:
    """Publishes JSON announcements; also answers the health check's ping."""

    def __init__(self, url: str, password: str, channel: str) -> None:
        self.channel = channel
        self.client = redis_client(url, password, socket_timeout=2.0)

    def publish(self, payload: dict[str, Any]) -> int:
        return int(self.client.publish(self.channel, json.dumps(payload)))

    def ping(self) -> bool:
        return bool(self.client.ping())
