"""http_cache offline hot path: verified entries kept in memory, responses sent at once.

Real proxy.py processes (one acceptor, so every connection meets the same in-memory store).
"""

import hashlib
import json
import os
import socket
import ssl
import time

from helpers import BIG, SMALL, _read_all, http_get, https_get, split_response

RACY_WINDOW = 2.0   # demolab_cache.store.RACY_WINDOW


def record(proxies, store, urls):
    rec = proxies("record", store)
    raw = {url: http_get(rec.port, url) for url in urls}
    rec.stop()
    return raw


def meta_of(store, url, method="GET"):
    key = hashlib.sha256(f"{method} {url}".encode()).hexdigest()
    meta_path = store / "objects" / key[:2] / (key + ".json")
    return meta_path, json.loads(meta_path.read_text())


def settle(*paths):
    """Wait until the files are older than the racy window: their entries become trusted."""
    newest = max(max(os.stat(p).st_ctime, os.stat(p).st_mtime) for p in paths)
    delay = newest + RACY_WINDOW + 0.3 - time.time()
    if delay > 0:
        time.sleep(delay)


def rewrite_in_place(path, offset, data):
    """Overwrite bytes without changing size, inode or mtime (only ctime moves)."""
    st = os.stat(path)
    with open(path, "r+b") as fh:
        fh.seek(offset)
        fh.write(data)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert os.stat(path).st_size == st.st_size and os.stat(path).st_ino == st.st_ino


def test_trusted_entry_changed_in_place_is_verified_again(proxies, origin, store):
    url = f"http://127.0.0.1:{origin.port}/small/hot"
    recorded = record(proxies, store, [url])[url]
    meta_path, meta = meta_of(store, url)
    data_path = meta_path.parent / meta["data"]
    settle(meta_path, data_path)
    off = proxies("offline", store)
    for _ in range(3):   # first: read, verified, remembered as trusted; then served from memory
        assert http_get(off.port, url) == recorded
    offset = len(recorded) - 100
    original = recorded[offset:offset + 1]
    rewrite_in_place(data_path, offset, bytes([original[0] ^ 0xFF]))
    status, head, body = split_response(http_get(off.port, url))
    assert status == 504 and b"X-Demolab-Cache: CORRUPT" in head and b"checksum" in body
    assert json.loads(off.miss_log.read_text().splitlines()[-1])["reason"] == "corrupt"
    # repaired: verified again and served byte for byte
    rewrite_in_place(data_path, offset, original)
    assert http_get(off.port, url) == recorded
    # metadata corrupted in place (same size): its checksum no longer matches
    text = meta_path.read_bytes()
    at = text.index(meta["sha256"].encode())
    rewrite_in_place(meta_path, at, b"0" if text[at:at + 1] != b"0" else b"1")
    assert b"X-Demolab-Cache: CORRUPT" in split_response(http_get(off.port, url))[1]
    # entry removed: a plain miss, never the remembered copy
    meta_path.unlink()
    status, head, _ = split_response(http_get(off.port, url))
    assert status == 504 and b"X-Demolab-Cache: MISS" in head
    assert origin.connections == 1, "only the recording may reach the origin"


def test_replaced_entry_is_served_instead_of_the_remembered_one(proxies, origin, store):
    url = f"http://127.0.0.1:{origin.port}/small/replaced"
    recorded = record(proxies, store, [url])[url]
    meta_path, meta = meta_of(store, url)
    settle(meta_path, meta_path.parent / meta["data"])
    off = proxies("offline", store)
    assert http_get(off.port, url) == recorded
    assert http_get(off.port, url) == recorded
    # a new recording of the same URL published the way the recorder does: data, then metadata
    new = recorded.replace(b"X-Origin: demolab-test", b"X-Origin: demolab-new!")
    assert new != recorded and len(new) == len(recorded)
    digest = hashlib.sha256(new).hexdigest()
    name = "%s.%s.http" % (meta_path.stem, digest[:16])
    (meta_path.parent / name).write_bytes(new)
    meta.update(sha256=digest, data=name, size=len(new))
    tmp = meta_path.with_suffix(".tmp")
    tmp.write_text(json.dumps(meta))
    os.replace(tmp, meta_path)
    assert http_get(off.port, url) == new
    assert http_get(off.port, url) == new


def test_untrusted_entry_corrupted_right_after_a_hit(proxies, origin, store):
    """Files changed within the racy window are verified on every hit: no same-tick blind spot."""
    url = f"http://127.0.0.1:{origin.port}/small/racy"
    recorded = record(proxies, store, [url])[url]
    meta_path, meta = meta_of(store, url)
    data_path = meta_path.parent / meta["data"]
    off = proxies("offline", store)
    assert http_get(off.port, url) == recorded
    st = os.stat(data_path)
    with open(data_path, "r+b") as fh:     # corrupt, then put back ctime-independent stamps
        fh.seek(len(recorded) - 1)
        fh.write(bytes([recorded[-1] ^ 1]))
    os.utime(data_path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert b"X-Demolab-Cache: CORRUPT" in split_response(http_get(off.port, url))[1]


def test_pipelined_requests_are_answered_in_order(proxies, origin, store):
    """A large response is partly sent at once and partly queued: what follows must wait."""
    urls = [f"http://127.0.0.1:{origin.port}/small/p1", f"http://127.0.0.1:{origin.port}/big",
            f"http://127.0.0.1:{origin.port}/small/p2", f"http://127.0.0.1:{origin.port}/small/unknown"]
    recorded = record(proxies, store, urls[:3])
    off = proxies("offline", store)
    host = f"127.0.0.1:{origin.port}"
    order = [urls[0], urls[1], urls[2], urls[0], urls[3], urls[2]]
    requests = b"".join(
        f"GET {u} HTTP/1.1\r\nHost: {host}\r\n{'Connection: close' if i == len(order) - 1 else 'X-N: %d' % i}"
        f"\r\n\r\n".encode() for i, u in enumerate(order))
    first = f"GET {urls[2]} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
    sock = socket.create_connection(("127.0.0.1", off.port), timeout=30)
    with sock:
        # proxy.py parses a connection's first request itself (and does not take pipelined
        # requests in that same packet): start with one request and its whole answer
        sock.sendall(first)
        got = b""
        while len(got) < len(recorded[urls[2]]):
            got += sock.recv(1 << 20)
        assert got == recorded[urls[2]]
        sock.sendall(requests)
        time.sleep(0.5)   # the client reads late: the proxy's socket buffer fills meanwhile
        got = _read_all(sock)
    pos = 0
    for url in order:
        if url == urls[3]:
            status, head, _ = split_response(got[pos:])
            assert status == 504 and b"X-Demolab-Cache: MISS" in head
            pos = got.index(b"\r\n\r\n", pos) + 4 + int(
                head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
            continue
        assert got[pos:pos + len(recorded[url])] == recorded[url], url
        pos += len(recorded[url])
    assert pos == len(got)
    assert split_response(recorded[urls[0]])[2] == SMALL + b"/small/p1"


def test_https_keep_alive_in_the_tunnel(proxies, tls_origin, store, pki):
    paths = ["/big", "/small/t1"]
    rec = proxies("record", store)
    recorded = {p: https_get(rec.port, "localhost", tls_origin.port, p, pki["lab_cert"]) for p in paths}
    rec.stop()
    assert split_response(recorded["/big"])[2] == BIG
    off = proxies("offline", store)
    sock = socket.create_connection(("127.0.0.1", off.port), timeout=30)
    target = f"localhost:{tls_origin.port}"
    sock.sendall(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode())
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)
    assert b" 200 " in head.split(b"\r\n")[0]
    tls = ssl.create_default_context(cafile=str(pki["lab_cert"])).wrap_socket(sock, server_hostname="localhost")
    with tls:
        order = ["/small/t1", "/big", "/small/t1"]
        tls.sendall(b"".join(
            f"GET {p} HTTP/1.1\r\nHost: {target}\r\n".encode() + (b"Connection: close\r\n" if i == 2 else b"")
            + b"\r\n" for i, p in enumerate(order)))
        time.sleep(0.3)
        got = _read_all(tls)
    assert got == b"".join(recorded[p] for p in order)


def test_remembered_entries_are_bounded(tmp_path, monkeypatch):
    """Store in-process: small entries within the memory budget, mapped ones within their count."""
    from demolab_cache import store as store_mod
    monkeypatch.setattr(store_mod, "MEMORY_BUDGET", 3 * 20000)
    monkeypatch.setattr(store_mod, "MAX_MAPPED", 2)
    st = store_mod.Store(str(tmp_path / "store"))
    st.prepare()
    small = b"HTTP/1.1 200 OK\r\nContent-Length: 20000\r\n\r\n" + SMALL * 2
    large = b"HTTP/1.1 200 OK\r\n\r\n" + BIG[: store_mod.SMALL_ENTRY + 1]
    urls = {}
    for i in range(5):
        for kind, payload in (("s", small[:20000]), ("l", large)):
            url = f"http://example.test/{kind}{i}"
            rec = st.recorder("GET", url)
            rec.write(memoryview(payload))
            assert rec.commit(200)
            urls[url] = payload
    for url, payload in urls.items():
        found = st.lookup("GET", url)
        assert found.status == "hit" and bytes(found.payload) == payload
        assert st._memory <= store_mod.MEMORY_BUDGET and st._mapped <= 2
    assert len(st._verified) <= 5
    for url, payload in urls.items():   # evicted entries come back from disk, verified
        assert bytes(st.lookup("GET", url).payload) == payload
