"""devpi on a lab host: loopback only, the lab index filled from the lock, pip pointed at it."""

from __future__ import annotations

import json
import re

from conftest import http_get

SERVICE = "demolab-devpi"
PORT = 3141
INDEX = "lab/offline"


def locked_pins() -> dict[str, str]:
    from pathlib import Path

    lock = Path(__file__).resolve().parents[2] / "mirror" / "requirements.lock"
    return dict(re.findall(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)", lock.read_text(), re.M))


def test_service_runs(host, lab_service):
    assert lab_service.is_running(SERVICE), lab_service.logs(SERVICE)


def test_listens_on_loopback_only(host):
    listeners = [s for s in host.socket.get_listening_sockets() if s.endswith(f":{PORT}")]
    assert listeners and all("127.0.0.1" in s for s in listeners), listeners


def test_pip_uses_the_lab_index(host):
    conf = host.file("/etc/pip.conf").content_string
    assert f"http://127.0.0.1:{PORT}/{INDEX}/+simple/" in conf, conf


def test_lab_index_holds_every_locked_package(host):
    code, body = http_get(host, f"http://127.0.0.1:{PORT}/{INDEX}/+api")
    assert code == 200, body
    for name, version in sorted(locked_pins().items()):
        code, page = http_get(host, f"http://127.0.0.1:{PORT}/{INDEX}/+simple/{name}/")
        assert code == 200, f"{name}: {code}"
        stem = re.sub(r"[-_.]+", "[-_.]", name)
        assert re.search(rf"(?i){stem}-{re.escape(version)}[-.]", page), f"{name}=={version} not in the lab index"


def test_root_has_a_password(host):
    """Logging in as root with an empty password is refused."""
    code, body = http_get(host, f"http://127.0.0.1:{PORT}/+api")
    assert code == 200 and json.loads(body)["type"] == "apiconfig"
    out = host.run(
        "python3 - <<'PY'\n"
        "import base64, json, urllib.request, urllib.error\n"
        f"req = urllib.request.Request('http://127.0.0.1:{PORT}/+login', method='POST',\n"
        "    data=json.dumps({'user': 'root', 'password': ''}).encode(),\n"
        "    headers={'Content-Type': 'application/json', 'Accept': 'application/json'})\n"
        "try:\n"
        "    print(urllib.request.build_opener(urllib.request.ProxyHandler({})).open(req).status)\n"
        "except urllib.error.HTTPError as e:\n"
        "    print(e.code)\n"
        "PY")
    assert out.stdout.strip() == "401", out.stdout + out.stderr
