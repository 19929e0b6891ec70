"""devpi on a lab host: its own address only, the lab index filled from the lock, pip pointed
at it. A host that uses another lab host's mirrors (lab_mirror_host) runs no devpi: its pip
installs from the mirror host's index, checked the same way over the lab network."""

from __future__ import annotations

import json
import re
import shlex

import pytest
from conftest import http_get, mirror_address, mirror_host

SERVICE = "demolab-devpi"
PORT = 3141
INDEX = "lab/offline"


def locked_pins() -> dict[str, str]:
    from pathlib import Path

    lock = Path(__file__).resolve().parents[2] / "mirror" / "requirements.lock"
    return dict(re.findall(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)", lock.read_text(), re.M))


@pytest.fixture
def base(host) -> str:
    return f"http://{mirror_address(host)}:{PORT}"


@pytest.fixture
def own_devpi(host) -> None:
    if mirror_host(host):
        pytest.skip(f"this host uses the devpi of {mirror_host(host)}")


def test_service_runs(host, lab_service, own_devpi):
    assert lab_service.is_running(SERVICE), lab_service.logs(SERVICE)


def test_listens_on_its_own_address_only(host, own_devpi):
    """Loopback, or the lab network's address (lab_mirror_address): never every interface."""
    listeners = [s for s in host.socket.get_listening_sockets() if s.endswith(f":{PORT}")]
    assert listeners and all(mirror_address(host) in s for s in listeners), listeners


def test_pip_uses_the_lab_index(host, base):
    conf = host.file("/etc/pip.conf").content_string
    assert f"{base}/{INDEX}/+simple/" in conf, conf
    if mirror_address(host) != "127.0.0.1":  # plain http off loopback: pip needs to be told
        assert re.search(rf"(?m)^trusted-host\s*=\s*{re.escape(mirror_address(host))}\s*$", conf), conf


def test_lab_index_holds_every_locked_package(host, base):
    code, body = http_get(host, f"{base}/{INDEX}/+api")
    assert code == 200, body
    for name, version in sorted(locked_pins().items()):
        code, page = http_get(host, f"{base}/{INDEX}/+simple/{name}/")
        assert code == 200, f"{name}: {code}"
        stem = re.sub(r"[-_.]+", "[-_.]", name)
        assert re.search(rf"(?i){stem}-{re.escape(version)}[-.]", page), f"{name}=={version} not in the lab index"


def test_pip_on_the_host_downloads_a_locked_package(host):
    """pip itself, with the host's own configuration, gets a locked wheel from the lab index."""
    name, version = sorted(locked_pins().items())[0]
    venv = "/var/tmp/demolab-infra-pip"
    out = host.run(f"rm -rf {venv} && python3 -m venv {venv} && {venv}/bin/pip download -q "
                   f"--disable-pip-version-check --no-deps --only-binary=:all: -d {venv}/dl "
                   f"{shlex.quote(f'{name}=={version}')} && ls {venv}/dl; rc=$?; rm -rf {venv}; exit $rc")
    assert out.rc == 0, out.stdout + out.stderr
    assert version in out.stdout, out.stdout


def test_root_has_a_password(host, base):
    """Logging in as root with an empty password is refused."""
    code, body = http_get(host, f"{base}/+api")
    assert code == 200 and json.loads(body)["type"] == "apiconfig"
    out = host.run(
        "python3 - <<'PY'\n"
        "import base64, json, urllib.request, urllib.error\n"
        f"req = urllib.request.Request('{base}/+login', method='POST',\n"
        "    data=json.dumps({'user': 'root', 'password': ''}).encode(),\n"
        "    headers={'Content-Type': 'application/json', 'Accept': 'application/json'})\n"
        "try:\n"
        "    print(urllib.request.build_opener(urllib.request.ProxyHandler({})).open(req).status)\n"
        "except urllib.error.HTTPError as e:\n"
        "    print(e.code)\n"
        "PY")
    assert out.stdout.strip() == "401", out.stdout + out.stderr
