"""The presenter's pages /talk and /lab: real app, real Redis, real demolab-ready, real casts
made by `asciinema rec`, the proxy's own log-writing code, headless Debian Chromium.

The app listens on 0.0.0.0 here, and the test adds a non-loopback address (a veth pair it
creates) to reach it from outside loopback: the presenter's pages must answer 403 there.
Screenshots (1024x768 and 1920x1080) and the measured numbers (page weight of /lab, time to
first tile, Redis stop → red tile, proxy miss → shown) are kept in DEMOLAB_SCREENSHOTS
(default demo-app/.run/screenshots).
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
import requests
import socketio
from playwright.sync_api import BrowserContext, Page, sync_playwright
from servers import SCREENSHOTS, AppServer, RedisServer, SecantusServer, wait_for
from test_browser import ARGS, CHROMIUM, LOCAL_HOSTS

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
READY = REPO / "roles" / "lab" / "files" / "demolab_ready.py"
TALK_LIB = REPO / "roles" / "talk" / "files"
HTTP_CACHE_LIB = REPO / "roles" / "http_cache" / "files"
SIZES = ((1024, 768), (1920, 1080))
HOSTILE = "<img src=x onerror=alert(1)><script>alert(2)</script>"

TALK_YML = f"""\
title: Real-time web, offline
steps:
  - id: redis
    title: Redis, with a password
    hotkey: {{name: redis, snippet: "redis-cli ping"}}
    command: redis-cli ping
    expect: {{output: PONG}}
    risky: true
    notes: |
      Say why Redis needs a password & show {HOSTILE}
  - id: upload
    title: Upload a video
    command: curl -s -o /dev/null -w '%{{http_code}}' -F file=@clip.mp4 http://127.0.0.1:8080/upload
    expect: {{output: "202"}}
    notes: Every open page plays it.
  - id: proxy
    title: A page through the proxy
    open: http://example.test/talk.html
    notes: Recorded at home, replayed here.
"""
CAST_TEXT = {"redis": "PONG from the redis step", "upload": "202 from the upload step"}


def record_cast(path: Path, text: str) -> None:
    """A real asciicast v2 recording of a command, made by Debian's asciinema."""
    binary = shutil.which("asciinema")
    if binary is None:
        pytest.fail("asciinema missing: `make -C demo-app deps` installs Debian's asciinema")
    command = f"printf '%s\\n' '$ demo'; sleep 0.2; printf '%s\\n' '{text}'; sleep 0.3"
    subprocess.run(
        [binary, "rec", "--quiet", "--overwrite", "--command", command, str(path)],
        check=True, timeout=60, stdin=subprocess.DEVNULL, capture_output=True,
        env={**os.environ, "TERM": "xterm-256color"},
    )  # fmt: skip
    path.chmod(0o644)


class Lab:
    """A lab's files as the roles lay them out, in a temporary directory."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.etc = root / "etc"
        self.state = root / "state"
        self.talk_json = self.etc / "talk" / "talk.json"
        self.rehearsal_json = self.state / "rehearsal.json"
        self.casts = self.state / "rehearsal" / "casts"
        self.mirror = self.state / "mirror"
        self.miss_log = self.state / "http_cache" / "misses.jsonl"
        self.hit_log = self.state / "http_cache" / "hits.jsonl"
        for path in (self.etc / "ready.d", self.talk_json.parent, self.casts,
                     self.miss_log.parent):  # fmt: skip
            path.mkdir(parents=True, exist_ok=True)
        # The lab's settings as the lab role writes them (demolab-ready reads ready_dir there).
        self.lab_json = self.etc / "lab.json"
        self.write_lab_json("online")

    def write_lab_json(self, mode: str) -> None:
        ready_dir = str(self.etc / "ready.d")
        self.lab_json.write_text(json.dumps({"mode": mode, "ready_dir": ready_dir}))

    def write_talk(self) -> None:
        """talk.json as the lab writes it: `demolab-talk json` (the real model) of a talk file."""
        talk_yml = self.etc / "talk" / "talk.yml"
        talk_yml.write_text(TALK_YML)
        done = subprocess.run(
            ["/usr/bin/python3", "-m", "demolab_talk", "json", str(talk_yml)],
            env={**os.environ, "PYTHONPATH": str(TALK_LIB)}, capture_output=True, text=True,
            timeout=60, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        self.talk_json.write_text(done.stdout)

    def write_rehearsal(self) -> None:
        report = {
            "time": time.time() - 3600,
            "steps": [{"step": "pip", "ok": True, "detail": "30 packages", "seconds": 9.1},
                      {"step": "pages", "ok": False, "detail": "1 page missed", "seconds": 0.4}],
            "misses": [{"kind": "url", "what": "http://example.test/x", "fix": "make online"}],
            "talk": {
                "file": str(self.etc / "talk" / "talk.yml"), "title": "Real-time web, offline",
                "started": "2026-11-30T04:00:00Z", "seconds": 4.2, "passed": 1, "failed": 1,
                "steps": [
                    {"id": "redis", "title": "Redis, with a password", "status": "pass",
                     "reason": "", "seconds": 0.3, "cast": str(self.casts / "redis.cast"),
                     "clip": None, "misses": []},
                    {"id": "upload", "title": "Upload a video", "status": "fail",
                     "reason": f"expected output '202', got '503' {HOSTILE}", "seconds": 1.1,
                     "cast": str(self.casts / "upload.cast"), "clip": None,
                     "misses": [{"kind": "url", "what": "http://example.test/x",
                                 "fix": "make online, then open it once"}]},
                ],
            },
        }  # fmt: skip
        self.rehearsal_json.write_text(json.dumps(report))

    def write_mirror(self) -> None:
        for name, files in {
            "apt": ["redis-server_7.0_amd64.deb", "ffmpeg_5.1_amd64.deb", "Packages"],
            "pypi": ["pymongo-4.20.1-cp311-manylinux.whl", "devpi-6.0.tar.gz"],
            "ffmpeg": ["ffmpeg-lab_5.1.9_amd64.deb"],
            "http_cache": ["objects/ab/abcd.json", "objects/ab/abcd.data"],
        }.items():
            for rel in files:
                path = self.mirror / name / rel
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(b"x" * 2048)

    def register(self, name: str, description: str, port: int, url: str = "") -> None:
        """A service's readiness registration, as the lab role's service entry point writes it."""
        entry = {"name": name, "description": description, "host": "127.0.0.1", "port": port}
        if url:
            entry["url"] = url
        (self.etc / "ready.d" / f"{name}.json").write_text(json.dumps(entry))
        self.write_lab_json("offline")


class Veth:
    """A veth pair with a non-loopback address on one end: a way in from outside loopback."""

    def __init__(self) -> None:
        suffix = os.getpid() % 100000
        self.name = f"dlw{suffix}a"
        self.address = f"192.0.2.{suffix % 250 + 2}"  # TEST-NET-1, never routed anywhere
        subprocess.run(["ip", "link", "del", self.name], capture_output=True, check=False)
        for cmd in (
            ["ip", "link", "add", self.name, "type", "veth", "peer", "name", f"dlw{suffix}b"],
            ["ip", "addr", "add", f"{self.address}/32", "dev", self.name],
            ["ip", "link", "set", self.name, "up"],
            ["ip", "link", "set", f"dlw{suffix}b", "up"],
        ):
            done = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                self.close()
                pytest.fail(f"{' '.join(cmd)}: {done.stderr.strip()} (needs root and iproute2)")

    def close(self) -> None:
        subprocess.run(["ip", "link", "del", self.name], capture_output=True, check=False)


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Lab:
    lab = Lab(tmp_path_factory.mktemp("lab"))
    lab.write_talk()
    lab.write_rehearsal()
    lab.write_mirror()
    for step, text in CAST_TEXT.items():
        record_cast(lab.casts / f"{step}.cast", text)
    (lab.casts.parent / "secret.cast").write_text("SECRET-NOT-A-STEP\n")
    (lab.casts.parent / "passwd").write_text("SECRET-NOT-A-STEP\n")
    return lab


@pytest.fixture(scope="module")
def veth() -> Iterator[Veth]:
    link = Veth()
    yield link
    link.close()


@pytest.fixture(scope="module")
def lab_redis(workdir: Path) -> Iterator[RedisServer]:
    """The presenter app's own Redis: this module stops and restarts it."""
    server = RedisServer(workdir / "lab-redis")
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def presenter_app(
    workdir: Path, lab: Lab, lab_redis: RedisServer, mongo_server: SecantusServer, veth: Veth
) -> Iterator[AppServer]:
    server = AppServer(
        workdir / "presenter-app", lab_redis, mongo_server,
        extra_env={
            "DEMOLAB_HOST": "0.0.0.0",  # loopback AND the veth address (the 403 test)
            "DEMOLAB_TALK_JSON": str(lab.talk_json),
            "DEMOLAB_REHEARSAL_JSON": str(lab.rehearsal_json),
            "DEMOLAB_CASTS_DIR": str(lab.casts),
            "DEMOLAB_MIRROR_DIR": str(lab.mirror),
            "DEMOLAB_MISS_LOG": str(lab.miss_log),
            "DEMOLAB_HIT_LOG": str(lab.hit_log),
            "DEMOLAB_READY_COMMAND": f"/usr/bin/python3 {READY} --json --ports-only",
            "DEMOLAB_READY_INTERVAL": "1",
            "DEMOLAB_LAB_JSON": str(lab.lab_json),  # demolab-ready's registrations (ready_dir)
        },
    )  # fmt: skip
    lab.register("demolab-redis", "Redis for Pub/Sub", lab_redis.port)
    lab.register("demolab-mongodb", "MongoDB-wire server", mongo_server.port)
    lab.register("demolab-app", "the demo app", server.port, server.url + "/healthz")
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def chromium(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrowserContext]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} missing: `make deps` installs Debian's chromium")
    profile = tmp_path_factory.mktemp("chromium-presenter")
    with sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(profile),
            executable_path=CHROMIUM,
            headless=True,
            args=ARGS,
            viewport={"width": 1024, "height": 768},
        )  # fmt: skip  (no bypass_csp: the pages must work under their own CSP)
        yield context
        context.close()


class Watched:
    def __init__(self, page: Page) -> None:
        self.page = page
        self.requests: list[str] = []
        self.errors: list[str] = []
        self.dialogs: list[str] = []
        self.console: list[str] = []
        page.on("request", lambda req: self.requests.append(req.url))
        page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        page.on("dialog", lambda d: (self.dialogs.append(d.message), d.dismiss()))
        page.on("console", lambda m: m.type == "error" and self.console.append(m.text))

    def weight(self) -> dict[str, int]:
        """Bytes of the page and of every resource it loaded (all local, uncompressed)."""
        return self.page.evaluate(
            """() => { const out = {};
                 for (const e of performance.getEntriesByType('navigation')
                          .concat(performance.getEntriesByType('resource')))
                   out[new URL(e.name).pathname] = e.encodedBodySize;
                 return out; }"""
        )

    def foreign(self) -> list[str]:
        return [u for u in self.requests if urlparse(u).scheme not in {"data", "blob"}
                and urlparse(u).hostname not in LOCAL_HOSTS]  # fmt: skip

    def clean(self) -> None:
        assert not self.errors, self.errors
        assert not self.dialogs, self.dialogs
        assert not self.foreign(), self.foreign()
        csp = [m for m in self.console if "Content Security Policy" in m]
        assert not csp, csp


def shoot(page: Page, name: str) -> list[Path]:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    shots = []
    for width, height in SIZES:
        page.set_viewport_size({"width": width, "height": height})
        page.wait_for_timeout(300)
        path = SCREENSHOTS / f"{name}-{width}x{height}.png"
        page.screenshot(path=str(path))
        shots.append(path)
    page.set_viewport_size({"width": 1024, "height": 768})
    return shots


def record_metric(name: str, value: Any) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / "metrics.json"
    metrics = json.loads(path.read_text()) if path.exists() else {}
    metrics[name] = value
    path.write_text(json.dumps(metrics, indent=2) + "\n")


def wait_js(page: Page, expression: str, timeout: float, arg: Any = None) -> Any:
    """Poll a JS expression with page.evaluate (page.wait_for_function would need eval, which
    the pages' Content-Security-Policy forbids: these tests keep the CSP on)."""
    deadline = time.monotonic() + timeout
    while True:
        value = page.evaluate(expression, arg)
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{expression} still false after {timeout}s")
        page.wait_for_timeout(50)


def raw_get(host: str, port: int, target: str) -> tuple[int, bytes]:
    """GET with the request target sent byte for byte (no client-side normalization)."""
    conn = http.client.HTTPConnection(host, port, timeout=10)
    try:
        conn.putrequest("GET", target, skip_accept_encoding=True)
        conn.endheaders()
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


# -- /talk -------------------------------------------------------------------------------------
def test_talk_lists_steps_with_statuses(chromium: BrowserContext, presenter_app: AppServer) -> None:
    watched = Watched(chromium.new_page())
    page = watched.page
    response = page.goto(presenter_app.url + "/talk")
    assert response is not None and response.status == 200
    steps = page.evaluate(
        "[...document.querySelectorAll('section.step')].map(s => [s.dataset.step, s.dataset.status,"
        " s.querySelector('.badge').textContent])"
    )
    assert steps == [["redis", "pass", "PASS"], ["upload", "fail", "FAIL"],
                     ["proxy", "none", "NOT REHEARSED"]]  # fmt: skip
    assert page.text_content("#step-redis .step-n") == "1/3"
    assert "$ redis-cli ping" in (page.text_content("#step-redis .command") or "")
    assert page.text_content("#step-redis .hotkey kbd") == "redis"
    # the talk's notes and the rehearsal's reason are text, never markup
    assert HOSTILE in (page.text_content("#step-redis .notes") or "")
    assert HOSTILE in (page.text_content("#step-upload .reason") or "")
    assert page.evaluate("document.querySelectorAll('#steps img, #steps script').length") == 0
    assert "make online, then open it once" in (page.text_content("#step-upload .misses") or "")
    assert page.locator("#step-redis button.fallback").count() == 1
    assert page.locator("#step-upload button.fallback").count() == 1
    assert page.text_content("#step-proxy .no-cast") == "no recording"
    assert "1 passed, 1 failed" in (page.text_content("#summary") or "")
    shoot(page, "talk")
    watched.clean()
    page.close()


def test_fallback_plays_in_the_browser(chromium: BrowserContext, presenter_app: AppServer) -> None:
    watched = Watched(chromium.new_page())
    page = watched.page
    page.goto(presenter_app.url + "/talk")
    assert CAST_TEXT["redis"] not in (page.text_content("#player-redis") or "")
    page.click("#step-redis button.fallback")
    wait_js(page, "t => document.getElementById('player-redis').textContent.includes(t)", 15,
            CAST_TEXT["redis"])  # fmt: skip
    assert page.evaluate("window.demolabTalk.started") == ["redis"]
    assert page.locator("#player-redis .ap-player").count() == 1
    assert CAST_TEXT["upload"] not in (page.text_content("#steps") or "")
    shoot(page, "talk-playing")
    watched.clean()
    page.close()


def test_cast_served_by_step_id_only(presenter_app: AppServer, lab: Lab) -> None:
    port = presenter_app.port
    status, body = raw_get("127.0.0.1", port, "/talk/cast/redis.cast")
    assert status == 200 and body == (lab.casts / "redis.cast").read_bytes()
    header = json.loads(body.splitlines()[0])
    assert header["version"] == 2  # asciicast v2, as `asciinema rec` wrote it
    for target in (
        "/talk/cast/../secret.cast",
        "/talk/cast/..%2Fsecret.cast",
        "/talk/cast/%2E%2E%2Fsecret.cast",
        "/talk/cast/..%2F..%2Frehearsal%2Fpasswd",
        "/talk/cast/%2e%2e%2fpasswd%00.cast",
        "/talk/cast/..%5Csecret.cast",
        "/talk/cast/REDIS.cast",
        "/talk/cast/.cast",
        "/talk/cast/redis",
        "/talk/cast/secret.cast/../redis.cast",
    ):
        status, body = raw_get("127.0.0.1", port, target)
        assert status in (400, 404), (target, status)
        assert b"SECRET" not in body, target
    status, body = raw_get("127.0.0.1", port, "/talk/cast/proxy.cast")
    assert status == 404 and b"no recording for step proxy" in body


# -- loopback only -----------------------------------------------------------------------------
def test_presenter_pages_refuse_non_loopback_clients(presenter_app: AppServer, veth: Veth) -> None:
    outside = requests.Session()
    outside.trust_env = False  # straight to the address, never through a proxy
    base = f"http://{veth.address}:{presenter_app.port}"
    for path in ("/talk", "/lab", "/talk/cast/redis.cast"):
        response = outside.get(base + path, timeout=10)
        assert response.status_code == 403, path
        assert "presenter's own machine" in response.text
        assert "Redis" not in response.text and "PONG" not in response.text
        inside = outside.get(presenter_app.url + path, timeout=10)
        assert inside.status_code == 200, path
    # the same listener still serves the public demo page there: the guard, not the network
    assert outside.get(base + "/", timeout=10).status_code == 200

    # Socket.IO: the audience may connect, but never join the lab's live feed
    for url, allowed in ((base, False), (presenter_app.url, True)):
        client = socketio.Client(reconnection=False)
        got: list[str] = []
        client.on("lab_state", lambda data, got=got: got.append("lab_state"))
        client.connect(url, transports=["websocket"], wait_timeout=10)
        try:
            answer = client.call("lab_join", {}, timeout=10)
            if allowed:
                assert answer == {"ok": True}
                wait_for(lambda got=got: got, 10, "lab_state after lab_join")
            else:
                assert "forbidden" in answer["error"]
                time.sleep(1.5)
                assert got == []
        finally:
            client.disconnect()


# -- /lab --------------------------------------------------------------------------------------
def tile_state(page: Page, name: str) -> tuple[str, str]:
    return page.evaluate(
        """name => { const t = document.querySelector(`.tile[data-service="${name}"]`);
                     return t ? [t.className, t.textContent] : ['', '']; }""",
        name,
    )


def test_lab_tiles_red_redis_and_live_proxy(
    chromium: BrowserContext, presenter_app: AppServer, lab: Lab, lab_redis: RedisServer
) -> None:
    watched = Watched(chromium.new_page())
    page = watched.page
    started = time.monotonic()
    page.goto(presenter_app.url + "/lab")
    page.wait_for_selector('.tile[data-service="demolab-redis"].ok', timeout=15_000)
    first_tile_ms = page.evaluate("window.demolabLab.firstTileAt")
    record_metric("lab_first_tile_ms", round(first_tile_ms))
    record_metric("lab_first_tile_wall_ms", round((time.monotonic() - started) * 1000))
    for name in ("demolab-redis", "demolab-mongodb", "demolab-app"):
        assert "tile ok" in tile_state(page, name)[0], name
    assert page.text_content("#mode") == "mode: offline"
    assert page.text_content("#ready-summary") == "3/3 services ready"
    mirrors = page.evaluate(
        "[...document.querySelectorAll('#mirrors tr')].map(r => [r.dataset.mirror,"
        " r.children[1].textContent])"
    )
    assert mirrors == [
        ["apt", "2 Debian packages"], ["pypi", "2 Python distributions"],
        ["ffmpeg", "1 FFmpeg artifacts"], ["http_cache", "1 recorded responses"],
    ]  # fmt: skip
    assert "free disk:" in (page.text_content("#disk") or "")
    rehearsal = page.evaluate(
        "[...document.querySelectorAll('#rehearsal li')].map(l => [l.dataset.step,"
        " l.querySelector('.badge').textContent])"
    )
    assert rehearsal == [["redis", "PASS"], ["upload", "FAIL"], ["pip", "PASS"], ["pages", "FAIL"]]
    assert HOSTILE in (page.text_content("#rehearsal") or "")  # as text
    assert page.evaluate("document.querySelectorAll('main img, main script').length") == 0
    page.wait_for_timeout(500)
    weight = watched.weight()
    assert "/static/lab.js" in weight and "/static/socket.io.min.js" in weight, weight
    record_metric("lab_page_weight", {"total_bytes": sum(weight.values()), **weight})
    shoot(page, "lab")

    # Redis stops: its tile turns red with the reason (and the app's, whose health needs it)
    lab_redis.stop()
    stopped = time.monotonic()
    try:
        page.wait_for_selector('.tile[data-service="demolab-redis"].bad', timeout=5_000)
        red_after = time.monotonic() - stopped
        _classes, text = tile_state(page, "demolab-redis")
        assert "nothing answers on 127.0.0.1:" in text and "refused" in text.lower(), text
        assert "try: demolab-service" in text, text
        record_metric("redis_stop_to_red_tile_s", round(red_after, 2))
        assert red_after < 5.0
        page.wait_for_selector('.tile[data-service="demolab-app"].bad', timeout=5_000)
        assert "reports failing: redis" in tile_state(page, "demolab-app")[1]

        # a proxy miss and hits, written by the proxy's own code, appear live
        sys.path.insert(0, str(HTTP_CACHE_LIB))
        try:
            from demolab_cache.store import HitLog, Store  # stdlib only; the proxy's writer
        finally:
            sys.path.remove(str(HTTP_CACHE_LIB))
        store = Store(str(lab.root / "proxy-store"), str(lab.miss_log))
        missed = f"http://example.test/not-recorded-{os.getpid()}.html"
        written = time.monotonic()
        store.log_miss("GET", missed, "miss", "127.0.0.1")
        wait_js(
            page, "u => document.querySelector('#miss-list').textContent.includes(u)", 5, missed
        )
        record_metric("proxy_miss_to_page_s", round(time.monotonic() - written, 2))
        assert page.text_content("#misses") == "1"
        hits = HitLog(str(lab.hit_log), period=3600)  # flushed by hand below
        for _ in range(3):
            hits.hit("GET", "http://example.test/recorded.html")
        assert hits.flush() == 3
        wait_js(page, "() => document.getElementById('hits').textContent === '3'", 5)
        assert "http://example.test/recorded.html" in (page.text_content("#last-hit") or "")
        shoot(page, "lab-redis-down-and-miss")
    finally:
        lab_redis.start()
    page.wait_for_selector('.tile[data-service="demolab-redis"].ok', timeout=10_000)
    watched.clean()
    page.close()
