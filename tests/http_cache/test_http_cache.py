"""http_cache: real proxy.py processes with the demolab plugin, real origins on loopback."""

import json
import os
import stat
import subprocess
import time

import pytest
from helpers import BIG, SMALL, http_get, https_get, split_response


def record_and_stop(proxies, store, fetch):
    proxy = proxies("record", store)
    recorded = fetch(proxy.port)
    proxy.stop()
    return recorded, proxy


def entries(store):
    return sorted(p.name for p in (store / "objects").rglob("*.json"))


def test_http_record_then_offline_is_byte_identical(proxies, origin, store):
    urls = [f"http://127.0.0.1:{origin.port}/small/a?x=1", f"http://127.0.0.1:{origin.port}/chunked",
            f"http://127.0.0.1:{origin.port}/nothing-here"]
    rec = proxies("record", store)
    recorded = [http_get(rec.port, u) for u in urls]
    rec.stop()
    assert split_response(recorded[0])[0] == 200 and split_response(recorded[0])[2] == SMALL + b"/small/a?x=1"
    assert recorded[1].endswith(b"0\r\nX-Trailer: yes\r\n\r\n")
    assert split_response(recorded[2])[0] == 404
    assert len(entries(store)) == 3
    seen = origin.connections
    off = proxies("offline", store)
    for url, raw in zip(urls, recorded, strict=True):
        assert http_get(off.port, url) == raw
    assert origin.connections == seen, "offline replay must not touch the origin"


def test_offline_keep_alive_serves_several_requests(proxies, origin, store):
    import http.client
    urls = [f"http://127.0.0.1:{origin.port}/small/{i}" for i in range(3)]
    rec = proxies("record", store)
    for url in urls:
        http_get(rec.port, url)
    rec.stop()
    off = proxies("offline", store)
    conn = http.client.HTTPConnection("127.0.0.1", off.port, timeout=10)
    for i, url in enumerate(urls * 2):
        conn.request("GET", url)
        resp = conn.getresponse()
        assert resp.status == 200 and resp.read() == SMALL + f"/small/{i % 3}".encode()
    conn.close()


def test_https_record_then_offline_is_byte_identical(proxies, tls_origin, store, pki, tmp_path):
    path = "/small/tls?q=2"
    rec = proxies("record", store)
    recorded = https_get(rec.port, "localhost", tls_origin.port, path, pki["lab_cert"])
    rec.stop()
    status, _, body = split_response(recorded)
    assert status == 200 and body == SMALL + path.encode()
    seen = tls_origin.connections
    off = proxies("offline", store)
    replayed = https_get(off.port, "localhost", tls_origin.port, path, pki["lab_cert"])
    assert replayed == recorded
    # curl, trusting only the lab CA, gets the same body
    out = tmp_path / "curl.out"
    subprocess.run(["curl", "-sS", "--fail", "-x", f"http://127.0.0.1:{off.port}", "--cacert",
                    str(pki["lab_cert"]), "-o", str(out), f"https://localhost:{tls_origin.port}{path}"],
                   check=True, timeout=30)
    assert out.read_bytes() == body
    assert tls_origin.connections == seen, "offline HTTPS replay must not touch the origin"
    # an unrecorded HTTPS URL is a 504 inside the tunnel, still without an origin connection
    t0 = time.monotonic()
    missed = https_get(off.port, "localhost", tls_origin.port, "/never", pki["lab_cert"])
    assert split_response(missed)[0] == 504 and time.monotonic() - t0 < 1.0
    assert tls_origin.connections == seen


def test_large_download_replays_byte_identical(proxies, origin, store, tmp_path):
    url = f"http://127.0.0.1:{origin.port}/big"
    rec = proxies("record", store)
    recorded = http_get(rec.port, url)
    rec.stop()
    assert split_response(recorded)[2] == BIG
    off = proxies("offline", store)
    out = tmp_path / "big.out"
    subprocess.run(["curl", "-sS", "--fail", "-x", f"http://127.0.0.1:{off.port}", "-o", str(out), url],
                   check=True, timeout=60)
    assert out.read_bytes() == BIG
    assert http_get(off.port, url) == recorded


def test_offline_miss_is_fast_504_without_connection_attempt(proxies, origin, store):
    off = proxies("offline", store)
    url = f"http://127.0.0.1:{origin.port}/small/not-recorded"
    t0 = time.monotonic()
    raw = http_get(off.port, url)
    elapsed = time.monotonic() - t0
    status, head, body = split_response(raw)
    assert status == 504 and elapsed < 1.0, (status, elapsed)
    assert b"X-Demolab-Cache: MISS" in head
    assert url.encode() in body and b"To record it" in body
    assert origin.connections == 0, "the origin saw a connection"
    attempts = [a for a in off.audit() if str(origin.port) in a["target"]]
    assert attempts == [], attempts
    misses = [json.loads(x) for x in off.miss_log.read_text().splitlines()]
    assert {"method": "GET", "url": url, "reason": "miss"}.items() <= misses[-1].items()
    assert "time" in misses[-1]


def test_offline_hits_are_counted_in_the_hit_log(proxies, origin, store):
    """The hit log (the demo app's /lab reads it): counts per worker, at most once a second."""
    import http.client
    urls = [f"http://127.0.0.1:{origin.port}/small/h{i}" for i in range(2)]
    rec = proxies("record", store)
    for url in urls:
        http_get(rec.port, url)
    rec.stop()
    off = proxies("offline", store)
    conn = http.client.HTTPConnection("127.0.0.1", off.port, timeout=10)
    for i in range(7):
        conn.request("GET", urls[i % 2])
        resp = conn.getresponse()
        assert resp.status == 200
        resp.read()
    conn.close()
    assert split_response(http_get(off.port, f"http://127.0.0.1:{origin.port}/not-recorded"))[0] == 504
    deadline = time.time() + 5
    lines = []
    while time.time() < deadline:
        if off.hit_log.exists():
            lines = [json.loads(x) for x in off.hit_log.read_text().splitlines()]
            if sum(x["hits"] for x in lines) >= 7:
                break
        time.sleep(0.2)
    assert sum(x["hits"] for x in lines) == 7, lines
    assert lines[-1]["last"] in urls and lines[-1]["pid"] > 0
    time.sleep(1.5)  # nothing more happened: the log stays as it was
    assert len(off.hit_log.read_text().splitlines()) == len(lines)
    for log in (off.hit_log, off.miss_log):
        assert stat.S_IMODE(log.stat().st_mode) == 0o640, log


def test_offline_miss_for_unresolvable_host_does_no_dns(proxies, store):
    off = proxies("offline", store)
    url = "http://demolab-never-resolved.invalid/page"
    t0 = time.monotonic()
    status, head, _ = split_response(http_get(off.port, url))
    assert status == 504 and time.monotonic() - t0 < 1.0
    assert b"X-Demolab-Cache: MISS" in head
    dns = [a for a in off.audit() if "invalid" in a["target"]]
    assert dns == [], "the proxy tried to resolve/connect: %r" % dns
    assert json.loads(off.miss_log.read_text().splitlines()[-1])["url"] == url


def test_audit_hook_sees_lookups(tmp_path):
    """Control for the DNS proof: the audit hook does record a real lookup."""
    from helpers import AUDIT
    log = tmp_path / "audit.jsonl"
    env = dict(os.environ, PYTHONPATH=str(AUDIT), DEMOLAB_AUDIT_LOG=str(log))
    subprocess.run(["python3", "-c", "import socket\ntry: socket.getaddrinfo('x.invalid', 80)\n"
                    "except OSError: pass"], env=env, check=True)
    assert "x.invalid" in log.read_text()


def test_sigkill_mid_record_leaves_nothing_served(proxies, origin, store):
    url = f"http://127.0.0.1:{origin.port}/slow"
    rec = proxies("record", store)
    import socket
    sock = socket.create_connection(("127.0.0.1", rec.port), timeout=10)
    sock.sendall(f"GET {url} HTTP/1.1\r\nHost: 127.0.0.1:{origin.port}\r\n\r\n".encode())
    got = 0
    while got < (1 << 20):
        got += len(sock.recv(1 << 20))
    parts = list((store / "tmp").iterdir())
    assert parts and parts[0].stat().st_size > 0, "recording should be in progress"
    rec.kill()  # SIGKILL the whole process group
    sock.close()
    assert entries(store) == []
    off = proxies("offline", store)
    assert list((store / "tmp").iterdir()) == [], "start-up must drop partial files"
    assert split_response(http_get(off.port, url))[0] == 504


def test_connection_dropped_mid_body_is_not_stored(proxies, origin, store):
    url = f"http://127.0.0.1:{origin.port}/drop"
    rec = proxies("record", store)
    raw = http_get(rec.port, url)
    assert len(raw) < (2 << 20)
    time.sleep(0.3)
    rec.stop()
    assert entries(store) == []
    assert list((store / "tmp").iterdir()) == []
    assert "not stored" in rec.log_text()
    off = proxies("offline", store)
    assert split_response(http_get(off.port, url))[0] == 504


def test_corrupt_entry_fails_checksum_and_is_a_miss(proxies, origin, store):
    url = f"http://127.0.0.1:{origin.port}/small/c"
    record_and_stop(proxies, store, lambda port: http_get(port, url))
    off = proxies("offline", store)
    assert split_response(http_get(off.port, url))[0] == 200   # verified and cached in memory
    data = next((store / "objects").rglob("*.http"))
    with open(data, "r+b") as fh:                                # flip one body byte in place
        fh.seek(-100, os.SEEK_END)
        byte = fh.read(1)
        fh.seek(-100, os.SEEK_END)
        fh.write(bytes([byte[0] ^ 0xFF]))
    status, head, body = split_response(http_get(off.port, url))
    assert status == 504 and b"X-Demolab-Cache: CORRUPT" in head and b"checksum" in body
    last = json.loads(off.miss_log.read_text().splitlines()[-1])
    assert last["reason"] == "corrupt" and last["url"] == url
    assert "CORRUPT store entry" in off.log_text()


def test_non_allowed_client_is_refused(proxies, origin, store):
    url = f"http://127.0.0.1:{origin.port}/small/a"
    rec = proxies("record", store, allow=["127.0.0.1/32"])
    refused = http_get(rec.port, url, source="127.0.0.2")
    assert split_response(refused)[0] == 403
    assert origin.connections == 0, "a refused client must not cause an upstream request"
    assert split_response(http_get(rec.port, url))[0] == 200
    assert "refused client 127.0.0.2" in rec.log_text()


def test_store_permissions(proxies, origin, store):
    record_and_stop(proxies, store, lambda port: http_get(port, f"http://127.0.0.1:{origin.port}/small/p"))
    assert stat.S_IMODE(store.stat().st_mode) == 0o700
    for path in store.rglob("*"):
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode == (0o700 if path.is_dir() else 0o600), (path, oct(mode))


@pytest.fixture
def tiny_store(tmp_path):
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,mode=0700", "tmpfs", str(mnt)],
                            capture_output=True, text=True)
    if result.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root): " + result.stderr.strip())
    yield mnt / "store"
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_disk_full_while_recording(proxies, origin, tiny_store):
    big_url = f"http://127.0.0.1:{origin.port}/big"
    rec = proxies("record", tiny_store)
    raw = http_get(rec.port, big_url)
    assert split_response(raw)[2] == BIG, "the client must still get the whole response"
    small_url = f"http://127.0.0.1:{origin.port}/small/after-full"
    assert split_response(http_get(rec.port, small_url))[0] == 200
    time.sleep(0.3)
    rec.stop()
    log = rec.log_text()
    assert "STORE FULL: no space left" in log and big_url in log
    assert list((tiny_store / "tmp").iterdir()) == [], "nothing half-written may stay"
    assert not list((tiny_store / "objects").rglob("*.part"))
    off = proxies("offline", tiny_store)
    assert split_response(http_get(off.port, big_url))[0] == 504
    assert split_response(http_get(off.port, small_url))[0] == 200, "the store works again once there is room"
