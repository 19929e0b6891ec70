"""The demo app: served on loopback, healthy (Redis + MongoDB + FFmpeg), every asset local."""

from __future__ import annotations

import json
import re

from conftest import http_get

SERVICE = "demolab-app"
PORT = 8080
APT_MIRROR_PORT = 3180  # roles/apt_mirror apt_mirror_port
CONF = "/etc/demolab/demo-app.ini"  # roles/demo_app demo_app_conf_path


def get(host, path: str) -> tuple[int, str]:
    return http_get(host, f"http://127.0.0.1:{PORT}{path}")


def test_service_runs(host, lab_service):
    assert lab_service.is_running(SERVICE), lab_service.logs(SERVICE)


def audience_address(host) -> str:
    """The audience listener's address from the app's own configuration ("" = mode off), so
    that it holds however the mode was turned on (inventory, -e)."""
    done = host.run(f"sed -n 's/^audience_host *= *//p' {CONF}")
    assert done.rc == 0, done.stderr
    return done.stdout.strip()


def listening_addresses(host, port: int) -> set[str]:
    """Addresses a TCP port listens on ("tcp://127.0.0.1:6379" -> "127.0.0.1")."""
    found = set()
    for sock in host.socket.get_listening_sockets():
        if sock.startswith("tcp") and sock.endswith(f":{port}"):
            found.add(sock.split("://", 1)[1].rsplit(":", 1)[0].strip("[]"))
    return found


def test_listens_on_loopback_and_only_the_audience_address(host):
    audience = audience_address(host)
    assert listening_addresses(host, PORT) == {"127.0.0.1"} | ({audience} if audience else set())


def test_lab_services_stay_off_the_lab_network_address(host):
    """Redis and MongoDB: loopback only; the proxy: loopback unless http_cache_listen_address
    says otherwise; devpi and the Debian mirror: loopback or lab_mirror_address (other lab
    hosts install from them). None of them on a wildcard or on the audience's address."""
    from test_devpi import PORT as DEVPI
    from test_http_cache import PORT as PROXY
    from test_mongodb import PORT as MONGODB
    from test_redis import PORT as REDIS

    variables = host.ansible.get_variables()
    mirrors = {"127.0.0.1", str(variables.get("lab_mirror_address") or "127.0.0.1")}
    audience = audience_address(host)
    wildcards = {"0.0.0.0", "::", "*"}
    loopback = {"127.0.0.1", "::1"}
    proxy = loopback | {str(variables.get("http_cache_listen_address") or "127.0.0.1")}
    allowed = {"redis": loopback, "mongodb": loopback, "proxy": proxy, "devpi": mirrors,
               "Debian mirror": mirrors}
    ports = {"redis": REDIS, "mongodb": MONGODB, "proxy": PROXY, "devpi": DEVPI,
             "Debian mirror": APT_MIRROR_PORT}
    for name, port in ports.items():
        addresses = listening_addresses(host, port)
        assert not addresses & wildcards, f"{name} listens on a wildcard: {addresses}"
        assert addresses <= allowed[name], f"{name} listens beyond {allowed[name]}: {addresses}"
        assert audience not in addresses, f"{name} answers on the audience address {audience}"


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
