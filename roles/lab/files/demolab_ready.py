#!/usr/bin/python3
"""demolab-ready: the night-before readiness report, one screen, green or red per service.

Every lab service registers itself in the lab's ready.d/NAME.json (ready_dir of lab.json; the
lab role's "service" entry point writes it): its description, the address it must answer on and,
where it has one, a health URL.  For each, this checks that the service manager runs it,
that the port accepts a connection and that the health URL answers 200 with nothing
reported as failing.  A red line says what is wrong and what to do next.

    demolab-ready            the report; exit 0 when everything is green, 1 otherwise
    demolab-ready --json     the same as JSON (for scripts, tests and the demo app's /lab page)
    demolab-ready --ports-only
                             skip the service manager: a service is ready when its port and
                             health URL answer (for an unprivileged user, such as the demo
                             app's, whom supervisord's root-only socket does not answer)
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

# The lab's settings and endpoints (the lab role writes it; DEMOLAB_LAB_JSON names another, for tests).
LAB_JSON = Path(os.environ.get("DEMOLAB_LAB_JSON") or "/etc/demolab/lab.json")
SERVICE_TOOL = "/usr/local/sbin/demolab-service"


def lab_settings() -> dict:
    try:
        return json.loads(LAB_JSON.read_text())
    except (OSError, ValueError) as exc:
        sys.exit(f"demolab-ready: cannot read the lab's settings {LAB_JSON} ({exc}): run `make lab` first")


def service_running(name: str) -> tuple[bool, str]:
    try:
        out = subprocess.run([SERVICE_TOOL, "status", name], capture_output=True, text=True,
                             timeout=15)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, f"cannot ask the service manager ({exc})"
    words = out.stdout.split()
    state = words[1] if len(words) > 1 else (out.stderr.strip() or "unknown")
    return state in ("running", "active"), state  # supervisord / systemd words


def port_answers(host: str, port: int, timeout: float = 2.0) -> tuple[bool, str]:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True, f"{host}:{port} answers"
    except OSError as exc:
        return False, f"nothing answers on {host}:{port} ({exc.strerror or exc})"


def failing_parts(doc: object, path: str = "") -> list[str]:
    """Names of the parts a health document reports as failing ({"ok": false, ...})."""
    bad: list[str] = []
    if isinstance(doc, dict):
        if doc.get("ok") is False:
            bad.append(path or "service")
        for key, value in doc.items():
            bad += failing_parts(value, f"{path}.{key}" if path else key)
    return bad


def health(url: str, timeout: float = 5.0) -> tuple[bool, str]:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never via a proxy
    status = 200
    try:
        with opener.open(url, timeout=timeout) as resp:
            body = resp.read(65536)
    except urllib.error.HTTPError as exc:  # an unhealthy service often says why in the body
        status, body = exc.code, exc.read(65536)
    except (OSError, ValueError) as exc:
        return False, f"{url}: {getattr(exc, 'reason', exc)}"
    try:
        bad = failing_parts(json.loads(body))
    except ValueError:
        bad = []
    if bad:
        return False, f"{url} reports failing: {', '.join(bad)}"
    if status != 200:
        return False, f"{url} answered {status}"
    return True, "healthy"


def check(entry: dict, ask_manager: bool = True) -> dict:
    name = entry["name"]
    result = {"name": name, "description": entry.get("description", ""), "ok": True, "detail": []}

    def step(ok: bool, detail: str) -> bool:
        result["detail"].append(detail)
        if not ok:
            result["ok"] = False
        return ok

    where = entry.get("host") or "127.0.0.1"
    if entry.get("remote"):  # run by the mirror host for this one: ask there
        hint = f"it runs on the mirror host {where}: run demolab-ready there"
        step(True, f"on the mirror host {where}")
    elif not ask_manager:
        hint = f"demolab-service logs {name}; demolab-service restart {name}"
    else:
        hint = f"demolab-service logs {name}"
        if not step(*service_running(name)):
            result["hint"] = f"demolab-service logs {name}; demolab-service restart {name}"
            return result
    if entry.get("port"):
        if not step(*port_answers(where, int(entry["port"]))):
            result["hint"] = hint
            return result
    if entry.get("url"):
        if not step(*health(entry["url"])):
            result["hint"] = hint
    return result


def load_entries(ready_dir: Path) -> list[dict]:
    entries = []
    for path in sorted(ready_dir.glob("*.json")):
        try:
            entries.append(json.loads(path.read_text()))
        except (OSError, ValueError) as exc:
            entries.append({"name": path.stem, "broken": f"{path}: {exc}"})
    return entries


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", action="store_true", help="print JSON instead of the report")
    ap.add_argument("--ports-only", action="store_true",
                    help="do not ask the service manager; check ports and health URLs only")
    args = ap.parse_args()

    lab = lab_settings()
    mode, ready_dir = lab.get("mode", "unknown"), Path(lab["ready_dir"])
    entries = load_entries(ready_dir)
    results = []
    for entry in entries:
        if "broken" in entry:
            results.append({"name": entry["name"], "description": "", "ok": False,
                            "detail": [f"unreadable registration {entry['broken']}"],
                            "hint": "rerun the playbook (make lab)"})
        else:
            results.append(check(entry, ask_manager=not args.ports_only))
    ready = bool(results) and all(r["ok"] for r in results)

    if args.json:
        json.dump({"host": socket.gethostname(), "mode": mode, "ready": ready,
                   "services": results}, sys.stdout, indent=2)
        print()
        return 0 if ready else 1

    color = sys.stdout.isatty() and "NO_COLOR" not in os.environ
    green, red, dim, off = ("\033[32m", "\033[31m", "\033[2m", "\033[0m") if color else ("",) * 4
    print(f"demolab readiness on {socket.gethostname()} (mode: {mode}, "
          f"{time.strftime('%Y-%m-%d %H:%M')})")
    if not results:
        print(f"  {red}no lab services are registered in {ready_dir}: run `make lab` first{off}")
        return 1
    width = max(len(r["name"]) for r in results)
    for r in results:
        mark = f"{green}OK  {off}" if r["ok"] else f"{red}FAIL{off}"
        print(f"  {mark} {r['name']:<{width}}  {', '.join(r['detail'])}")
        if not r["ok"]:
            print(f"       {dim}{r['description']}: try `{r.get('hint', 'make lab')}`{off}")
    good = sum(r["ok"] for r in results)
    summary = f"{good}/{len(results)} services ready"
    print(f"{green if ready else red}{summary}{off}")
    return 0 if ready else 1


if __name__ == "__main__":
    sys.exit(main())
