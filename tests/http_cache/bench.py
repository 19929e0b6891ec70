"""Cache hits: demolab http_cache (proxy.py + plugin, offline mode) vs Squid (offline_mode on).

Everything on loopback: a local origin, our proxy prefilled by recording through
it, Squid prefilled by fetching through it; then wrk against both, same objects,
side by side.  Bounded: each wrk run lasts --duration seconds.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import os
import pwd
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from helpers import BIG, SMALL, Origin, ProxyProcess, free_port, http_get, split_response  # noqa: E402

SQUID_CONF = """\
http_port 127.0.0.1:{port}
pid_filename {dir}/squid.pid
cache_log {dir}/cache.log
access_log none
cache_store_log none
coredump_dir {dir}
cache_effective_user {user}
cache_mem 1024 MB
maximum_object_size_in_memory 64 MB
maximum_object_size 64 MB
memory_cache_shared off
offline_mode on
refresh_pattern . 1440 100% 10080 override-expire override-lastmod ignore-reload ignore-private
acl localnet src 127.0.0.0/8
http_access allow localnet
http_access deny all
shutdown_lifetime 1 seconds
client_persistent_connections on
server_persistent_connections on
"""

LUA = """\
wrk.method = "GET"
wrk.path = "{url}"
wrk.headers["Host"] = "{host}"
"""


def wrk(port: int, url: str, host: str, clients: int, duration: int, workdir: Path) -> dict:
    script = workdir / "req.lua"
    script.write_text(LUA.format(url=url, host=host))
    out = subprocess.run(
        ["wrk", "-t2", f"-c{clients}", f"-d{duration}s", "--latency", "--timeout", "30s",
         "-s", str(script), f"http://127.0.0.1:{port}"],
        capture_output=True, text=True, timeout=duration + 60,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    tps = re.search(r"Transfer/sec:\s+([\d.]+)(\w+)", out)
    scale = {"B": 1, "KB": 1e3, "MB": 1e6, "GB": 1e9}
    mult = {"B": 1, "KB": 1024, "MB": 1024 ** 2, "GB": 1024 ** 3}.get(tps.group(2), scale.get(tps.group(2), 1))
    p99 = re.search(r"99%\s+([\d.]+\w+)", out)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {"rps": rps, "bytes_per_s": float(tps.group(1)) * mult, "p99": p99.group(1) if p99 else "?",
            "non2xx": int(errors.group(1)) if errors else 0, "raw": out}


def keepalive_bodies(port: int, url: str, host: str, count: int = 3) -> list[bytes]:
    """Bodies of `count` requests for url on one keep-alive connection through the proxy."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    bodies = []
    try:
        for _ in range(count):
            conn.request("GET", url, headers={"Host": host})
            resp = conn.getresponse()
            body = resp.read()
            assert resp.status == 200 and not resp.will_close, (resp.status, resp.getheaders())
            bodies.append(body)
    finally:
        conn.close()
    return bodies


def verify(ports: dict, objects: dict, expected: dict, host: str) -> None:
    """Both proxies return the origin's exact body (sha256) for each object, keep-alive."""
    for label, url in objects.items():
        for name, port in ports.items():
            for body in keepalive_bodies(port, url, host):
                digest = hashlib.sha256(body).hexdigest()
                assert digest == expected[label], "%s %s: body sha256 %s, expected %s" % (
                    name, label, digest, expected[label])


def start_squid(workdir: Path) -> tuple[subprocess.Popen, int]:
    port = free_port()
    sdir = workdir / "squid"
    sdir.mkdir()
    user = "proxy"
    try:
        pw = pwd.getpwnam(user)
        os.chown(sdir, pw.pw_uid, pw.pw_gid)
    except KeyError:
        user = "nobody"
        os.chmod(sdir, 0o777)
    conf = sdir / "squid.conf"
    conf.write_text(SQUID_CONF.format(port=port, dir=sdir, user=user))
    proc = subprocess.Popen(["squid", "-N", "-f", str(conf)], stdout=subprocess.DEVNULL,
                            stderr=open(sdir / "stderr.log", "w"), start_new_session=True)
    deadline = time.time() + 30
    import socket
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return proc, port
        except OSError:
            time.sleep(0.2)
    raise RuntimeError("squid did not start: " + (sdir / "cache.log").read_text()[-2000:])


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--rounds", type=int, default=1,
                    help="measure each pair this many times, alternating which proxy goes first "
                         "(a shared, noisy machine drifts); the median of the rounds is compared")
    args = ap.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="http-cache-bench-"))
    os.chmod(workdir, 0o755)
    pki = {"lab_cert": "", "lab_key": "", "signing_key": "", "upstream_ca": "/etc/ssl/certs/ca-certificates.crt"}
    origin = Origin()
    host = f"127.0.0.1:{origin.port}"
    objects = {"10KB": f"http://{host}/small/bench", "20MB": f"http://{host}/big"}
    expected = {"10KB": hashlib.sha256(SMALL + b"/small/bench").hexdigest(),
                "20MB": hashlib.sha256(BIG).hexdigest()}
    store = workdir / "store"
    ours = squid = None
    try:
        rec = ProxyProcess(workdir, "record", store, pki, name="bench")
        for url in objects.values():
            assert split_response(http_get(rec.port, url))[0] == 200
        rec.stop()
        ours = ProxyProcess(workdir, "offline", store, pki, name="bench", acceptors=0)
        squid, squid_port = start_squid(workdir)
        for url in objects.values():
            for _ in range(3):   # fill, then confirm hits
                raw = http_get(squid_port, url)
            assert split_response(raw)[0] == 200 and b"HIT" in split_response(raw)[1], raw[:400]
            assert split_response(http_get(ours.port, url))[0] == 200
        ports = {"http_cache": ours.port, "squid": squid_port}
        verify(ports, objects, expected, host)
        before = origin.connections
        rounds: dict = {}
        for label, url in objects.items():
            for n in range(args.rounds):
                pair = [("http_cache", ours.port), ("squid", squid_port)]
                for name, port in (pair if n % 2 == 0 else pair[::-1]):
                    wrk(port, url, host, args.clients, 2, workdir)   # warm-up
                    rounds.setdefault((label, name), []).append(
                        wrk(port, url, host, args.clients, args.duration, workdir))
        results = {k: sorted(v, key=lambda r: r["rps"])[len(v) // 2] for k, v in rounds.items()}
        verify(ports, objects, expected, host)   # and still the same bytes after the load
        print(f"\ncache hits, loopback, wrk -t2 -c{args.clients} -d{args.duration}s, "
              f"{os.cpu_count()} CPUs; origin connections during the runs: {origin.connections - before}")
        print("both proxies: body sha256 verified against the origin's, before and after the runs: "
              + ", ".join(f"{label} {digest[:12]}" for label, digest in expected.items()))
        print(f"{'object':8} {'proxy':11} {'req/s':>10} {'MB/s':>10} {'p99':>9} {'non-2xx':>8}")
        for (label, name), r in results.items():
            print(f"{label:8} {name:11} {r['rps']:10.0f} {r['bytes_per_s'] / 1e6:10.1f} {r['p99']:>9} {r['non2xx']:8d}")
        if args.rounds > 1:
            print(f"\n{args.rounds} rounds each, alternating which proxy went first; median shown above. "
                  "per round, req/s http_cache / squid:")
            for label in objects:
                print(f"  {label:6} " + "  ".join(
                    f"{a['rps']:.0f}/{b['rps']:.0f}={a['rps'] / b['rps']:.2f}x"
                    for a, b in zip(rounds[(label, "http_cache")], rounds[(label, "squid")], strict=True)))
        small = results[("10KB", "http_cache")]["rps"] / results[("10KB", "squid")]["rps"]
        big = results[("20MB", "http_cache")]["bytes_per_s"] / results[("20MB", "squid")]["bytes_per_s"]
        verdict = "OK" if small >= 1.0 else "BELOW GOAL"
        print(f"\nratio 10KB req/s   http_cache/squid = {small:.2f}x (goal >= 1.0x) {verdict}")
        print(f"ratio 20MB bytes/s http_cache/squid = {big:.2f}x (goal >= 3x)   {'OK' if big >= 3 else 'BELOW GOAL'}")
        return 0
    finally:
        if ours:
            ours.stop()
        if squid:
            squid.terminate()
            try:
                squid.wait(15)
            except subprocess.TimeoutExpired:
                squid.kill()
        origin.close()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
