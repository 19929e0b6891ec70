"""A client host of its own: a network namespace joined to this one by a veth pair.

The app listens on the veth's host-side address (the "lab network" address of the audience
tests); everything in the namespace reaches the host only through that link.  Names start
with ``dlst-`` and the subnet is a free private /24 in 10.78.0.0/16 (never the harness's
bridge).  Needs root (the tests and the benchmark run as root on the lab machine).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

CLIENT = Path(__file__).resolve().parent / "audience_client.py"


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check, timeout=30)


def _free_subnet() -> int:
    used = _ip("-o", "-4", "addr", "show").stdout
    for n in range(200, 255):
        if f" 10.78.{n}." not in used:
            return n
    raise RuntimeError("no free 10.78.N.0/24 left for a test namespace")


class ClientNetns:
    """``dlst-<tag>``: host side 10.78.N.1, client addresses 10.78.N.2 .. 10.78.N.(1+count)."""

    def __init__(self, tag: str | None = None, addresses: int = 4) -> None:
        self.tag = tag or str(os.getpid() % 100000)
        self.name = f"dlst-{self.tag}"
        self.host_if = f"dlsth{self.tag}"[:15]
        self.client_if = f"dlstc{self.tag}"[:15]
        self.count = addresses
        self.subnet = 0
        self.up = False

    @property
    def host_ip(self) -> str:
        return f"10.78.{self.subnet}.1"

    @property
    def client_ips(self) -> list[str]:
        return [f"10.78.{self.subnet}.{i}" for i in range(2, 2 + self.count)]

    def __enter__(self) -> ClientNetns:
        self.create()
        return self

    def __exit__(self, *exc: object) -> None:
        self.destroy()

    def create(self) -> None:
        if os.geteuid() != 0:
            raise PermissionError("network namespaces need root")
        self.destroy()  # leftovers of an interrupted run with the same tag
        self.subnet = _free_subnet()
        self.up = True
        _ip("netns", "add", self.name)
        _ip("link", "add", self.host_if, "type", "veth", "peer", "name", self.client_if)
        _ip("link", "set", self.client_if, "netns", self.name)
        _ip("addr", "add", f"{self.host_ip}/24", "dev", self.host_if)
        _ip("link", "set", self.host_if, "up")
        for address in self.client_ips:
            self.ip("addr", "add", f"{address}/24", "dev", self.client_if)
        self.ip("link", "set", self.client_if, "up")
        self.ip("link", "set", "lo", "up")

    def ip(self, *args: str) -> None:
        _ip("netns", "exec", self.name, "ip", *args)

    def destroy(self) -> None:
        _ip("netns", "del", self.name, check=False)  # takes the veth pair with it
        _ip("link", "del", self.host_if, check=False)
        self.up = False

    def command(self, *args: str) -> list[str]:
        """argv running the client helper (this venv's Python) inside the namespace."""
        return ["ip", "netns", "exec", self.name, sys.executable, str(CLIENT), *args]

    def run(self, *args: str, timeout: float = 120) -> Any:
        import json

        done = subprocess.run(self.command(*args), capture_output=True, text=True, timeout=timeout)
        if done.returncode != 0:
            raise RuntimeError(
                f"client {args[0]} failed ({done.returncode}): {done.stderr[-2000:]}"
            )
        return json.loads(done.stdout.strip().splitlines()[-1])

    def popen(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            self.command(*args), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
