"""The audience's device: run INSIDE a client network namespace (netns.py), one action per call.

    audience_client.py probe HOST PORT...             which ports answer on HOST
    audience_client.py get URL [--source IP]           one GET, bound to a source address
    audience_client.py upload URL FILE [--token T]     multipart POST /upload
    audience_client.py hold HOST PORT N --source IP    N idle connections until stdin closes
    audience_client.py upload-ui URL#upload-token=T FILE --out DIR   the presenter's phone
    audience_client.py browse URL --out DIR [--wait-video]
                                                       headless Chromium: page, graph, video

Prints one JSON line (``browse --wait-video`` prints a "ready" line first, then the result).
"""

from __future__ import annotations

import argparse
import http.client
import json
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

sys.path.insert(0, str(Path(__file__).resolve().parent))


def out(data: Any) -> None:
    print(json.dumps(data), flush=True)


def probe(host: str, ports: list[int]) -> None:
    result = {}
    for port in ports:
        try:
            with socket.create_connection((host, port), timeout=2):
                result[str(port)] = "open"
        except ConnectionRefusedError:
            result[str(port)] = "refused"
        except OSError as exc:
            result[str(port)] = type(exc).__name__
    out(result)


def get(url: str, source: str | None) -> None:
    parts = urlparse(url)
    conn = http.client.HTTPConnection(
        parts.hostname or "", parts.port or 80, timeout=15,
        source_address=(source, 0) if source else None,
    )  # fmt: skip
    try:
        conn.request("GET", parts.path or "/")
        reply = conn.getresponse()
        body = reply.read()
        out({"status": reply.status, "headers": dict(reply.getheaders()),
             "body": body.decode("utf-8", "replace")[:20000]})  # fmt: skip
    except OSError as exc:
        out({"status": 0, "error": f"{type(exc).__name__}: {exc}"})
    finally:
        conn.close()


def upload(url: str, path: str, token: str | None) -> None:
    import requests

    headers = {"X-Demolab-Upload-Token": token} if token else {}
    with open(path, "rb") as handle:
        reply = requests.post(
            url, files={"file": (Path(path).name, handle, "video/mp4")},
            data={"uploader": "phone"}, headers=headers, timeout=60,
        )  # fmt: skip
    try:
        body = reply.json()
    except ValueError:
        body = {"text": reply.text[:2000]}
    out({"status": reply.status_code, "body": body})


def hold(host: str, port: int, count: int, source: str) -> None:
    socks = []
    for _ in range(count):
        sock = socket.create_connection((host, port), timeout=10, source_address=(source, 0))
        socks.append(sock)
    out({"held": len(socks)})
    sys.stdin.read()  # until the test closes our stdin
    for sock in socks:
        sock.close()


def browse(url: str, outdir: Path, wait_video: bool) -> None:
    from playwright.sync_api import sync_playwright
    from test_browser import ARGS, CHROMIUM

    outdir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="dlst-chromium-") as profile, sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            profile, executable_path=CHROMIUM, headless=True, args=ARGS, bypass_csp=True,
            viewport={"width": 412, "height": 915},
        )  # fmt: skip
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        response = page.goto(url)
        status = response.status if response else 0
        title = page.title()
        if status != 200:
            page.screenshot(path=str(outdir / "refused.png"))
            out({"status": status, "title": title, "h1": page.text_content("h1"),
                 "text": page.text_content("body")})  # fmt: skip
            context.close()
            return
        page.wait_for_function(
            "document.getElementById('conn').textContent.startsWith('connected')", timeout=15_000
        )
        page.wait_for_function("window.demolab.samples.length >= 1", timeout=15_000)
        first = page.evaluate("window.demolab.samples[window.demolab.samples.length - 1][0]")
        page.wait_for_function(
            f"window.demolab.samples[window.demolab.samples.length - 1][0] > {first}",
            timeout=15_000,
        )
        state = page.evaluate(
            """() => ({
              samples: window.demolab.samples.length,
              cpuNow: document.getElementById('cpu-now').textContent,
              role: window.demolab.role,
              uploadHidden: document.getElementById('upload-box').hidden,
              html: document.documentElement.outerHTML,
            })"""
        )
        state.update(status=status, title=title, graph_updated=True)
        page.screenshot(path=str(outdir / "audience-phone.png"))
        if not wait_video:
            state["errors"] = errors
            out(state)
            context.close()
            return
        out({"ready": True})
        started = time.monotonic()
        page.wait_for_function(
            "window.demolab.played.length > 0 && "
            "document.getElementById('player').currentTime > 0.5",
            timeout=120_000,
        )
        state.update(
            played=page.evaluate("window.demolab.played"),
            muted=page.evaluate("document.getElementById('player').muted"),
            unmute_visible=page.is_visible("#unmute"),
            waited_s=time.monotonic() - started,
            errors=errors,
        )
        page.screenshot(path=str(outdir / "audience-phone-playing.png"))
        out(state)
        context.close()


def upload_ui(url: str, path: Path, outdir: Path) -> None:
    """The presenter's own phone: the link with the token in its fragment, then the form."""
    from playwright.sync_api import sync_playwright
    from test_browser import ARGS, CHROMIUM

    outdir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="dlst-chromium-") as profile, sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            profile, executable_path=CHROMIUM, headless=True, args=ARGS, bypass_csp=True,
            viewport={"width": 412, "height": 915},
        )  # fmt: skip
        page = context.new_page()
        sent_headers: list[str] = []
        page.on(
            "request",
            lambda req: sent_headers.append(json.dumps({"url": req.url, **req.headers})),
        )
        page.goto(url)
        page.wait_for_function(
            "document.getElementById('conn').textContent.startsWith('connected')", timeout=15_000
        )
        state = {
            "href": page.evaluate("location.href"),
            "uploadHidden": page.evaluate("document.getElementById('upload-box').hidden"),
        }
        page.set_input_files("#file", str(path))
        page.click("#upload-button")
        page.wait_for_function(
            "['ok', 'error'].includes(document.getElementById('status').className)",
            timeout=90_000,
        )
        state.update(
            status=page.text_content("#status"),
            kind=page.evaluate("document.getElementById('status').className"),
            requests=sent_headers,
        )
        page.screenshot(path=str(outdir / "presenter-phone-upload.png"))
        out(state)
        context.close()


def main() -> int:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="action", required=True)
    p = sub.add_parser("probe")
    p.add_argument("host")
    p.add_argument("ports", nargs="+", type=int)
    p = sub.add_parser("get")
    p.add_argument("url")
    p.add_argument("--source")
    p = sub.add_parser("upload")
    p.add_argument("url")
    p.add_argument("file")
    p.add_argument("--token")
    p = sub.add_parser("hold")
    p.add_argument("host")
    p.add_argument("port", type=int)
    p.add_argument("count", type=int)
    p.add_argument("--source", required=True)
    p = sub.add_parser("browse")
    p.add_argument("url")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--wait-video", action="store_true")
    p = sub.add_parser("upload-ui")
    p.add_argument("url")
    p.add_argument("file", type=Path)
    p.add_argument("--out", required=True, type=Path)
    args = parser.parse_args()
    if args.action == "probe":
        probe(args.host, args.ports)
    elif args.action == "get":
        get(args.url, args.source)
    elif args.action == "upload":
        upload(args.url, args.file, args.token)
    elif args.action == "upload-ui":
        upload_ui(args.url, args.file, args.out)
    elif args.action == "hold":
        hold(args.host, args.port, args.count, args.source)
    else:
        browse(args.url, args.out, args.wait_video)
    return 0


if __name__ == "__main__":
    sys.exit(main())
