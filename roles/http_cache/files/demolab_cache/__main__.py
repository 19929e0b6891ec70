"""Command line: serve (run proxy.py with the plugin), misses (report), check (verify store).

  python -m demolab_cache serve --config FILE   (the http_cache role writes it)
  python -m demolab_cache misses [--miss-log FILE] [--json]   (default: the lab.json proxy.miss_log)
  python -m demolab_cache check --store DIR
  python -m demolab_cache record --config FILE URL...   (mirror/urls.txt, while online)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import signal
import sys
from collections import Counter
from typing import Any

DEFAULTS: dict[str, Any] = {
    "listen_address": "127.0.0.1",
    "port": 3128,
    "mode": "record",
    "store_dir": None,  # required: the role's config names the store, the miss log and the cert dir
    "miss_log": None,
    "hit_log": "",
    "allow": ["127.0.0.0/8", "::1/128"],
    "ca_cert": "",
    "ca_key": "",
    "signing_key": "",
    "cert_dir": None,
    "upstream_ca_file": "/etc/ssl/certs/ca-certificates.crt",
    "log_file": "",
    "log_level": "INFO",
    "num_workers": 0,
    "num_acceptors": 0,
    "timeout": 30,
    "max_sendbuf_size": 1048576,
    "openssl": "openssl",
    "record_hint": "",
}


# The lab's settings (the lab role writes it; DEMOLAB_LAB_JSON names another, for tests).
LAB_JSON = os.environ.get("DEMOLAB_LAB_JSON") or "/etc/demolab/lab.json"


def lab_miss_log() -> str:
    try:
        with open(LAB_JSON, encoding="utf-8") as fh:
            return json.load(fh)["proxy"]["miss_log"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise SystemExit("no --miss-log given and the lab's settings %s are unreadable (%s)"
                         % (LAB_JSON, exc)) from None


def load_config(path: str) -> dict[str, Any]:
    config = dict(DEFAULTS)
    if path:
        with open(path, encoding="utf-8") as fh:
            loaded = json.load(fh)
        unknown = set(loaded) - set(DEFAULTS)
        if unknown:
            raise SystemExit("unknown keys in %s: %s" % (path, ", ".join(sorted(unknown))))
        config.update(loaded)
    missing = sorted(key for key, value in config.items() if value is None)
    if missing:
        raise SystemExit("%s must name %s (the http_cache role's config.json does)" % (path or "the config",
                                                                                        ", ".join(missing)))
    if config["mode"] not in ("record", "offline"):
        raise SystemExit("mode must be record or offline, not %r" % config["mode"])
    return config


def proxy_argv(config: dict[str, Any]) -> list[str]:
    allow = config["allow"]
    argv = [
        "--hostname", str(config["listen_address"]),
        "--port", str(config["port"]),
        "--plugins", "demolab_cache.plugin.CachePlugin",
        "--demolab-mode", config["mode"],
        "--demolab-store", config["store_dir"],
        "--demolab-miss-log", config["miss_log"],
        "--demolab-hit-log", config["hit_log"],
        "--demolab-allow", ",".join(allow) if isinstance(allow, list) else str(allow),
        "--log-level", str(config["log_level"]),
        "--timeout", str(config["timeout"]),
        "--max-sendbuf-size", str(config["max_sendbuf_size"]),
        "--openssl", str(config["openssl"]),
        "--ca-file", str(config["upstream_ca_file"]),
    ]
    if config["record_hint"]:
        argv += ["--demolab-record-hint", config["record_hint"]]
    if config["log_file"]:
        argv += ["--log-file", config["log_file"]]
    if int(config["num_workers"]) > 0:
        argv += ["--num-workers", str(config["num_workers"])]
    if int(config["num_acceptors"]) > 0:
        argv += ["--num-acceptors", str(config["num_acceptors"])]
    if config["ca_cert"] and config["ca_key"] and config["signing_key"]:
        argv += [
            "--ca-cert-file", config["ca_cert"],
            "--ca-key-file", config["ca_key"],
            "--ca-signing-key-file", config["signing_key"],
            "--ca-cert-dir", config["cert_dir"],
        ]
    return argv


def _raise_interrupt(_signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt


def cmd_serve(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    os.umask(0o077)
    from .store import Store  # noqa: PLC0415 (keeps `misses` free of proxy.py imports)

    Store(config["store_dir"], config["miss_log"]).prepare()
    if config["ca_cert"]:
        os.makedirs(config["cert_dir"], mode=0o700, exist_ok=True)
    from proxy.proxy import Proxy, sleep_loop  # noqa: PLC0415

    signal.signal(signal.SIGTERM, _raise_interrupt)
    print("demolab_cache: %s mode on %s:%s, store %s" % (
        config["mode"], config["listen_address"], config["port"], config["store_dir"]), flush=True)
    with Proxy(proxy_argv(config) + list(args.proxy_args)) as proxy:
        sleep_loop(proxy)
    return 0


def cmd_misses(args: argparse.Namespace) -> int:
    counts: Counter[tuple[str, str, str]] = Counter()
    last: dict[tuple[str, str, str], str] = {}
    try:
        with open(args.miss_log, encoding="utf-8") as fh:
            for line in fh:
                try:
                    item = json.loads(line)
                except ValueError:
                    continue
                key = (item.get("method", "?"), item.get("url", "?"), item.get("reason", "miss"))
                counts[key] += 1
                last[key] = item.get("time", "")
    except FileNotFoundError:
        pass
    if args.json:
        print(json.dumps([
            {"method": k[0], "url": k[1], "reason": k[2], "count": n, "last": last[k]}
            for k, n in counts.most_common()
        ], indent=1))
        return 0
    if not counts:
        print("no cache misses recorded")
        return 0
    print("%d distinct URL(s) missed while offline (record them before the talk):" % len(counts))
    for (method, url, reason), n in counts.most_common():
        print("  %4dx %-7s %s%s" % (n, method, url, "  [corrupt entry]" if reason == "corrupt" else ""))
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    objects = os.path.join(args.store, "objects")
    good = bad = 0
    for bucket, _dirs, files in os.walk(objects):
        for name in files:
            if not name.endswith(".json"):
                continue
            try:
                with open(os.path.join(bucket, name), encoding="utf-8") as fh:
                    meta = json.load(fh)
                digest = hashlib.sha256()
                with open(os.path.join(bucket, os.path.basename(meta["data"])), "rb") as fh:
                    for block in iter(lambda: fh.read(1 << 20), b""):
                        digest.update(block)
                ok = digest.hexdigest() == meta["sha256"]
            except (OSError, ValueError, KeyError, TypeError):
                ok, meta = False, {"url": name}
            if ok:
                good += 1
            else:
                bad += 1
                print("CORRUPT %s %s" % (meta.get("method", "?"), meta.get("url", name)))
    print("%d entries ok, %d corrupt" % (good, bad))
    return 1 if bad else 0


def cmd_record(args: argparse.Namespace) -> int:
    """Fetch each URL not yet in the store through the running proxy, so it is recorded.

    Prints one JSON line: {"changed": bool, "recorded": [...], "failed": {url: why}}.
    """
    import time  # noqa: PLC0415
    import urllib.error  # noqa: PLC0415
    import urllib.request  # noqa: PLC0415

    from .store import Store, normalize_absolute  # noqa: PLC0415

    config = load_config(args.config)
    if config["mode"] != "record":
        raise SystemExit("the proxy is in %s mode: record the URLs while online" % config["mode"])
    store = Store(config["store_dir"])
    for name in ("no_proxy", "NO_PROXY"):
        os.environ.pop(name, None)  # urllib would go around the proxy for these
    proxy = "http://%s:%s" % (config["listen_address"], config["port"])
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({"http": proxy, "https": proxy}))
    recorded, failed = [], {}
    for url in args.urls:
        key = normalize_absolute(url)
        if store.lookup("GET", key).status == "hit":
            continue
        try:
            with opener.open(url, timeout=args.timeout) as resp:
                while resp.read(1 << 20):
                    pass
        except (urllib.error.URLError, OSError) as exc:
            failed[url] = str(getattr(exc, "reason", exc))
            continue
        deadline = time.monotonic() + 10  # the entry is committed just after the response
        while store.lookup("GET", key).status != "hit" and time.monotonic() < deadline:
            time.sleep(0.2)
        if store.lookup("GET", key).status == "hit":
            recorded.append(url)
        else:
            failed[url] = "fetched, but the proxy stored nothing (see its log)"
    print(json.dumps({"changed": bool(recorded), "recorded": recorded, "failed": failed}))
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="demolab_cache")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the caching proxy")
    serve.add_argument("--config", default="", help="JSON config file")
    serve.add_argument("proxy_args", nargs=argparse.REMAINDER, help="extra proxy.py flags")
    misses = sub.add_parser("misses", help="report of the offline misses")
    misses.add_argument("--miss-log", default=None, help="default: the lab's (lab.json proxy.miss_log)")
    misses.add_argument("--json", action="store_true")
    check = sub.add_parser("check", help="verify every stored entry's checksum")
    check.add_argument("--store", required=True, help="the store directory (http_cache_store_dir)")
    record = sub.add_parser("record", help="record URLs not in the store yet (through the proxy)")
    record.add_argument("--config", default="", help="JSON config file of the running proxy")
    record.add_argument("--timeout", type=float, default=300)
    record.add_argument("urls", nargs="*")
    args = parser.parse_args(argv)
    if args.command == "misses" and not args.miss_log:
        args.miss_log = lab_miss_log()
    return {"serve": cmd_serve, "misses": cmd_misses, "check": cmd_check,
            "record": cmd_record}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
