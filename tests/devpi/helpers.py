"""Helpers for tests/devpi: tiny wheels, a loopback 'PyPI', a real devpi-server process."""

from __future__ import annotations

import base64
import hashlib
import http.server
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.request
import zipfile
from functools import partial
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TOOL = REPO / "roles" / "devpi" / "files" / "demolab_devpi.py"
TARGET = "3.11:manylinux_2_28_x86_64,manylinux_2_17_x86_64,manylinux2014_x86_64"
MIRROR_LOCK = REPO / "mirror" / "requirements.lock"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def clean_pip_env(**extra: str) -> dict[str, str]:
    """The machine's pip configuration must not leak into the tests (loopback only)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env.update(PIP_CONFIG_FILE=os.devnull, PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_INPUT="1",
               PIP_DEFAULT_TIMEOUT="10", PIP_RETRIES="0")
    env.update(extra)
    return env


def make_wheel(dest: Path, name: str, version: str, requires=(), payload: int = 0) -> Path:
    """A minimal, valid pure-Python wheel; payload adds incompressible bytes."""
    dist = name.replace("-", "_")
    path = dest / f"{dist}-{version}-py3-none-any.whl"
    info = f"{dist}-{version}.dist-info"
    files = {
        f"{dist}/__init__.py": f"VERSION = {version!r}\n".encode(),
        f"{info}/METADATA": ("Metadata-Version: 2.1\n"
                             f"Name: {name}\nVersion: {version}\n"
                             + "".join(f"Requires-Dist: {r}\n" for r in requires)).encode(),
        f"{info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: demolab-test\nRoot-Is-Purelib: true\n"
                         b"Tag: py3-none-any\n",
    }
    if payload:
        files[f"{dist}/blob.bin"] = os.urandom(payload)
    record = []
    for fname, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{fname},sha256={digest},{len(data)}")
    record.append(f"{info}/RECORD,,")
    files[f"{info}/RECORD"] = ("\n".join(record) + "\n").encode()
    dest.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        for fname, data in files.items():
            zf.writestr(fname, data)
    return path


def write_lock(path: Path, wheels: list[Path], wrong: str | None = None) -> Path:
    """name==version --hash lines; `wrong` names a project whose hash is falsified."""
    lines = []
    for wheel in wheels:
        dist, version = wheel.name.split("-")[:2]
        name = dist.replace("_", "-")
        digest = "0" * 64 if name == wrong else sha256(wheel)
        lines.append(f"{name}=={version} \\\n    --hash=sha256:{digest}")
    path.write_text("\n".join(lines) + "\n")
    return path


class Upstream:
    """A PEP 503 simple index on loopback (stands in for PyPI)."""

    def __init__(self, root: Path, wheels: list[Path], fail: dict[str, int] | None = None):
        """`fail`: file name -> how many GETs of it answer 502 Bad Gateway first (a passing
        fault on the way to the upstream)."""
        self.root = root
        self.failures = dict(fail or {})
        self.lock = threading.Lock()
        simple = root / "simple"
        for wheel in wheels:
            project = re.sub(r"[-_.]+", "-", wheel.name.split("-")[0]).lower()
            pdir = simple / project
            pdir.mkdir(parents=True, exist_ok=True)
            (pdir / wheel.name).write_bytes(wheel.read_bytes())
            links = "".join(f'<a href="{p.name}#sha256={sha256(p)}">{p.name}</a>\n'
                            for p in sorted(pdir.glob("*.whl")))
            (pdir / "index.html").write_text(f"<html><body>\n{links}</body></html>\n")
        (simple / "index.html").write_text("".join(
            f'<a href="{p.name}/">{p.name}</a>\n' for p in sorted(simple.iterdir()) if p.is_dir()))
        handler = partial(_QuietHandler, directory=str(root), upstream=self)
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/simple/"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def __init__(self, *args, upstream: Upstream, **kwargs):
        self.upstream = upstream
        super().__init__(*args, **kwargs)

    def do_GET(self):  # noqa: N802 (http.server's name)
        name = self.path.split("?")[0].rsplit("/", 1)[-1]
        with self.upstream.lock:
            left = self.upstream.failures.get(name, 0)
            if left:
                self.upstream.failures[name] = left - 1
        if left:
            self.send_error(502, "Bad Gateway")
            return
        super().do_GET()

    def log_message(self, *args):
        pass


class DevpiServer:
    """A real devpi-server with a temporary serverdir on a free loopback port."""

    def __init__(self, venv: Path, serverdir: Path, password: str,
                 template: Path | None = None):
        self.venv = venv
        self.serverdir = serverdir
        self.password = password
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None
        self.log = serverdir.parent / f"{serverdir.name}.log"
        if template is not None and not serverdir.exists():
            shutil.copytree(template, serverdir, symlinks=True)  # devpi-init costs ~10 s
        if not (serverdir / ".nodeinfo").exists():
            subprocess.run([str(venv / "bin" / "devpi-init"), "--serverdir", str(serverdir),
                            "--root-passwd", password], check=True, capture_output=True)

    def start(self, offline: bool = False) -> DevpiServer:
        cmd = [str(self.venv / "bin" / "devpi-server"), "--serverdir", str(self.serverdir),
               "--host", "127.0.0.1", "--port", str(self.port)]
        if offline:
            cmd.append("--offline-mode")
        self.proc = subprocess.Popen(cmd, stdout=self.log.open("ab"), stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"devpi-server exited:\n{self.log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(self.url + "/+api", timeout=2):
                    return self
            except OSError:
                time.sleep(0.2)
        raise RuntimeError(f"devpi-server did not answer:\n{self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def restart(self, offline: bool = False) -> DevpiServer:
        self.stop()
        return self.start(offline=offline)

    def index_files(self, index: str = "lab/offline") -> dict[str, str]:
        def get(path):
            req = urllib.request.Request(self.url + path, headers={"Accept": "application/json"})
            with urllib.request.urlopen(req, timeout=10) as resp:
                return json.load(resp)["result"]
        found = {}
        for project in get(f"/{index}").get("projects", []):
            for data in get(f"/{index}/{project}").values():
                for link in data.get("+links", []):
                    if link.get("rel") == "releasefile":
                        found[link["href"].rsplit("/", 1)[-1]] = link["hash_spec"].partition("=")[2]
        return found

    def tool(self, *args: str, env: dict | None = None, clientdir: Path | None = None,
             popen: bool = False, **kwargs):
        """Run roles/devpi/files/demolab_devpi.py against this server with the venv's Python."""
        cmd = [str(self.venv / "bin" / "python"), str(TOOL), "--url", self.url,
               "--clientdir", str(clientdir or self.serverdir.parent / "client"), *args]
        run_env = env or clean_pip_env()
        run_env["DEVPI_ROOT_PASSWORD"] = self.password
        # The index (no --index given) comes from the lab's lab.json, as on a lab host.
        lab_json = self.serverdir.parent / "lab.json"
        lab_json.write_text(json.dumps({"devpi": {"url": self.url, "index": "lab/offline"}}))
        run_env["DEMOLAB_LAB_JSON"] = str(lab_json)
        if popen:
            return subprocess.Popen(cmd, env=run_env, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True, start_new_session=True)
        return subprocess.run(cmd, env=run_env, capture_output=True, text=True, check=False,
                              timeout=kwargs.get("timeout", 300))


def result(proc) -> dict:
    lines = (proc.stdout or "").strip().splitlines()
    assert lines, f"no output; stderr:\n{proc.stderr}"
    return json.loads(lines[-1])
