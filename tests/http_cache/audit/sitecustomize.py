"""Test-only: log every DNS lookup and outgoing connect of this Python process.

Put on PYTHONPATH with DEMOLAB_AUDIT_LOG set; the proxy under test (and its
forked workers) then append one JSON line per socket.getaddrinfo /
socket.gethostbyname / socket.connect event.
"""

import json
import os
import sys

_LOG = os.environ.get("DEMOLAB_AUDIT_LOG")
_EVENTS = {"socket.getaddrinfo", "socket.gethostbyname", "socket.gethostbyname_ex",
           "socket.gethostbyaddr", "socket.connect"}


def _hook(event, args):
    if event not in _EVENTS:
        return
    try:
        target = args[1] if event == "socket.connect" else args[0]
        line = json.dumps({"pid": os.getpid(), "event": event, "target": repr(target)}) + "\n"
        fd = os.open(_LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)
    except Exception:  # noqa: BLE001 - an audit hook must never raise
        pass


if _LOG:
    sys.addaudithook(_hook)
