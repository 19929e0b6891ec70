"""The demo app: served on loopback, healthy (Redis + MongoDB + FFmpeg), every asset local."""

from __future__ import annotations

import json
import re

from conftest import http_get

SERVICE = "demolab-app"
PORT = 8080


def get(host, path: str) -> tuple[int, str]:
    return http_get(host, f"http://127.0.0.1:{PORT}{path}")


def test_service_runs(host, lab_service):
    assert lab_service.is_running(SERVICE), lab_service.logs(SERVICE)


def test_listens_on_loopback_only(host):
    listeners = [s for s in host.socket.get_listening_sockets() if s.endswith(f":{PORT}")]
    assert listeners and all("127.0.0.1" in s for s in listeners), listeners


def test_health_reports_every_dependency(host, lab_service):
    code, body = get(host, "/healthz")
    assert code == 200, f"{body}\n{lab_service.logs(SERVICE)}"
    health = json.loads(body)
    text = json.dumps(health).lower()
    assert "redis" in text and "mongo" in text and "ffmpeg" in text, health


def test_page_loads_only_local_assets(host):
    code, page = get(host, "/")
    assert code == 200
    sources = re.findall(r'(?:src|href)="([^"]+)"', page)
    assert sources, "the page references no assets?"
    assert not [s for s in sources if "//" in s], f"non-local asset in the page: {sources}"
    for src in sources:
        if src.endswith(".js"):
            code, body = get(host, src)
            assert code == 200 and len(body) > 1000, src
