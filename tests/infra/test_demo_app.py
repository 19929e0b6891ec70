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


def test_presenter_pages_on_loopback(host):
    """/talk and /lab (loopback only) render on the host, every asset local."""
    for path, marker in (("/talk", "demolab talk"), ("/lab", "The lab at a glance")):
        code, page = get(host, path)
        assert code == 200 and marker in page, (path, code, page[:300])
        sources = re.findall(r'(?:src|href)="(/static/[^"]+)"', page)
        assert sources, path
        for src in sources:
            code, body = get(host, src)
            assert code == 200 and len(body) > 1000, src


def test_app_user_reads_what_lab_shows(host):
    """The app's user runs the readiness report and reads the proxy's logs (its group)."""
    user = "demolab-app"
    groups = host.run(f"id -nG {user}").stdout.split()
    assert "demolab-http-cache" in groups, groups
    ready = host.run(f"runuser -u {user} -- /usr/local/bin/demolab-ready --json --ports-only")
    assert ready.rc in (0, 1), ready.stderr
    report = json.loads(ready.stdout)
    assert report["services"] and report["mode"] in ("online", "offline"), report
    logs = host.run(f"runuser -u {user} -- ls /var/lib/demolab/http_cache")
    assert logs.rc == 0, logs.stderr
    for name in ("misses.jsonl", "hits.jsonl"):
        path = f"/var/lib/demolab/http_cache/{name}"
        if host.file(path).exists:
            assert host.run(f"runuser -u {user} -- head -c1 {path}").rc == 0, path
