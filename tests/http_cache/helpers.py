"""Test helpers: PKI via openssl, a counting origin server, the proxy under test, clients."""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import socketserver
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Optional

REPO = Path(__file__).resolve().parents[2]
FILES = REPO / "roles" / "http_cache" / "files"
AUDIT = Path(__file__).resolve().parent / "audit"

SMALL = random.Random(1).randbytes(10 * 1024)
BIG = random.Random(2).randbytes(20 * 1024 * 1024)


def openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def make_ca(directory: Path, name: str) -> tuple[Path, Path]:
    key, cert = directory / f"{name}.key", directory / f"{name}.pem"
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
            "-days", "30", "-subj", f"/CN={name}",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    return key, cert


def make_server_cert(directory: Path, ca_key: Path, ca_cert: Path) -> tuple[Path, Path]:
    key, csr, cert = directory / "srv.key", directory / "srv.csr", directory / "srv.pem"
    ext = directory / "srv.ext"
    ext.write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n")
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(csr),
            "-subj", "/CN=localhost")
    openssl("x509", "-req", "-in", str(csr), "-CA", str(ca_cert), "-CAkey", str(ca_key),
            "-set_serial", "1001", "-days", "30", "-extfile", str(ext), "-out", str(cert))
    return key, cert


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


# ----------------------------------------------------------------------------- origin
class Origin(socketserver.ThreadingTCPServer):
    """HTTP/1.1 keep-alive origin that counts connections and requests."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, tls: Optional[ssl.SSLContext] = None) -> None:
        self.tls = tls
        self.connections = 0
        self.requests: list[str] = []
        self.lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), _OriginHandler)
        self.port = self.server_address[1]
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.shutdown()
        self.server_close()


class _OriginHandler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        server: Origin = self.server  # type: ignore[assignment]
        with server.lock:
            server.connections += 1
        sock = self.request
        if server.tls is not None:
            try:
                sock = server.tls.wrap_socket(sock, server_side=True)
            except (ssl.SSLError, OSError):
                return
        sock.settimeout(60)
        buf = b""
        try:
            while True:
                while b"\r\n\r\n" not in buf:
                    data = sock.recv(65536)
                    if not data:
                        return
                    buf += data
                head, buf = buf.split(b"\r\n\r\n", 1)
                line = head.split(b"\r\n")[0].decode()
                method, target, _ = line.split(" ", 2)
                path = "/" + target.split("://", 1)[-1].split("/", 1)[-1] if "://" in target else target
                with server.lock:
                    server.requests.append(path)
                close = b"connection: close" in head.lower()
                if not self.respond(sock, method, path):
                    return
                if close:
                    return
        except OSError:
            return
        finally:
            try:
                sock.close()
            except OSError:
                pass

    def respond(self, sock: socket.socket, method: str, path: str) -> bool:
        def send(status: str, body: bytes, extra: str = "") -> None:
            head = (f"HTTP/1.1 {status}\r\nContent-Type: application/octet-stream\r\n"
                    f"Content-Length: {len(body)}\r\nX-Origin: demolab-test\r\n{extra}\r\n")
            sock.sendall(head.encode() + (b"" if method == "HEAD" else body))

        if path.startswith("/small"):
            send("200 OK", SMALL + path.encode())
        elif path == "/big":
            send("200 OK", BIG)
        elif path == "/chunked":
            sock.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                         b"5\r\nhello\r\n7\r\n, world\r\n0\r\nX-Trailer: yes\r\n\r\n")
        elif path == "/slow":
            # 20 MB announced, 1 MB sent, then a long stall: the proxy is killed meanwhile
            sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(BIG) + BIG[:1 << 20])
            time.sleep(30)
            return False
        elif path == "/drop":
            # 2 MB announced, 1 MB sent, then the connection drops
            sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % (2 << 20) + BIG[:1 << 20])
            return False
        else:
            send("404 Not Found", b"no such thing: " + path.encode())
        return True


def tls_server_context(key: Path, cert: Path) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(cert), str(key))
    return ctx


# ----------------------------------------------------------------------------- proxy
class ProxyProcess:
    def __init__(self, workdir: Path, mode: str, store: Path, pki: dict, *,
                 allow: Optional[list[str]] = None, name: str = "proxy",
                 listen: str = "127.0.0.1", acceptors: int = 1, hit_log: bool = True) -> None:
        self.port = free_port(listen)
        self.listen = listen
        self.store = store
        self.miss_log = workdir / "misses.jsonl"
        self.hit_log = workdir / "hits.jsonl"
        self.log = workdir / f"{name}-{mode}-{self.port}.log"
        self.audit_log = workdir / f"{name}-{mode}-{self.port}.audit.jsonl"
        config = {
            "listen_address": listen, "port": self.port, "mode": mode,
            "store_dir": str(store), "miss_log": str(self.miss_log),
            "hit_log": str(self.hit_log) if hit_log else "",
            "allow": allow or ["127.0.0.0/8", "::1/128"],
            "ca_cert": str(pki["lab_cert"]), "ca_key": str(pki["lab_key"]),
            "signing_key": str(pki["signing_key"]), "cert_dir": str(workdir / "certs"),
            "upstream_ca_file": str(pki["upstream_ca"]), "log_level": "INFO",
            "num_workers": 2, "num_acceptors": acceptors, "timeout": 30,
        }
        self.config = workdir / f"{name}-{mode}-{self.port}.json"
        self.config.write_text(json.dumps(config))
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(FILES), str(AUDIT)])
        env["DEMOLAB_AUDIT_LOG"] = str(self.audit_log)
        self.logfh = open(self.log, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "demolab_cache", "serve", "--config", str(self.config)],
            stdout=self.logfh, stderr=subprocess.STDOUT, env=env, start_new_session=True,
        )
        deadline = time.time() + 20
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("proxy exited:\n" + self.log.read_text())
            try:
                socket.create_connection((listen, self.port), timeout=0.5).close()
                return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("proxy did not listen:\n" + self.log.read_text())

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def audit(self) -> list[dict]:
        if not self.audit_log.exists():
            return []
        return [json.loads(x) for x in self.audit_log.read_text().splitlines() if x.strip()]

    def kill(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(10)
        self.logfh.close()

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(10)
        self.logfh.close()


# ----------------------------------------------------------------------------- clients
def _read_all(sock: socket.socket) -> bytes:
    chunks = []
    while True:
        try:
            data = sock.recv(1 << 20)
        except (ssl.SSLEOFError, ConnectionResetError):
            break
        if not data:
            break
        chunks.append(data)
    return b"".join(chunks)


def http_get(proxy_port: int, url: str, method: str = "GET", source: Optional[str] = None,
             timeout: float = 60) -> bytes:
    """Raw response bytes for url through the proxy (Connection: close)."""
    hostport = url.split("://", 1)[1].split("/", 1)[0]
    sock = socket.create_connection(("127.0.0.1", proxy_port), timeout=timeout,
                                    source_address=(source, 0) if source else None)
    with sock:
        sock.sendall(f"{method} {url} HTTP/1.1\r\nHost: {hostport}\r\nConnection: close\r\n\r\n".encode())
        return _read_all(sock)


def https_get(proxy_port: int, host: str, port: int, path: str, cafile: Path,
              method: str = "GET", timeout: float = 60) -> bytes:
    """Raw response bytes of an HTTPS request tunnelled through the proxy."""
    sock = socket.create_connection(("127.0.0.1", proxy_port), timeout=timeout)
    sock.sendall(f"CONNECT {host}:{port} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode())
    head = b""
    while b"\r\n\r\n" not in head:
        data = sock.recv(1)
        if not data:
            raise ConnectionError("proxy closed during CONNECT: %r" % head)
        head += data
    if b" 200 " not in head.split(b"\r\n")[0]:
        sock.close()
        return head
    ctx = ssl.create_default_context(cafile=str(cafile))
    tls = ctx.wrap_socket(sock, server_hostname=host)
    with tls:
        tls.sendall(f"{method} {path} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n".encode())
        return _read_all(tls)


def split_response(raw: bytes) -> tuple[int, bytes, bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), head, body
