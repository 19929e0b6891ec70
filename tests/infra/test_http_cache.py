"""The caching proxy on a lab host: loopback only, lab CA trusted, records while online,
replays while offline (504 on a miss, no upstream attempt).

The lifecycle runs this suite twice on the same host: online, then offline at the "venue".
"""

from __future__ import annotations

import json
import secrets
import shlex
import time

import pytest
from conftest import http_get, mirror_host

SERVICE = "demolab-http-cache"
PORT = 8899
PROXY = f"http://127.0.0.1:{PORT}"
CA_TRUSTED = "/usr/local/share/ca-certificates/demolab-lab-ca.crt"
ORIGIN_PORT = 18931
STORE = "/var/lib/demolab/mirror/http_cache"
# Recorded by the online run, replayed by the offline one.
REHEARSAL_PATH = "/rehearsal.txt"
REHEARSAL_BODY = "demolab rehearsal page: recorded at home, replayed at the venue\n"
# An HTTPS page (a loopback origin whose certificate the lab CA signs for the test): recorded
# through TLS interception while online, replayed offline from the store.
TLS_ORIGIN_PORT = 18932
TLS_PATH = "/rehearsal-tls.txt"
TLS_BODY = "demolab rehearsal page over HTTPS: recorded at home, replayed at the venue\n"
TLS_URL = f"https://localhost:{TLS_ORIGIN_PORT}{TLS_PATH}"
CA_DIR = "/etc/demolab/http_cache/ca"
TLS_SERVER = (
    "import functools, http.server, ssl, sys\n"
    "ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)\n"
    "ctx.load_cert_chain('cert.pem', 'key.pem')\n"
    "handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory='www')\n"
    "srv = http.server.ThreadingHTTPServer(('127.0.0.1', int(sys.argv[1])), handler)\n"
    "srv.socket = ctx.wrap_socket(srv.socket, server_side=True)\n"
    "srv.serve_forever()\n"
)
# A large download the talk makes (20 MiB), recorded online; its sha256 is kept on the host
# because the origin is gone at the venue.
LARGE_PATH = "/rehearsal-large.bin"
LARGE_SHA = "/var/tmp/demolab-rehearsal-large.sha256"
FETCH_SHA = (
    "import hashlib, os, sys, urllib.request as u\n"
    "[os.environ.pop(k, None) for k in ('no_proxy', 'NO_PROXY')]\n"
    "o = u.build_opener(u.ProxyHandler({'http': sys.argv[2], 'https': sys.argv[2]}))\n"
    "h = hashlib.sha256()\n"
    "with o.open(sys.argv[1], timeout=60) as r:\n"
    "    [h.update(b) for b in iter(lambda: r.read(1 << 20), b'')]\n"
    "print(h.hexdigest())\n"
)


def fetch_sha256(host, url: str) -> str:
    return host.run_test(f"python3 -c {shlex.quote(FETCH_SHA)} {shlex.quote(url)} {PROXY}").stdout.strip()


def lab_mode(host) -> str:
    return json.loads(host.file("/etc/demolab/lab.json").content_string)["mode"]


@pytest.fixture
def origin(host):
    """A loopback origin on the host serving /tmp/demolab-origin."""
    root = "/tmp/demolab-origin"
    host.run_test(f"mkdir -p {root} && printf %s {shlex.quote(REHEARSAL_BODY)} > {root}{REHEARSAL_PATH}")
    host.run_test(
        # every fd of the background job is /dev/null, or the remote shell never returns
        f"{{ cd {root} && exec setsid timeout 300 python3 -m http.server {ORIGIN_PORT} --bind 127.0.0.1; }} "
        ">/dev/null 2>&1 < /dev/null & for i in $(seq 50); do "
        f"(exec 3<>/dev/tcp/127.0.0.1/{ORIGIN_PORT}) 2>/dev/null && exit 0; sleep 0.1; done; exit 1"
    )
    yield root
    # the [.] keeps pkill from matching the remote shell running this very command
    host.run(f"pkill -f 'http[.]server {ORIGIN_PORT}'; rm -rf {root}")


@pytest.fixture
def tls_origin(host):
    """A loopback HTTPS origin on the host ("localhost"), its certificate signed by the lab CA
    for the length of the test (the proxy verifies upstreams against the system store, which
    trusts the lab CA)."""
    root = "/tmp/demolab-tls-origin"
    host.run_test(
        f"rm -rf {root} && mkdir -p {root}/www && cd {root} && "
        f"printf %s {shlex.quote(TLS_BODY)} > www{TLS_PATH} && "
        "openssl req -new -newkey rsa:2048 -nodes -keyout key.pem -subj /CN=localhost "
        "-addext subjectAltName=DNS:localhost -out req.csr 2>/dev/null && "
        f"openssl x509 -req -in req.csr -CA {CA_DIR}/ca.pem -CAkey {CA_DIR}/ca.key -CAcreateserial "
        "-CAserial serial.txt -days 1 -copy_extensions copy -out cert.pem 2>/dev/null")
    host.run_test(
        f"{{ cd {root} && exec setsid timeout 300 python3 -c {shlex.quote(TLS_SERVER)} {TLS_ORIGIN_PORT}; }} "
        f">/dev/null 2>&1 < /dev/null & echo $! > {root}/pid; for i in $(seq 50); do "
        f"(exec 3<>/dev/tcp/127.0.0.1/{TLS_ORIGIN_PORT}) 2>/dev/null && exit 0; sleep 0.1; done; exit 1"
    )
    yield root
    # the pid is timeout's (setsid execs it): it passes the TERM on to the server
    host.run(f"kill $(cat {root}/pid); for i in $(seq 50); do "
             f"(exec 3<>/dev/tcp/127.0.0.1/{TLS_ORIGIN_PORT}) 2>/dev/null || break; sleep 0.1; done; rm -rf {root}")


def entries(host) -> int:
    return int(host.run_test(f"find {STORE} -type f | wc -l").stdout)


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


def test_online_records_byte_identical(host, origin):
    if lab_mode(host) != "online":
        pytest.skip("records only while online")
    token = secrets.token_hex(16)
    host.run_test(f"printf %s {token} > {origin}/{token}.txt")
    before = entries(host)
    code, body = http_get(host, f"http://127.0.0.1:{ORIGIN_PORT}/{token}.txt", PROXY)
    assert (code, body) == (200, token)
    # the proxy commits an entry once the upstream response is complete: possibly just after
    # the client has its copy
    deadline = time.monotonic() + 10
    while entries(host) <= before and time.monotonic() < deadline:
        time.sleep(0.3)
    assert entries(host) > before, "the proxy served the page but stored nothing"
    # the page the offline run replays
    code, body = http_get(host, f"http://127.0.0.1:{ORIGIN_PORT}{REHEARSAL_PATH}", PROXY)
    assert (code, body) == (200, REHEARSAL_BODY)
    # the large download the offline run replays
    host.run_test(f"head -c 20971520 /dev/urandom > {origin}{LARGE_PATH} && "
                  f"sha256sum {origin}{LARGE_PATH} | cut -d' ' -f1 > {LARGE_SHA}")
    want = host.file(LARGE_SHA).content_string.strip()
    assert fetch_sha256(host, f"http://127.0.0.1:{ORIGIN_PORT}{LARGE_PATH}") == want


def test_online_records_https_through_the_lab_ca(host, tls_origin):
    if lab_mode(host) != "online":
        pytest.skip("records only while online")
    code, body = http_get(host, TLS_URL, PROXY)
    assert (code, body) == (200, TLS_BODY)
    # the proxy presented a certificate of its own (the lab CA's), not the origin's
    issuer = host.run_test(
        f"python3 -c {shlex.quote(PEER_ISSUER)} localhost {TLS_ORIGIN_PORT} {PORT}").stdout
    assert "demolab lab CA" in issuer, issuer


# The issuer of the certificate a client sees through the proxy (CONNECT, then TLS).
PEER_ISSUER = (
    "import socket, ssl, sys\n"
    "host, port, proxy = sys.argv[1], sys.argv[2], int(sys.argv[3])\n"
    "s = socket.create_connection(('127.0.0.1', proxy), timeout=20)\n"
    "s.sendall(f'CONNECT {host}:{port} HTTP/1.1\\r\\nHost: {host}:{port}\\r\\n\\r\\n'.encode())\n"
    "buf = b''\n"
    "while b'\\r\\n\\r\\n' not in buf:\n"
    "    buf += s.recv(4096)\n"
    "tls = ssl.create_default_context().wrap_socket(s, server_hostname=host)\n"
    "print(dict(x[0] for x in tls.getpeercert()['issuer']))\n"
)


def test_offline_replays_what_was_recorded(host):
    if lab_mode(host) != "offline":
        pytest.skip("replay is checked at the venue")
    if mirror_host(host):
        pytest.skip(f"pages are recorded on the mirror host {mirror_host(host)}; this host's proxy "
                    "replays only what it recorded itself (a host made from a bundle has both)")
    assert not host.socket(f"tcp://127.0.0.1:{ORIGIN_PORT}").is_listening, "the origin must be gone"
    code, body = http_get(host, f"http://127.0.0.1:{ORIGIN_PORT}{REHEARSAL_PATH}", PROXY)
    assert (code, body) == (200, REHEARSAL_BODY)
    # HTTPS: no origin, nothing upstream; the lab CA's certificate, the recorded bytes
    assert not host.socket(f"tcp://127.0.0.1:{TLS_ORIGIN_PORT}").is_listening, "the TLS origin must be gone"
    code, body = http_get(host, TLS_URL, PROXY)
    assert (code, body) == (200, TLS_BODY)
    # 20 MiB, byte-identical (a host made from a bundle has no sha file: the page suffices)
    if host.file(LARGE_SHA).exists:
        want = host.file(LARGE_SHA).content_string.strip()
        assert fetch_sha256(host, f"http://127.0.0.1:{ORIGIN_PORT}{LARGE_PATH}") == want


def test_offline_miss_is_a_fast_504_and_stores_nothing(host):
    if lab_mode(host) != "offline":
        pytest.skip("misses are 504 only at the venue")
    before = entries(host)
    t = time.monotonic()
    code, _ = http_get(host, f"http://127.0.0.1:{ORIGIN_PORT}/never-{secrets.token_hex(8)}", PROXY)
    elapsed = time.monotonic() - t
    assert code == 504
    assert elapsed < 5, f"a miss took {elapsed:.1f} s (ssh round trip included)"
    assert entries(host) == before
