"""On-disk store of recorded responses, and the miss log.

Layout under the store root (directories 0700, files 0600):
  objects/<k[:2]>/<k>.<sha16>.http   raw response: status line, headers, body
  objects/<k[:2]>/<k>.json           metadata with the sha256 of the .http file,
                                     written LAST: an entry exists only once it exists
  tmp/                               partial files; emptied at start-up
where k = sha256("<METHOD> <absolute URL>").
"""

from __future__ import annotations

import errno
import hashlib
import itertools
import json
import logging
import mmap
import os
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Optional
from urllib.parse import urlsplit

logger = logging.getLogger("demolab_cache")

DEFAULT_PORTS = {"http": 80, "https": 443}
SMALL_ENTRY = 1024 * 1024          # read into memory below this, mmap above
MEMORY_BUDGET = 64 * 1024 * 1024   # bytes of small entries kept per process
MAX_ENTRIES = 100000               # verified entries kept per process
MAX_MAPPED = 256                   # of which mapped (large) ones: each holds a file descriptor
RACY_WINDOW = 2.0                  # seconds: files changed this recently are verified on every hit


def normalize_url(scheme: str, host: str, port: Optional[int], path: str) -> str:
    """Absolute URL in one canonical spelling (lower-case host, no default port)."""
    scheme = scheme.lower()
    host = host.lower().rstrip(".")
    if ":" in host and not host.startswith("["):
        host = "[%s]" % host
    if port and port != DEFAULT_PORTS.get(scheme):
        host = "%s:%d" % (host, port)
    if not path.startswith("/"):
        path = "/" + path
    return "%s://%s%s" % (scheme, host, path)


def normalize_absolute(url: str) -> str:
    parts = urlsplit(url)
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return normalize_url(parts.scheme, parts.hostname or "", parts.port, path)


def cache_key(method: str, url: str) -> str:
    return hashlib.sha256(("%s %s" % (method.upper(), url)).encode("utf-8", "surrogateescape")).hexdigest()


def _sig(st: os.stat_result) -> tuple:
    return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass
class Lookup:
    status: str                       # "hit", "miss" or "corrupt"
    payload: Optional[memoryview] = None
    detail: str = ""


@dataclass
class _Verified:
    key: str
    meta_path: str
    meta_sig: tuple
    data_path: str
    data_sig: tuple
    hit: Lookup                       # the answer, built once
    size: int
    trusted: bool                     # signatures settled: a later change shows in them


LOG_MODE = 0o640  # the miss and hit logs: the proxy's group reads them (the demo app's /lab)
HIT_LOG_PERIOD = 1.0  # seconds: at most one hit-log line per proxy process and period
HIT_LOG_MAX = 1024 * 1024  # bytes: a longer hit log is moved to FILE.1 (one generation kept)


def append_line(path: str, line: str) -> None:
    """Append one line (one write, O_APPEND: whole lines even with several writers)."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, LOG_MODE)
    try:
        os.fchmod(fd, LOG_MODE)  # the proxy's umask is 077; an older log may be 0600
        os.write(fd, line.encode())
    finally:
        os.close(fd)


class HitLog:
    """Offline hits, counted in memory; a daemon thread appends the count once a period.

    The hit path only adds one to an integer (``hit``): no I/O, no lock, no clock. Each proxy
    process (a worker) has its own counter and thread, started at its first hit; the thread
    writes ``{"time", "hits", "last", "pid"}`` when there were hits in the period, so the log
    stays silent while nothing happens. Only the hit path writes ``count`` and only the
    thread writes ``flushed``: no update is ever lost.
    """

    def __init__(self, path: str, period: float = HIT_LOG_PERIOD) -> None:
        self.path = path
        self.period = period
        self.count = 0
        self.flushed = 0
        self.last = ""
        self._thread: "Optional[threading.Thread]" = None

    def hit(self, method: str, url: str) -> None:
        self.count += 1
        self.last = url if method == "GET" else method + " " + url
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="demolab-hit-log", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while True:
            time.sleep(self.period)
            self.flush()

    def flush(self) -> int:
        new = self.count - self.flushed
        if new <= 0:
            return 0
        self.flushed += new
        line = json.dumps({
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "hits": new, "last": self.last, "pid": os.getpid(),
        }) + "\n"
        try:
            try:
                if os.stat(self.path).st_size > HIT_LOG_MAX:
                    os.replace(self.path, self.path + ".1")
            except FileNotFoundError:
                pass
            append_line(self.path, line)
        except OSError as exc:
            logger.error("cannot append to hit log %s: %s", self.path, exc)
        return new


class Store:
    def __init__(self, root: str, miss_log: str = "") -> None:
        self.root = os.path.abspath(root)
        self.objects = os.path.join(self.root, "objects")
        self.tmp = os.path.join(self.root, "tmp")
        self.miss_log = miss_log
        # verified entries by (METHOD, url), least recently used first
        self._verified: "OrderedDict[tuple[str, str], _Verified]" = OrderedDict()
        self._memory = 0
        self._mapped = 0
        self._counter = itertools.count()

    # -- set-up -------------------------------------------------------------
    def prepare(self) -> None:
        """Create the directories (0700) and drop partial files of a killed run."""
        for path in (self.root, self.objects, self.tmp):
            os.makedirs(path, mode=0o700, exist_ok=True)
        os.chmod(self.root, 0o700)
        for name in os.listdir(self.tmp):
            try:
                os.unlink(os.path.join(self.tmp, name))
            except OSError:
                pass
        if self.miss_log:
            os.makedirs(os.path.dirname(os.path.abspath(self.miss_log)), mode=0o700, exist_ok=True)
            if os.path.exists(self.miss_log):
                os.chmod(self.miss_log, LOG_MODE)  # readable by the proxy's group (the demo app)

    def _paths(self, key: str) -> tuple[str, str]:
        bucket = os.path.join(self.objects, key[:2])
        return bucket, os.path.join(bucket, key + ".json")

    # -- replay -------------------------------------------------------------
    def lookup(self, method: str, url: str) -> Lookup:
        """The stored response for method + url, verified against its sha256.

        A verified entry is kept (bounded, see _remember) with the inode, size, mtime and ctime
        of both files: while these are unchanged and the entry is *trusted*, a hit costs two
        stat() calls and no read, parse or hash.  Any change of either file (rewrite, in-place
        corruption, re-recording, removal) changes a signature, and the entry is read and
        verified again.  An entry whose files changed less than RACY_WINDOW seconds before it
        was verified is not trusted (a change within the same timestamp tick could go unseen):
        it is verified again on every lookup until its files have settled.
        """
        method = method.upper()
        cached = self._verified.get((method, url))
        if cached is not None:
            try:
                if (cached.trusted
                        and _sig(os.stat(cached.meta_path)) == cached.meta_sig
                        and _sig(os.stat(cached.data_path)) == cached.data_sig):
                    self._verified.move_to_end((method, url))
                    return cached.hit
            except OSError:
                pass
            self._forget((method, url))
            key, meta_path = cached.key, cached.meta_path
            bucket = os.path.dirname(meta_path)
        else:
            key = cache_key(method, url)
            bucket, meta_path = self._paths(key)
        try:
            with open(meta_path, "rb") as fh:
                meta_st = os.fstat(fh.fileno())
                raw_meta = fh.read()
        except FileNotFoundError:
            return Lookup("miss")
        try:
            meta = json.loads(raw_meta)
            if meta.get("method") != method or meta.get("url") != url:
                return Lookup("corrupt", detail="metadata names another request")
            data_path = os.path.join(bucket, os.path.basename(meta["data"]))
            expected = meta["sha256"]
            size = int(meta["size"])
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            return Lookup("corrupt", detail="unreadable metadata (%s)" % exc)
        try:
            fd = os.open(data_path, os.O_RDONLY)
        except FileNotFoundError:
            return Lookup("corrupt", detail="data file missing")
        try:
            st = os.fstat(fd)
            if st.st_size != size:
                return Lookup("corrupt", detail="size %d, expected %d" % (st.st_size, size))
            if size <= SMALL_ENTRY:
                data = b""
                while len(data) < size:
                    piece = os.read(fd, size - len(data))
                    if not piece:
                        break
                    data += piece
                payload = memoryview(data)
            else:
                payload = memoryview(mmap.mmap(fd, size, access=mmap.ACCESS_READ))
        finally:
            os.close(fd)
        if hashlib.sha256(payload).hexdigest() != expected:
            return Lookup("corrupt", detail="sha256 mismatch")
        settled = max(meta_st.st_ctime_ns, meta_st.st_mtime_ns, st.st_ctime_ns, st.st_mtime_ns)
        trusted = time.time_ns() - settled > RACY_WINDOW * 1e9
        hit = Lookup("hit", payload)
        self._remember((method, url), _Verified(
            key, meta_path, _sig(meta_st), data_path, _sig(st), hit, size, trusted))
        return hit

    def _forget(self, ident: tuple[str, str]) -> None:
        old = self._verified.pop(ident, None)
        if old is not None:
            self._account(old, -1)

    def _account(self, entry: _Verified, sign: int) -> None:
        if entry.size <= SMALL_ENTRY:
            self._memory += sign * entry.size
        else:
            self._mapped += sign

    def _remember(self, ident: tuple[str, str], entry: _Verified) -> None:
        self._forget(ident)
        self._verified[ident] = entry
        self._account(entry, 1)
        while (self._memory > MEMORY_BUDGET or self._mapped > MAX_MAPPED
               or len(self._verified) > MAX_ENTRIES):
            _, old = self._verified.popitem(last=False)
            self._account(old, -1)

    def log_miss(self, method: str, url: str, reason: str, client: str = "") -> None:
        if not self.miss_log:
            return
        line = json.dumps({
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "method": method.upper(),
            "url": url,
            "reason": reason,
            "client": client,
        }) + "\n"
        try:
            append_line(self.miss_log, line)
        except OSError as exc:
            logger.error("cannot append to miss log %s: %s", self.miss_log, exc)

    # -- record -------------------------------------------------------------
    def recorder(self, method: str, url: str) -> "Recorder":
        return Recorder(self, method.upper(), url, next(self._counter))


class Recorder:
    """Writes one response to a temp file; commit() publishes it atomically."""

    def __init__(self, store: Store, method: str, url: str, serial: int) -> None:
        self.store = store
        self.method = method
        self.url = url
        self.key = cache_key(method, url)
        self.tmp_path = os.path.join(store.tmp, "%s.%d.%d.part" % (self.key, os.getpid(), serial))
        self.fd: Optional[int] = None
        self.hash = hashlib.sha256()
        self.size = 0
        self.failed = False
        self.finished = False

    def write(self, data: memoryview) -> None:
        if self.failed or self.finished or not len(data):
            return
        try:
            if self.fd is None:
                self.fd = os.open(self.tmp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            view = memoryview(data)
            while len(view):
                written = os.write(self.fd, view)
                view = view[written:]
            self.hash.update(data)
            self.size += len(data)
        except OSError as exc:
            self._fail(exc, "writing")

    def reset(self) -> None:
        """Drop what was written so far (an interim 1xx response)."""
        if self.failed or self.fd is None:
            return
        try:
            os.ftruncate(self.fd, 0)
            os.lseek(self.fd, 0, os.SEEK_SET)
        except OSError as exc:
            self._fail(exc, "writing")
            return
        self.hash = hashlib.sha256()
        self.size = 0

    def _fail(self, exc: OSError, doing: str) -> None:
        self.failed = True
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            logger.error(
                "STORE FULL: no space left in %s while %s %s %s: entry discarded, "
                "nothing half-written is kept, the client still gets the response",
                self.store.root, doing, self.method, self.url,
            )
        else:
            logger.error(
                "store error while %s %s %s: %s: entry discarded, the client still gets "
                "the response", doing, self.method, self.url, exc,
            )
        self._cleanup()

    def _cleanup(self) -> None:
        if self.fd is not None:
            try:
                os.close(self.fd)
            except OSError:
                pass
            self.fd = None
        try:
            os.unlink(self.tmp_path)
        except OSError:
            pass

    def abort(self, why: str) -> None:
        if self.finished:
            return
        self.finished = True
        if not self.failed:
            logger.warning("not stored: %s %s (%s)", self.method, self.url, why)
        self._cleanup()

    def commit(self, status: int) -> bool:
        if self.finished:
            return False
        self.finished = True
        if self.failed:
            return False
        try:
            if self.fd is None:
                self.fd = os.open(self.tmp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            os.fsync(self.fd)
            os.close(self.fd)
            self.fd = None
            digest = self.hash.hexdigest()
            bucket, meta_path = self.store._paths(self.key)
            os.makedirs(bucket, mode=0o700, exist_ok=True)
            old_data = None
            try:
                with open(meta_path, "rb") as fh:
                    old_data = json.loads(fh.read()).get("data")
            except (OSError, ValueError, AttributeError):
                pass
            data_name = "%s.%s.http" % (self.key, digest[:16])
            os.replace(self.tmp_path, os.path.join(bucket, data_name))
            published = os.path.join(bucket, data_name) if data_name != old_data else None
            _fsync_dir(bucket)
            meta = json.dumps({
                "method": self.method,
                "url": self.url,
                "status": status,
                "size": self.size,
                "sha256": digest,
                "data": data_name,
                "stored_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            }, indent=1).encode()
            meta_tmp = self.tmp_path + ".json"
            try:
                fd = os.open(meta_tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                try:
                    view = memoryview(meta)
                    while len(view):
                        view = view[os.write(fd, view):]
                    os.fsync(fd)
                finally:
                    os.close(fd)
                os.replace(meta_tmp, meta_path)
            except OSError:
                for path in (meta_tmp, published):
                    if path:
                        try:
                            os.unlink(path)
                        except OSError:
                            pass
                raise
            _fsync_dir(bucket)
            if old_data and old_data != data_name:
                try:
                    os.unlink(os.path.join(bucket, os.path.basename(old_data)))
                except OSError:
                    pass
        except OSError as exc:
            self._fail(exc, "committing")
            return False
        logger.info("stored %s %s (%d bytes, status %d)", self.method, self.url, self.size, status)
        return True
