"""/lab: the lab at a glance for the presenter (loopback only), kept live over Socket.IO.

- readiness: the lab's own report, ``demolab-ready --json`` (the ``ready_command`` setting),
  run every ``ready_interval`` seconds: one tile per registered service, green or red with
  the reason and what to try, and the lab's mode;
- the mirrors under ``mirror_dir`` (apt, pypi, ffmpeg, http_cache): what each holds, its size
  and age, and the free disk;
- the last rehearsal (``rehearsal_json``): pass/fail per step;
- the proxy's hits and misses as they happen: the http_cache proxy appends every offline miss
  to ``miss_log`` and, at most once a second per worker, its hit count to ``hit_log``; both
  are followed like ``tail -F``.

A page joins with the ``lab_join`` event (answered only for loopback clients) and gets
``lab_state`` (everything), then ``lab_ready``, ``lab_store`` and ``lab_proxy`` updates in
the Socket.IO room ``lab``. The monitor runs only while that room has members.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import shutil
import socket
import string
import subprocess
import time
from collections import deque
from importlib import resources
from pathlib import Path
from typing import Any

import socketio
from pyramid.config import Configurator
from pyramid.request import Request
from pyramid.response import Response

from .access import is_local_environ, local_only
from .config import Settings

log = logging.getLogger(__name__)

ROOM = "lab"
PROXY_POLL = 0.5  # seconds between two looks at the proxy's logs
STORE_POLL = 30.0  # seconds between two scans of the mirrors (and the rehearsal report)
READY_TIMEOUT = 30.0
MAX_SCAN_FILES = 200_000
RECENT_MISSES = 50
MAX_READ = 1024 * 1024  # bytes read from a log per poll
# What each mirror of the store holds (lab role: lab_store_dir/<name>), counted by file name.
MIRRORS: dict[str, tuple[str, tuple[str, ...]]] = {
    "apt": ("Debian packages", (".deb",)),
    "pypi": ("Python distributions", (".whl", ".tar.gz", ".zip")),
    "ffmpeg": ("FFmpeg artifacts", (".deb", ".tar.xz", ".tar.gz", ".dsc")),
    "http_cache": ("recorded responses", (".json",)),
}
PAGE_CSP = "default-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self' ws: wss:"


# -- readiness --------------------------------------------------------------------------------
def run_readiness(command: str, timeout: float = READY_TIMEOUT) -> dict[str, Any]:
    """The readiness report as JSON; a failure to run it is itself one red tile."""
    argv = shlex.split(command)
    problem = ""
    said = ""
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
        said = (done.stderr.strip().splitlines() or [""])[-1]
        report = json.loads(done.stdout)
        if not isinstance(report, dict) or not isinstance(report.get("services"), list):
            raise ValueError("no list of services")
        report["time"] = time.time()
        return report
    except FileNotFoundError:
        problem = f"{argv[0] if argv else command!r} is not installed"
    except subprocess.TimeoutExpired:
        problem = f"{command} took more than {timeout:.0f} s"
    except (OSError, ValueError) as exc:
        problem = f"{command} gave no report ({exc})" + (f": {said}" if said else "")
    return {
        "host": socket.gethostname(), "mode": "unknown", "ready": False, "time": time.time(),
        "services": [{
            "name": "readiness report", "description": "demolab-ready", "ok": False,
            "detail": [problem], "hint": "make lab installs demolab-ready; then make ready",
        }],
    }  # fmt: skip


# -- the store ---------------------------------------------------------------------------------
def scan_mirror(path: Path, suffixes: tuple[str, ...]) -> dict[str, Any]:
    """Files of a mirror that match its kind, their total size and the newest change."""
    out: dict[str, Any] = {"path": str(path), "exists": path.is_dir(), "items": 0, "bytes": 0,
                           "newest": None, "problem": "", "private": False}  # fmt: skip
    if not out["exists"]:
        out["problem"] = "missing: make lab fills it while online"
        return out
    seen = 0
    errors: list[OSError] = []
    newest = 0.0
    for root, _dirs, files in os.walk(path, onerror=errors.append):
        for name in files:
            seen += 1
            if seen > MAX_SCAN_FILES:
                break
            try:
                st = os.stat(os.path.join(root, name), follow_symlinks=False)
            except OSError:
                continue
            out["bytes"] += st.st_size
            newest = max(newest, st.st_mtime)
            if name.endswith(suffixes):
                out["items"] += 1
    if newest == 0.0:
        try:
            newest = path.stat().st_mtime
        except OSError:
            newest = 0.0
    out["newest"] = newest or None
    if errors and seen == 0:  # the proxy's store is 0700: its age is still the directory's
        out["private"] = True
        out["items"] = None
    return out


def store_summary(settings: Settings) -> dict[str, Any]:
    base = Path(settings.mirror_dir)
    mirrors = []
    for name, (label, suffixes) in MIRRORS.items():
        info = scan_mirror(base / name, suffixes)
        info.update(name=name, holds=label)
        mirrors.append(info)
    disk: dict[str, Any] = {"path": str(base)}
    where = base
    while not where.exists() and where != where.parent:
        where = where.parent
    try:
        usage = shutil.disk_usage(where)
        disk.update(free=usage.free, total=usage.total, path=str(where))
    except OSError as exc:
        disk["problem"] = str(exc)
    return {"mirrors": mirrors, "disk": disk, "time": time.time()}


# -- the last rehearsal ------------------------------------------------------------------------
def rehearsal_summary(path: str) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as handle:
            report = json.load(handle)
        mtime = os.stat(path).st_mtime
    except FileNotFoundError:
        return {"problem": f"no rehearsal yet ({path}): make rehearse"}
    except (OSError, ValueError) as exc:
        return {"problem": f"{path} cannot be read ({exc})"}
    if not isinstance(report, dict):
        return {"problem": f"{path} is not a rehearsal report"}
    steps = []
    talk = report.get("talk") if isinstance(report.get("talk"), dict) else {}
    for item in talk.get("steps") or []:
        if isinstance(item, dict):
            steps.append({"name": str(item.get("id", "?")), "title": str(item.get("title", "")),
                          "status": str(item.get("status", "")),
                          "detail": str(item.get("reason") or "")})  # fmt: skip
    for item in report.get("steps") or []:  # the airplane checks (pip, apt, pages, demo)
        if isinstance(item, dict):
            steps.append({"name": str(item.get("step", "?")), "title": "",
                          "status": "pass" if item.get("ok") else "fail",
                          "detail": str(item.get("detail") or "")})  # fmt: skip
    return {"time": report.get("time") or mtime, "started": talk.get("started"),
            "steps": steps, "misses": len(report.get("misses") or [])}  # fmt: skip


# -- the proxy's logs --------------------------------------------------------------------------
class LogTail:
    """Follows a JSON-lines file across appends, truncation and replacement (tail -F)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.ident: tuple[int, int] | None = None
        self.offset = 0
        self.partial = b""

    def read(self) -> list[dict[str, Any]]:
        """New complete lines since the last call (all of the file at the first call)."""
        try:
            st = os.stat(self.path)
        except OSError:
            return []
        ident = (st.st_dev, st.st_ino)
        if ident != self.ident or st.st_size < self.offset:
            self.ident, self.offset, self.partial = ident, 0, b""
            if st.st_size > 8 * MAX_READ:  # a huge old log: only its end matters
                self.offset = st.st_size - MAX_READ
        if st.st_size == self.offset:
            return []
        try:
            with open(self.path, "rb") as handle:
                handle.seek(self.offset)
                data = handle.read(min(st.st_size - self.offset, 8 * MAX_READ))
        except OSError:
            return []
        self.offset += len(data)
        lines = (self.partial + data).split(b"\n")
        self.partial = lines.pop()
        out = []
        for line in lines:
            try:
                item = json.loads(line)
            except ValueError:
                continue
            if isinstance(item, dict):
                out.append(item)
        return out


class ProxyActivity:
    def __init__(self, miss_log: str, hit_log: str) -> None:
        self.misses_tail = LogTail(miss_log)
        self.hits_tail = LogTail(hit_log)
        self.misses = 0
        self.hits = 0
        self.last_hit = ""
        self.recent: deque[dict[str, Any]] = deque(maxlen=RECENT_MISSES)

    def poll(self) -> dict[str, Any] | None:
        """An update when something new was logged, else None."""
        new_misses = [
            {k: str(m.get(k, "")) for k in ("time", "method", "url", "reason", "client")}
            for m in self.misses_tail.read()
        ]
        new_hits = 0
        for item in self.hits_tail.read():
            try:
                new_hits += int(item.get("hits", 0))
            except (TypeError, ValueError):
                continue
            self.last_hit = str(item.get("last") or self.last_hit)
        if not new_misses and not new_hits:
            return None
        self.misses += len(new_misses)
        self.hits += new_hits
        self.recent.extend(new_misses)
        return {"hits": self.hits, "misses": self.misses, "new_hits": new_hits,
                "new_misses": new_misses[-RECENT_MISSES:], "last_hit": self.last_hit}  # fmt: skip

    def summary(self) -> dict[str, Any]:
        return {"hits": self.hits, "misses": self.misses, "new_hits": 0,
                "new_misses": list(self.recent), "last_hit": self.last_hit}  # fmt: skip


# -- the monitor -------------------------------------------------------------------------------
class LabMonitor:
    """Gathers what /lab shows and pushes changes to the ``lab`` room while it has members."""

    def __init__(self, sio: socketio.Server, settings: Settings) -> None:
        self.sio = sio
        self.settings = settings
        self.proxy = ProxyActivity(settings.miss_log, settings.hit_log)
        self.ready: dict[str, Any] | None = None
        self.store: dict[str, Any] | None = None
        self.rehearsal: dict[str, Any] | None = None
        self._running = False
        self._generation = 0  # a loop of an older run stops when a new run starts

    def members(self) -> int:
        try:
            return sum(1 for _ in self.sio.manager.get_participants("/", ROOM))
        except KeyError:  # the room does not exist (yet, or any more)
            return 0

    def state(self) -> dict[str, Any]:
        ready = self.ready
        if ready is not None and time.time() - ready["time"] > 2 * self.settings.ready_interval + 5:
            ready = None  # an old report (no page was open): the next one comes in a moment
        return {"ready": ready, "store": self.store, "rehearsal": self.rehearsal,
                "proxy": self.proxy.summary()}  # fmt: skip

    def refresh_store(self) -> None:
        self.store = store_summary(self.settings)
        self.rehearsal = rehearsal_summary(self.settings.rehearsal_json)

    def join(self, sid: str, environ: dict[str, Any] | None) -> dict[str, Any]:
        if not is_local_environ(environ):
            return {"error": "forbidden: /lab is for the presenter's own machine only"}
        self.sio.enter_room(sid, ROOM)
        if self.store is None or time.time() - self.store["time"] > STORE_POLL:
            self.refresh_store()
        self.proxy.poll()
        self.sio.emit("lab_state", self.state(), to=sid)
        if not self._running:
            self._running = True
            self._generation += 1
            self.sio.start_background_task(self._run, self._generation)
        elif self.ready is not None:
            self.sio.emit("lab_ready", self.ready, to=sid)
        return {"ok": True}

    def _run(self, generation: int) -> None:
        """Readiness in its own loop (a slow health URL must not hold the proxy's feed)."""
        self.sio.start_background_task(self._ready_loop, generation)
        try:
            last_store = time.monotonic()
            while self.members() and generation == self._generation:
                update = self.proxy.poll()
                if update is not None:
                    self.sio.emit("lab_proxy", update, to=ROOM)
                if time.monotonic() - last_store >= STORE_POLL:
                    last_store = time.monotonic()
                    self.refresh_store()
                    self.sio.emit("lab_store", {"store": self.store, "rehearsal": self.rehearsal},
                                  to=ROOM)  # fmt: skip
                self.sio.sleep(PROXY_POLL)
        except Exception:
            log.exception("lab monitor failed")
        finally:
            if generation == self._generation:
                self._running = False

    def _ready_loop(self, generation: int) -> None:
        while generation == self._generation and self.members():
            started = time.monotonic()
            try:
                self.ready = run_readiness(self.settings.ready_command)
                self.sio.emit("lab_ready", self.ready, to=ROOM)
            except Exception:
                log.exception("readiness report failed")
            self.sio.sleep(max(0.0, self.settings.ready_interval - (time.monotonic() - started)))


# -- HTTP and Socket.IO ------------------------------------------------------------------------
@local_only
def lab_view(request: Request) -> Response:
    page = resources.files("demolab_app").joinpath("templates/lab.html").read_text()
    response = Response(string.Template(page).substitute(), content_type="text/html",
                        charset="utf-8")  # fmt: skip
    response.headers["Content-Security-Policy"] = PAGE_CSP
    response.cache_control = "no-store"
    return response


def add_views(config: Configurator, sio: socketio.Server, settings: Settings) -> LabMonitor:
    monitor = LabMonitor(sio, settings)
    config.registry.demolab_lab = monitor
    config.add_route("lab", "/lab")
    config.add_view(lab_view, route_name="lab", request_method="GET")

    def lab_join(sid: str, data: Any = None) -> dict[str, Any]:
        return monitor.join(sid, sio.get_environ(sid))

    sio.on("lab_join", lab_join)
    return monitor
