"""demolab-ready and a mirror host's services (lab role, tasks_from: remote): checked by port
and health URL only, green when they answer, red naming the mirror host when they do not.
Real sockets and a real HTTP server on loopback; the report runs as the installed script."""

from __future__ import annotations

import http.server
import json
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "roles" / "lab" / "files" / "demolab_ready.py"


class Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        body = b'{"ok": true}' if self.path == "/+api" else b"no"
        self.send_response(200 if self.path == "/+api" else 404)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Health)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield srv.server_address[1]
    srv.shutdown()
    srv.server_close()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def report(etc: Path, entry: dict) -> tuple[int, dict]:
    (etc / "ready.d").mkdir(parents=True, exist_ok=True)
    (etc / "ready.d" / f"{entry['name']}.json").write_text(json.dumps(entry))
    (etc / "lab.json").write_text(json.dumps({"mode": "online", "ready_dir": str(etc / "ready.d")}))
    out = subprocess.run([sys.executable, str(SCRIPT), "--json"], capture_output=True, text=True,
                         env={"DEMOLAB_LAB_JSON": str(etc / "lab.json"), "PATH": "/usr/bin:/bin"}, timeout=60)
    return out.returncode, json.loads(out.stdout)


def test_a_mirror_hosts_service_that_answers_is_green(tmp_path, server):
    rc, doc = report(tmp_path, {"name": "demolab-devpi", "host": "127.0.0.1", "port": server,
                                "url": f"http://127.0.0.1:{server}/+api", "remote": True})
    assert rc == 0 and doc["ready"], doc
    assert "on the mirror host 127.0.0.1" in doc["services"][0]["detail"][0]


def test_a_mirror_hosts_service_that_is_down_is_red_and_names_the_host(tmp_path):
    rc, doc = report(tmp_path, {"name": "demolab-apt-mirror", "host": "127.0.0.1", "port": closed_port(),
                                "url": "", "remote": True})
    svc = doc["services"][0]
    assert rc == 1 and not svc["ok"], doc
    assert "mirror host 127.0.0.1" in svc["hint"] and "demolab-ready there" in svc["hint"]


def test_a_failing_health_url_on_the_mirror_host_is_red(tmp_path, server):
    rc, doc = report(tmp_path, {"name": "demolab-devpi", "host": "127.0.0.1", "port": server,
                                "url": f"http://127.0.0.1:{server}/missing", "remote": True})
    assert rc == 1 and not doc["services"][0]["ok"] and "404" in " ".join(doc["services"][0]["detail"])
