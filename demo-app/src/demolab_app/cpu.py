"""CPU usage from /proc/stat, broadcast by ONE background task to every Socket.IO client."""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import socketio

log = logging.getLogger(__name__)

PROC_STAT = Path("/proc/stat")


def read_cpu_times(path: Path = PROC_STAT) -> tuple[int, int]:
    """Return (busy, total) jiffies of the aggregate ``cpu`` line."""
    with path.open() as stat:
        fields = stat.readline().split()
    if not fields or fields[0] != "cpu":
        raise ValueError(f"unexpected first line in {path}")
    values = [int(v) for v in fields[1:]]
    # user nice system idle iowait irq softirq steal [guest guest_nice: already in user/nice]
    values = values[:8]
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    total = sum(values)
    return total - idle, total


def usage_percent(before: tuple[int, int], after: tuple[int, int]) -> float:
    """Busy share (0-100) between two samples of :func:`read_cpu_times`."""
    busy = after[0] - before[0]
    total = after[1] - before[1]
    if total <= 0:
        return 0.0
    return max(0.0, min(100.0, 100.0 * busy / total))


class CpuBroadcaster:
    """Samples /proc/stat every ``interval`` seconds and emits ``cpu`` to all clients."""

    def __init__(
        self,
        sio: socketio.Server,
        interval: float,
        history: int,
        broadcast: Callable[[str, Any], None] | None = None,
    ) -> None:
        self.sio = sio
        self.broadcast = broadcast or sio.emit  # (event, data) to every client
        self.interval = interval
        self.samples: deque[dict[str, float]] = deque(maxlen=history)
        self._started = False

    def start(self) -> None:
        if not self._started:
            self._started = True
            self.sio.start_background_task(self.run)

    def history(self) -> list[dict[str, Any]]:
        return list(self.samples)

    def run(self) -> None:
        before = read_cpu_times()
        deadline = time.monotonic()
        while True:
            deadline += self.interval
            self.sio.sleep(max(0.0, deadline - time.monotonic()))
            try:
                after = read_cpu_times()
                sample = {"t": round(time.time() * 1000), "usage": usage_percent(before, after)}
                before = after
                self.samples.append(sample)
                self.broadcast("cpu", sample)
            except Exception:  # keep the one broadcaster alive whatever happens
                log.exception("cpu broadcast failed")
            if time.monotonic() - deadline > self.interval:
                deadline = time.monotonic()  # we fell behind (suspend, overload): resync
