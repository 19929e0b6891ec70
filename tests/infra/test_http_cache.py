"""The caching proxy on a lab host: loopback only, lab CA trusted, records what passes through."""

from __future__ import annotations

import secrets

from conftest import http_get

SERVICE = "demolab-http-cache"
PORT = 8899
CA_TRUSTED = "/usr/local/share/ca-certificates/demolab-lab-ca.crt"
ORIGIN_PORT = 18931


def test_service_runs(host, lab_service):
    assert lab_service.is_running(SERVICE), lab_service.logs(SERVICE)


def test_listens_on_loopback_only(host):
    listeners = [s for s in host.socket.get_listening_sockets() if s.endswith(f":{PORT}")]
    assert listeners and all("127.0.0.1" in s for s in listeners), listeners


def test_lab_ca_is_trusted_and_its_keys_are_private(host):
    assert host.file(CA_TRUSTED).exists
    bundle = host.file("/etc/ssl/certs/ca-certificates.crt").content_string
    assert host.file(CA_TRUSTED).content_string.strip() in bundle
    for key in ("ca.key", "signing.key"):
        f = host.file(f"/etc/demolab/http_cache/ca/{key}")
        assert f.exists and f.mode == 0o600, key


def test_records_a_response_byte_identical(host):
    """A loopback origin on the host, fetched through the proxy (record mode): the body comes
    back unchanged and the store gains an entry."""
    token = secrets.token_hex(16)
    root = "/tmp/demolab-origin"
    host.run_test(f"mkdir -p {root} && printf %s {token} > {root}/{token}.txt")
    host.run_test(
        # every fd of the background job is /dev/null, or the remote shell never returns
        f"{{ cd {root} && exec setsid timeout 300 python3 -m http.server {ORIGIN_PORT} --bind 127.0.0.1; }} "
        ">/dev/null 2>&1 < /dev/null & for i in $(seq 50); do "
        f"(exec 3<>/dev/tcp/127.0.0.1/{ORIGIN_PORT}) 2>/dev/null && exit 0; sleep 0.1; done; exit 1"
    )
    try:
        before = int(host.run_test("find /var/lib/demolab/mirror/http_cache -type f | wc -l").stdout)
        code, body = http_get(host, f"http://127.0.0.1:{ORIGIN_PORT}/{token}.txt", f"http://127.0.0.1:{PORT}")
        assert (code, body) == (200, token)
        after = int(host.run_test("find /var/lib/demolab/mirror/http_cache -type f | wc -l").stdout)
        assert after > before, "the proxy served the page but stored nothing"
    finally:
        # the [.] keeps pkill from matching the remote shell running this very command
        host.run(f"pkill -f 'http[.]server {ORIGIN_PORT}'; rm -rf {root}")
