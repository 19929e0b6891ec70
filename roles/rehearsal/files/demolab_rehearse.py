#!/usr/bin/python3
"""demolab-rehearse: the airplane rehearsal. Runs the talk's steps against the lab's own
caches while the lab is offline and prints a miss report: everything that was not in a cache,
so the presenter records it at home, before the talk.

Steps: pip install of the demo lock (and any --pip extra) from the lab index; the Debian
packages (--apt) fetched from the lab mirror; pages and downloads (--url) through the
replaying proxy; the demo app's upload -> WebM -> playback. Nothing is installed on the host:
pip goes into a throw-away venv, apt downloads into a throw-away directory. The talk's needs
(--talk, default the installed talk) join the pip, apt and URL lists; then every step of the
talk runs in the presenter's shell (`demolab-talk rehearse`: recorded with asciinema, its
expect checked, its snippets checked, each miss named under the step that needs it).

Exit status: 0 nothing missed, 1 something missed or failed, 2 cannot rehearse (lab online).
A JSON report is written too (--report).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

# The lab's settings and endpoints (the lab role writes it; DEMOLAB_LAB_JSON names another, for tests).
LAB_JSON = Path(os.environ.get("DEMOLAB_LAB_JSON") or "/etc/demolab/lab.json")
TALK_CLI = "/usr/local/bin/demolab-talk"
WEBM_MAGIC = b"\x1a\x45\xdf\xa3"
COLOR = sys.stdout.isatty() and not os.environ.get("NO_COLOR")


def paint(text: str, code: str) -> str:
    return f"\033[{code}m{text}\033[0m" if COLOR else text


def lab_settings() -> dict:
    """lab.json; {} when the lab is not provisioned (main() then says so)."""
    try:
        return json.loads(LAB_JSON.read_text())
    except (OSError, ValueError):
        return {}


class Report:
    def __init__(self) -> None:
        self.steps: list[dict] = []
        self.misses: list[dict] = []

    def step(self, name: str, ok: bool, detail: str, seconds: float) -> None:
        self.steps.append({"step": name, "ok": ok, "detail": detail, "seconds": round(seconds, 2)})
        mark = paint("PASS", "32") if ok else paint("FAIL", "31")
        print(f"  {mark}  {name:<6} {detail} ({seconds:.1f} s)", flush=True)

    def miss(self, kind: str, what: str, fix: str) -> None:
        if not any(m["kind"] == kind and m["what"] == what for m in self.misses):
            self.misses.append({"kind": kind, "what": what, "fix": fix})


def run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, check=False, **kw)


PIP_FIX = "add it to mirror/requirements.in, run mirror/lock.py, then `make online`"
APT_FIX = "add it to mirror/apt-packages.txt, then `make online`"
URL_FIX = "`make online`, open it once through the proxy (or list it in mirror/urls.txt), then rehearse again"


def rehearse_pip(rep: Report, lock: Path, extras: list[str], work: Path) -> None:
    t = time.monotonic()
    venv = work / "venv"
    made = run(["/usr/bin/python3", "-m", "venv", str(venv)])
    if made.returncode != 0:
        rep.step("pip", False, f"cannot make a venv: {made.stderr.strip()[-200:]}", time.monotonic() - t)
        return
    pip = [str(venv / "bin/python"), "-m", "pip", "--disable-pip-version-check", "--no-input"]
    problems = []
    count = 0
    if lock.is_file():
        count = sum(1 for line in lock.read_text().splitlines() if "==" in line and not line.startswith("#"))
        done = run([*pip, "install", "-q", "--require-hashes", "--only-binary=:all:", "-r", str(lock)])
        if done.returncode != 0:
            # Which ones: each line of the lock on its own (pip stops at the first).
            for line in lock.read_text().splitlines():
                req = line.split("\\")[0].split(";")[0].strip()
                if not req or req.startswith(("#", "-")):
                    continue
                one = run([*pip, "download", "-q", "--no-deps", "--only-binary=:all:", "-d",
                           str(work / "dl"), req])
                if one.returncode != 0:
                    rep.miss("pip", req, PIP_FIX)
                    problems.append(req)
            if not problems:
                problems.append("the lock did not install: " + done.stderr.strip()[-300:])
    else:
        problems.append(f"no lock at {lock} (is the devpi role applied?)")
    for req in extras:
        count += 1
        one = run([*pip, "download", "-q", "--no-deps", "-d", str(work / "dl"), req])
        if one.returncode != 0:
            rep.miss("pip", req, PIP_FIX)
            problems.append(req)
    detail = (f"{count} packages install from the lab index" if not problems
              else f"missing from the lab index: {', '.join(problems)}")
    rep.step("pip", not problems, detail, time.monotonic() - t)


def rehearse_apt(rep: Report, packages: list[str], work: Path) -> None:
    t = time.monotonic()
    found, missing = [], []
    for pkg in packages:
        shown = run(["apt-cache", "show", "--no-all-versions", pkg])
        (found if shown.returncode == 0 and shown.stdout.strip() else missing).append(pkg)
    for pkg in missing:
        rep.miss("apt", pkg, APT_FIX)
    failed = []
    if found:
        archives = work / "apt"
        (archives / "partial").mkdir(parents=True)
        got = run(["apt-get", "install", "--download-only", "--reinstall", "-y", "-q",
                   "-o", f"Dir::Cache::archives={archives}", "-o", "Debug::NoLocking=1", *found],
                  env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
        if got.returncode != 0:
            output = (got.stdout + got.stderr).strip()
            failed = re.findall(r"Failed to fetch (\S+)", output)
            for url in failed:
                rep.miss("apt", url, APT_FIX)
            if not failed:
                failed = [f"apt-get failed: {output.splitlines()[-1] if output else got.returncode}"]
    ok = not missing and not failed
    detail = (f"{len(found)} packages (and what they need) available from the lab mirror" if ok
              else "not in the lab mirror: " + ", ".join(missing + failed))
    rep.step("apt", ok, detail, time.monotonic() - t)


def opener(proxy: str) -> urllib.request.OpenerDirector:
    for name in ("no_proxy", "NO_PROXY"):
        os.environ.pop(name, None)  # urllib would bypass the proxy for these
    context = ssl.create_default_context(cafile="/etc/ssl/certs/ca-certificates.crt")
    return urllib.request.build_opener(
        urllib.request.ProxyHandler({"http": proxy, "https": proxy}),
        urllib.request.HTTPSHandler(context=context))


def rehearse_urls(rep: Report, urls: list[str], proxy: str) -> None:
    t = time.monotonic()
    web = opener(proxy)
    good, bad = 0, []
    for url in urls:
        started = time.monotonic()
        try:
            with web.open(url, timeout=30) as resp:
                size = 0
                while chunk := resp.read(1 << 20):
                    size += len(chunk)
            good += 1
            secs = time.monotonic() - started
            if size >= 8 << 20:
                print(f"        {url}: {size / 2**20:.0f} MiB at {size / 2**20 / max(secs, 1e-3):.0f} MiB/s")
        except urllib.error.HTTPError as exc:
            bad.append(url)
            rep.miss("url", url, URL_FIX if exc.code == 504 else f"HTTP {exc.code} from the proxy")
        except (urllib.error.URLError, OSError) as exc:
            bad.append(url)
            rep.miss("url", url, f"the proxy did not answer ({exc}): is demolab-http-cache running?")
    detail = (f"{good} pages and downloads replayed" if not bad
              else f"{good} replayed, {len(bad)} not recorded")
    rep.step("pages", not bad, detail, time.monotonic() - t)


def multipart(fields: dict[str, str], name: str, filename: str, data: bytes) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    parts = []
    for key, value in fields.items():
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{key}"\r\n\r\n{value}\r\n'.encode())
    parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
                 "Content-Type: application/octet-stream\r\n\r\n".encode() + data + b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


def rehearse_demo(rep: Report, base: str, ffmpeg: str, work: Path) -> None:
    t = time.monotonic()
    direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    clip = work / "rehearsal.mkv"
    made = run([ffmpeg, "-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i",
                "testsrc=size=320x240:rate=25:duration=2", "-f", "lavfi", "-i",
                "sine=frequency=440:duration=2", "-c:v", "libvpx", "-b:v", "300k", "-c:a", "libvorbis",
                "-shortest", str(clip)])
    if made.returncode != 0:
        rep.step("demo", False, f"{ffmpeg} could not make a test clip: {made.stderr.strip()[-200:]}",
                 time.monotonic() - t)
        return
    name = f"rehearsal-{uuid.uuid4().hex[:8]}.mkv"
    body, ctype = multipart({"uploader": "rehearsal"}, "file", name, clip.read_bytes())
    try:
        req = urllib.request.Request(f"{base}/upload", data=body, headers={"Content-Type": ctype})
        with direct.open(req, timeout=30) as resp:
            if resp.status != 202:
                raise RuntimeError(f"upload answered {resp.status}")
        url = ""
        deadline = time.monotonic() + 90
        while not url and time.monotonic() < deadline:
            with direct.open(f"{base}/videos", timeout=10) as resp:
                for item in json.load(resp).get("videos", []):
                    if item.get("filename") == name:
                        url = item["url"]
            if not url:
                time.sleep(0.5)
        if not url:
            raise RuntimeError("the video did not appear in /videos within 90 s (see the app's log)")
        req = urllib.request.Request(base + url, headers={"Range": "bytes=0-1023"})
        with direct.open(req, timeout=10) as resp:
            head = resp.read()
            if resp.status != 206 or not head.startswith(WEBM_MAGIC):
                raise RuntimeError(f"playback answered {resp.status} with {head[:8]!r}")
    except (OSError, RuntimeError, ValueError) as exc:
        rep.step("demo", False, f"upload -> WebM -> playback failed: {exc}", time.monotonic() - t)
        return
    rep.step("demo", True, f"upload -> WebM in GridFS -> playback ({url})", time.monotonic() - t)


def proxy_misses(rep: Report, log: Path, offset: int) -> None:
    """Requests of anyone (a browser, a script) the proxy could not answer during the rehearsal."""
    try:
        with log.open(encoding="utf-8") as fh:
            fh.seek(offset)
            lines = fh.read().splitlines()
    except OSError:
        return
    for line in lines:
        try:
            item = json.loads(line)
        except ValueError:
            continue
        url = re.sub(r"^(https://[^/:]+):443(/|$)|^(http://[^/:]+):80(/|$)", r"\1\3\2\4", item.get("url", "?"))
        rep.miss("url", url, URL_FIX)


def talk_needs(talk: Path) -> dict[str, list[str]]:
    """The talk's pip, apt and URL needs (`demolab-talk needs`); SystemExit when it is invalid."""
    got = run([TALK_CLI, "needs", str(talk)])
    if got.returncode != 0:
        raise SystemExit(f"demolab-rehearse: {got.stderr.strip() or got.stdout.strip()}")
    return json.loads(got.stdout)


def rehearse_talk(rep: Report, talk: Path, args: argparse.Namespace) -> dict | None:
    """Every step of the talk (demolab-talk rehearse), told what the checks above missed."""
    t = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="demolab-rehearse-talk-") as tmp:
        misses, out = Path(tmp) / "misses.json", Path(tmp) / "talk.json"
        misses.write_text(json.dumps(rep.misses))
        sys.stdout.flush()
        proc = subprocess.run([TALK_CLI, "rehearse", "--talk", str(talk), "--proxy", args.proxy,
                               "--demo", args.demo, "--miss-log", str(args.miss_log), "--misses", str(misses),
                               "--out", str(out)], check=False)
        try:
            report = json.loads(out.read_text())
        except (OSError, ValueError):
            rep.step("talk", False, f"demolab-talk rehearse ended with {proc.returncode} and no report",
                     time.monotonic() - t)
            return None
    for step in report["steps"]:
        for m in step["misses"]:
            rep.miss(m["kind"], m["what"], m["fix"])
    ok = proc.returncode == 0
    failed = [s["id"] for s in report["steps"] if s["status"] == "fail"]
    detail = f"{report['passed']} of {len(report['steps'])} steps passed"
    if failed:
        detail += f"; failed: {', '.join(failed)}"
    if report["requires"]:
        detail += f"; the presenter's shell lacks: {'; '.join(report['requires'])}"
    rep.step("talk", ok, detail, time.monotonic() - t)
    return report


def demo_ffmpeg(etc: Path) -> str:
    """The FFmpeg the demo app is configured with (the lab build), else the one on PATH."""
    try:
        for line in (etc / "demo-app.ini").read_text().splitlines():
            key, _, value = line.partition("=")
            if key.strip() == "ffmpeg" and value.strip():
                return value.strip()
    except OSError:
        pass
    return os.environ.get("FFMPEG") or shutil.which("ffmpeg") or "ffmpeg"


def parser(lab: dict) -> argparse.ArgumentParser:
    """The command line, its defaults from lab.json."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pip-lock", type=Path, default=Path(lab["devpi"]["lock"]))
    ap.add_argument("--pip", action="append", default=[], help="one more requirement (repeatable)")
    ap.add_argument("--apt", action="append", default=[], help="a Debian package (repeatable)")
    ap.add_argument("--url", action="append", default=[], help="a page or download (repeatable)")
    ap.add_argument("--proxy", default=lab["proxy"]["url"])
    ap.add_argument("--miss-log", type=Path, default=Path(lab["proxy"]["miss_log"]))
    ap.add_argument("--demo", default=lab["demo_app"]["url"])
    ap.add_argument("--ffmpeg", default=demo_ffmpeg(Path(lab["etc_dir"])))
    ap.add_argument("--skip", action="append", default=[], choices=["pip", "apt", "pages", "demo"])
    ap.add_argument("--report", type=Path, default=Path(lab["rehearsal"]["report"]))
    ap.add_argument("--talk", type=Path, default=Path(lab["talk_dir"]) / "talk.yml",
                    help="the talk to rehearse (default: the installed one; none installed: no talk steps)")
    ap.add_argument("--no-talk", action="store_true", help="only the checks above, not the talk's steps")
    return ap


def main() -> int:
    lab = lab_settings()
    if not lab:
        print(f"demolab-rehearse: the lab is not provisioned (no {LAB_JSON}): run `make lab` first.")
        return 2
    try:
        ap = parser(lab)
    except (KeyError, TypeError) as exc:
        print(f"demolab-rehearse: {LAB_JSON} lacks {exc}: rerun `make lab` (it writes the lab's endpoints there).")
        return 2
    args = ap.parse_args()

    mode = lab.get("mode")
    if mode != "offline":
        print(f"demolab-rehearse: the lab is {mode or 'not provisioned'}; a rehearsal needs it offline "
              "(it would fetch what is missing instead of reporting it). Run `make offline` first.")
        return 2

    talk = None if args.no_talk or not args.talk.is_file() else args.talk
    if talk is not None:
        needs = talk_needs(talk)
        for mine, theirs in ((args.pip, needs["pip"]), (args.apt, needs["apt"]), (args.url, needs["urls"])):
            mine.extend(x for x in theirs if x not in mine)
    offset = args.miss_log.stat().st_size if args.miss_log.exists() else 0
    rep = Report()
    print(f"demolab airplane rehearsal on {os.uname().nodename} (lab offline)")
    with tempfile.TemporaryDirectory(prefix="demolab-rehearse-") as tmp:
        work = Path(tmp)
        if "pip" not in args.skip:
            rehearse_pip(rep, args.pip_lock, args.pip, work)
        if "apt" not in args.skip and args.apt:
            rehearse_apt(rep, args.apt, work)
        if "pages" not in args.skip and args.url:
            rehearse_urls(rep, args.url, args.proxy)
        if "demo" not in args.skip:
            rehearse_demo(rep, args.demo, args.ffmpeg, work)
    talk_report = None
    if talk is not None:
        talk_report = rehearse_talk(rep, talk, args)
    else:
        print(f"  (no talk at {args.talk}: only the checks above)")
    proxy_misses(rep, args.miss_log, offset)

    if rep.misses:
        print(paint(f"\n{len(rep.misses)} miss(es): record them at home, then rehearse again:", "31"))
        for m in rep.misses:
            print(f"  {m['kind']:<4} {m['what']}\n       -> {m['fix']}")
    elif all(s["ok"] for s in rep.steps):
        print(paint("\nNothing missed: the talk runs with no internet.", "32"))
    args.report.parent.mkdir(parents=True, exist_ok=True)
    args.report.write_text(json.dumps({"time": time.time(), "steps": rep.steps, "misses": rep.misses,
                                       "talk": talk_report}, indent=2) + "\n")
    print(f"report: {args.report}")
    return 0 if not rep.misses and all(s["ok"] for s in rep.steps) else 1


if __name__ == "__main__":
    sys.exit(main())
