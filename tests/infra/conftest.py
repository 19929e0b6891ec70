"""testinfra suite: run against any inventory.

    pytest tests/infra --hosts='ansible://lab' --ansible-inventory=inventory.ini

Passwords come from the controller's secrets directory (DEMOLAB_SECRETS_DIR, default
~/.config/demolab/secrets), the same files the roles generated.
"""

from __future__ import annotations

import os
import shlex
import time
from pathlib import Path

import pytest

SECRETS = Path(os.environ.get("DEMOLAB_SECRETS_DIR", Path.home() / ".config/demolab/secrets"))


def inventory_name(host) -> str:
    return host.ansible.get_variables()["inventory_hostname"]


def mirror_host(host) -> str:
    """The lab host whose mirrors this one uses (lab_mirror_host), "" when it runs its own."""
    return str(host.ansible.get_variables().get("lab_mirror_host") or "")


def mirror_address(host) -> str:
    """Where this host reaches the lab's mirrors: lab_mirror_host, else its own
    lab_mirror_address (loopback unless the host serves other lab hosts)."""
    variables = host.ansible.get_variables()
    return str(variables.get("lab_mirror_host") or variables.get("lab_mirror_address") or "127.0.0.1")


@pytest.fixture
def secret(host):
    def read(name: str) -> str:
        path = SECRETS / inventory_name(host) / name
        if not path.exists():
            pytest.fail(f"secret {path} missing: provision with the same lab_secrets_dir first")
        return path.read_text().split()[0]
    return read


def service_manager(host) -> str:
    return "systemd" if host.file("/proc/1/comm").content_string.strip() == "systemd" else "supervisor"


def service_logs(host, name: str) -> str:
    if service_manager(host) == "systemd":
        return host.run(f"journalctl --no-pager -n 50 -u {shlex.quote(name)}").stdout
    return host.run(f"tail -n 50 /var/log/demolab/{shlex.quote(name)}.log").stdout


def restart_service(host, name: str, port: int, timeout: float = 60) -> None:
    if service_manager(host) == "systemd":
        cmd = f"systemctl restart {shlex.quote(name)}"
    else:
        cmd = f"supervisorctl restart {shlex.quote(name)}"
    host.run_test(cmd)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if host.socket(f"tcp://127.0.0.1:{port}").is_listening:
            return
        time.sleep(0.5)
    pytest.fail(f"{name} not listening on {port} {timeout} s after a restart:\n{service_logs(host, name)}")


@pytest.fixture
def lab_service(host):
    """Helpers bound to the host: is_running(name), restart(name, port), logs(name)."""

    class Svc:
        manager = service_manager(host)

        @staticmethod
        def is_running(name: str) -> bool:
            if Svc.manager == "systemd":
                s = host.service(name)
                return s.is_running and s.is_enabled
            out = host.run(f"supervisorctl status {shlex.quote(name)}").stdout
            return " RUNNING " in f" {out} "

        @staticmethod
        def restart(name: str, port: int) -> None:
            restart_service(host, name, port)

        @staticmethod
        def logs(name: str) -> str:
            return service_logs(host, name)

    return Svc


HTTP_GET = r"""
import os, sys, urllib.error, urllib.request
url, proxy = sys.argv[1], sys.argv[2]
for var in [v for v in os.environ if v.lower().endswith("_proxy")]:
    del os.environ[var]  # urllib honours no_proxy even for an explicit proxy: only ours counts
opener = urllib.request.build_opener(urllib.request.ProxyHandler({"http": proxy, "https": proxy} if proxy else {}))
try:
    resp = opener.open(url, timeout=20)
    code, body = resp.status, resp.read()
except urllib.error.HTTPError as e:
    code, body = e.code, e.read()
sys.stdout.write(str(code) + "\n")
sys.stdout.flush()
sys.stdout.buffer.write(body)
"""


def http_get(host, url: str, proxy: str = "") -> tuple[int, str]:
    """GET from the host itself with its own python3 (a fresh host has no curl)."""
    out = host.run(f"python3 -c {shlex.quote(HTTP_GET)} {shlex.quote(url)} {shlex.quote(proxy)}")
    assert out.rc == 0, f"GET {url} failed on the host: {out.stderr}"
    code, _, body = out.stdout.partition("\n")
    return int(code), body
