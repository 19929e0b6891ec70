"""proxy.py plugin: record responses (record mode) or replay them (offline mode).

record:  every request goes upstream; each complete response is stored
         atomically (see store.py).  HTTPS is recorded when proxy.py intercepts
         TLS (--ca-key-file, --ca-cert-file, --ca-signing-key-file).
offline: no upstream connection is ever attempted (no DNS, no connect).  Plain
         HTTP and intercepted HTTPS (the plugin terminates TLS itself with a
         lab-CA-signed certificate) are answered from the store; a miss or a
         corrupt entry is a 504 and a line in the miss log.
Both:    clients outside --demolab-allow get a 403.
"""

from __future__ import annotations

import ipaddress
import logging
import ssl
from collections import deque
from typing import Any, Optional

from proxy.common.flag import flags
from proxy.common.utils import text_, tls_interception_enabled
from proxy.http.exception import HttpProtocolException, HttpRequestRejected
from proxy.http.parser import HttpParser
from proxy.http.proxy import HttpProxyBasePlugin
from proxy.http.responses import PROXY_TUNNEL_ESTABLISHED_RESPONSE_PKT

from .framing import FramingError, ResponseFraming
from .store import HitLog, Recorder, Store, normalize_absolute, normalize_url
from .tlscerts import ensure_leaf_cert

logger = logging.getLogger("demolab_cache")

DEFAULT_ALLOW = "127.0.0.0/8,::1/128"
DEFAULT_HINT = (
    "switch the lab online (make online), fetch the URL once through this proxy "
    "(it records in record mode), then go offline again (make offline)"
)
MAX_REQUEST_HEAD = 64 * 1024

flags.add_argument(
    "--demolab-mode", type=str, choices=("record", "offline"), default="record",
    help="demolab cache: record (forward and store) or offline (replay only, 504 on a miss).",
)
flags.add_argument(
    "--demolab-store", type=str, default="",
    help="demolab cache: store directory (created 0700; demolab_cache serve always gives it).",
)
flags.add_argument(
    "--demolab-miss-log", type=str, default="",
    help="demolab cache: JSON-lines file that offline misses are appended to.",
)
flags.add_argument(
    "--demolab-hit-log", type=str, default="",
    help="demolab cache: JSON-lines file that each worker appends its offline hit count to "
         "(at most once a second, only when there were hits).",
)
flags.add_argument(
    "--demolab-allow", type=str, default=DEFAULT_ALLOW,
    help="demolab cache: comma separated client networks allowed to use the proxy.",
)
flags.add_argument(
    "--demolab-record-hint", type=str, default=DEFAULT_HINT,
    help="demolab cache: how to record a missing URL (shown in the 504 body).",
)

_STORES: dict[tuple[str, str], Store] = {}
_HIT_LOGS: dict[str, Optional[HitLog]] = {}
_NETWORKS: dict[str, list[Any]] = {}
_TARGETS: dict[tuple[Optional[tuple[str, str, int]], str], Optional[str]] = {}
MAX_TARGETS = 4096       # remembered request-target -> URL normalizations per process
MAX_TARGET_MEMO = 2048   # longer targets are normalized every time (bounds that memory)


def _store_for(args: Any) -> Store:
    key = (args.demolab_store, args.demolab_miss_log)
    if key not in _STORES:
        _STORES[key] = Store(*key)
    return _STORES[key]


def _hit_log_for(args: Any) -> Optional[HitLog]:
    path = getattr(args, "demolab_hit_log", "")
    if path not in _HIT_LOGS:
        _HIT_LOGS[path] = HitLog(path) if path else None
    return _HIT_LOGS[path]


def _networks(spec: str) -> list[Any]:
    if spec not in _NETWORKS:
        _NETWORKS[spec] = [
            ipaddress.ip_network(item.strip(), strict=False)
            for item in spec.split(",") if item.strip()
        ]
    return _NETWORKS[spec]


def client_allowed(address: Optional[str], spec: str) -> bool:
    if not address:
        return False
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    mapped = getattr(ip, "ipv4_mapped", None)
    if mapped is not None:
        ip = mapped
    return any(ip.version == net.version and ip in net for net in _networks(spec))


def _text_response(status: int, reason: str, body: str, extra: Optional[dict[str, str]] = None) -> bytes:
    payload = body.encode("utf-8")
    head = [
        "HTTP/1.1 %d %s" % (status, reason),
        "Content-Type: text/plain; charset=utf-8",
        "Content-Length: %d" % len(payload),
        "Cache-Control: no-store",
    ]
    for name, value in (extra or {}).items():
        head.append("%s: %s" % (name, value))
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + payload


class CloseAfterResponse(HttpProtocolException):
    """Raised after a response was queued to make proxy.py flush it, then close."""

    def response(self, _request: HttpParser) -> Optional[memoryview]:
        return None


class CachePlugin(HttpProxyBasePlugin):
    """Record / offline replay plugin.  One instance per client connection."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.mode: str = self.flags.demolab_mode
        self.store = _store_for(self.flags)
        self.hit_log = _hit_log_for(self.flags)
        self.base: Optional[tuple[str, str, int]] = None   # CONNECT target
        # record state
        self.recording = True
        self.pending: deque[tuple[str, str]] = deque()
        self.framing: Optional[ResponseFraming] = None
        self.recorder: Optional[Recorder] = None
        # offline state
        self.inbuf = bytearray()
        self.skip_body = 0

    # -- helpers --------------------------------------------------------------
    @property
    def client_ip(self) -> str:
        return str(self.client.addr[0]) if self.client.addr else ""

    def _check_client(self) -> None:
        if client_allowed(self.client_ip, self.flags.demolab_allow):
            return
        logger.warning("refused client %s: not in the allowed networks (%s)",
                       self.client_ip, self.flags.demolab_allow)
        raise HttpRequestRejected(
            status_code=403, reason=b"Forbidden",
            headers={b"Content-Type": b"text/plain; charset=utf-8"},
            body=("demolab http_cache: client %s is not allowed to use this proxy\n"
                  % self.client_ip).encode(),
        )

    def _url(self, target: str) -> Optional[str]:
        """Absolute URL for a request target (absolute form, or origin form in a tunnel)."""
        memo = (self.base, target)
        try:
            return _TARGETS[memo]
        except KeyError:
            pass
        url = None
        if target.lower().startswith(("http://", "https://")):
            url = normalize_absolute(target)
        elif self.base is not None and target.startswith("/"):
            scheme, host, port = self.base
            url = normalize_url(scheme, host, port, target)
        if len(target) <= MAX_TARGET_MEMO:
            if len(_TARGETS) >= MAX_TARGETS:
                _TARGETS.clear()
            _TARGETS[memo] = url
        return url

    def _send(self, response: memoryview) -> None:
        """Send a response to the client: at once what its socket takes now, queue the rest.

        proxy.py writes a queued buffer only on a later turn of its event loop, once a select
        says the socket is writable: for a small cached response that doubles the loop turns
        (and selector updates) per request.  A keep-alive client waiting for its answer has
        room in its socket buffer, so the response usually goes out here in one send().
        Nothing is sent ahead of bytes already queued (order is kept); at most
        --max-sendbuf-size bytes are written here, like one proxy.py flush.
        """
        if not self.client.has_buffer():
            try:
                sent = self.client.connection.send(response[:self.flags.max_sendbuf_size])
            except (BlockingIOError, InterruptedError, ssl.SSLWantWriteError, ssl.SSLWantReadError):
                sent = 0
            except OSError:
                sent = 0    # proxy.py meets the error again on its own flush and tears down
            if sent >= len(response):
                return
            response = response[sent:]
        self.client.queue(response)

    def _parser_url(self, request: HttpParser) -> Optional[str]:
        path = text_(request.path or b"/")
        if self.base is None and request.host:
            return normalize_url("http", text_(request.host), request.port, path)
        return self._url(path)

    # -- proxy.py hooks ---------------------------------------------------------
    def before_upstream_connection(self, request: HttpParser) -> Optional[HttpParser]:
        self._check_client()
        if self.mode != "offline":
            return request
        if request.is_https_tunnel and not tls_interception_enabled(self.flags):
            raise HttpRequestRejected(
                status_code=504, reason=b"Gateway Timeout",
                headers={b"Content-Type": b"text/plain; charset=utf-8"},
                body=b"demolab http_cache is offline and cannot replay HTTPS without the lab CA\n",
            )
        return None     # offline: never connect upstream

    def handle_client_request(self, request: HttpParser) -> Optional[HttpParser]:
        if self.mode == "offline":
            self._offline_first(request)
            return None
        if request.is_https_tunnel:
            self.base = ("https", text_(request.host), int(request.port or 443))
            self.recording = tls_interception_enabled(self.flags) and self.do_intercept(request)
            if not self.recording:
                logger.info("not recording %s: TLS interception is off", text_(request.host))
            return request
        if self.recording:
            url = self._parser_url(request)
            if url is None:
                self.recording = False
            else:
                self.pending.append((text_(request.method).upper(), url))
        return request

    def handle_upstream_chunk(self, chunk: memoryview) -> Optional[memoryview]:
        if self.mode == "record" and self.recording:
            try:
                self._record(memoryview(chunk))
            except FramingError as exc:
                self._stop_recording("cannot delimit the response: %s" % exc)
            except Exception:   # never let the recorder break the client's stream
                logger.exception("recorder failed; recording stopped for this connection")
                self._stop_recording("recorder error")
        return chunk

    def on_upstream_connection_close(self) -> None:
        if self.recorder is not None:
            self.recorder.abort("connection closed before the response was complete")
            self.recorder = None
            self.framing = None

    def handle_client_data(self, raw: memoryview) -> Optional[memoryview]:
        if self.mode != "offline":
            return raw
        self.inbuf += raw
        self._drain_requests()
        return None

    # -- record -----------------------------------------------------------------
    def _stop_recording(self, why: str) -> None:
        self.recording = False
        if self.recorder is not None:
            self.recorder.abort(why)
        self.recorder = None
        self.framing = None

    def _record(self, view: memoryview) -> None:
        pos = 0
        while pos < len(view) and self.recording:
            if self.framing is None:
                if not self.pending:
                    self._stop_recording("response without a request")
                    return
                method, url = self.pending.popleft()
                self.framing = ResponseFraming(method)
                self.recorder = self.store.recorder(method, url)
            assert self.recorder is not None
            used = self.framing.feed(view[pos:])
            self.recorder.write(view[pos:pos + used])
            pos += used
            if self.framing.interim:
                self.recorder.reset()
            elif self.framing.upgrade:
                self._stop_recording("connection upgrade")
            elif self.framing.until_close:
                self._stop_recording("body length unknown (ends at connection close)")
            elif self.framing.done:
                self.recorder.commit(self.framing.status)
                self.recorder = None
                self.framing = None

    # -- offline ----------------------------------------------------------------
    def _offline_first(self, request: HttpParser) -> None:
        if request.is_https_tunnel:
            host = text_(request.host)
            self.base = ("https", host, int(request.port or 443))
            try:
                cert = ensure_leaf_cert(
                    host, self.flags.ca_cert_dir, self.flags.ca_cert_file,
                    self.flags.ca_key_file, self.flags.ca_signing_key_file,
                    openssl=getattr(self.flags, "openssl", "openssl"),
                )
            except Exception as exc:
                logger.error("cannot issue a lab certificate for %s: %s", host, exc)
                raise HttpProtocolException("no certificate for %s" % host) from exc
            self.client.queue(PROXY_TUNNEL_ESTABLISHED_RESPONSE_PKT)
            try:
                self.client.wrap(self.flags.ca_signing_key_file, cert)
            except (ssl.SSLError, OSError) as exc:
                logger.warning("TLS handshake with client %s for %s failed: %s "
                               "(does the client trust the lab CA?)", self.client_ip, host, exc)
                raise HttpProtocolException("TLS handshake failed") from exc
            return
        url = self._parser_url(request)
        method = text_(request.method).upper()
        if url is None:
            self._send(memoryview(_text_response(400, "Bad Request", "bad request target\n")))
            return
        self._serve(method, url, close=not request.is_http_1_1_keep_alive)

    def _drain_requests(self) -> None:
        while True:
            if self.skip_body:
                take = min(self.skip_body, len(self.inbuf))
                del self.inbuf[:take]
                self.skip_body -= take
                if self.skip_body:
                    return
            while self.inbuf.startswith(b"\r\n"):
                del self.inbuf[:2]
            end = self.inbuf.find(b"\r\n\r\n")
            if end < 0:
                if len(self.inbuf) > MAX_REQUEST_HEAD:
                    raise HttpRequestRejected(status_code=431, reason=b"Request Header Fields Too Large")
                return
            head = bytes(self.inbuf[:end]).decode("latin-1")
            del self.inbuf[:end + 4]
            request_line, _, fields = head.partition("\r\n")
            parts = request_line.split()
            if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
                raise HttpRequestRejected(status_code=400, reason=b"Bad Request")
            method, target = parts[0].upper(), parts[1]
            close = parts[2] == "HTTP/1.0"
            length = 0
            lowered = fields.lower()
            # only these three header fields matter here: skip the scan when none can be present
            if "connection" in lowered or "content-length" in lowered or "transfer-encoding" in lowered:
                for line in lowered.split("\r\n"):
                    name, _, value = line.partition(":")
                    name = name.strip()
                    if name == "connection":
                        tokens = {t.strip() for t in value.split(",")}
                        close = "close" in tokens or (close and "keep-alive" not in tokens)
                    elif name == "content-length" and value.strip().isdigit():
                        length = int(value.strip())
                    elif name == "transfer-encoding" and value.strip():
                        raise HttpRequestRejected(
                            status_code=501, reason=b"Not Implemented",
                            body=b"demolab http_cache (offline): chunked request bodies are not replayed\n",
                        )
            self.skip_body = length
            url = self._url(target)
            if url is None:
                self._send(memoryview(_text_response(400, "Bad Request", "bad request target\n")))
                continue
            self._serve(method, url, close)

    def _serve(self, method: str, url: str, close: bool = False) -> None:
        self._answer(method, url)
        if close:
            raise CloseAfterResponse("closing client connection after the response (Connection: close)")

    def _answer(self, method: str, url: str) -> None:
        found = self.store.lookup(method, url)
        if found.status == "hit" and found.payload is not None:
            self._send(found.payload)
            if self.hit_log is not None:
                self.hit_log.hit(method, url)
            return
        reason = "miss"
        if found.status == "corrupt":
            reason = "corrupt"
            logger.error("CORRUPT store entry for %s %s (%s): treated as a miss; record it again",
                         method, url, found.detail)
        else:
            logger.info("offline miss: %s %s", method, url)
        self.store.log_miss(method, url, reason, self.client_ip)
        body = (
            "504 Gateway Timeout from demolab http_cache (offline mode)\n\n"
            "Not in the recorded store%s:\n  %s %s\n\n"
            "No upstream connection was attempted.\n"
            "To record it: %s.\n"
            "This miss was appended to the miss log%s.\n"
        ) % (
            " (the stored copy failed its checksum)" if reason == "corrupt" else "",
            method, url, self.flags.demolab_record_hint,
            " (%s)" % self.flags.demolab_miss_log if self.flags.demolab_miss_log else "",
        )
        response = _text_response(504, "Gateway Timeout", body, {"X-Demolab-Cache": reason.upper()})
        if method == "HEAD":
            response = response[:response.index(b"\r\n\r\n") + 4]
        self._send(memoryview(response))
