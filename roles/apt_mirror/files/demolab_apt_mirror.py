#!/usr/bin/python3
"""Fill and index the lab's flat Debian repository (role apt_mirror).

    demolab-apt-mirror fill --dir DIR [--state FILE] [--refresh-after SECONDS]
                            [--no-recommends] [--no-prune] PACKAGE...

0. With --refresh-after, refresh apt's package lists (`apt-get update`) when the last refresh
   recorded in the state file is older than that (apt's own stamp is missing on a minimal
   Debian, so cache_valid_time refreshed on every run); it waits for apt's lock.
1. Resolve the recursive dependency set of PACKAGE... against an EMPTY dpkg status (a clean
   base: nothing is assumed installed, so a fresh minimal host finds everything it lacks),
   with this machine's apt sources and package lists (`apt-get install --print-uris`).
   The answer is kept in the state file under a fingerprint of its inputs (the package list,
   apt's configuration, every file under /etc/apt and the package lists' names, sizes and
   times): while none of them changed, the next run reuses it (apt needs seconds to rebuild
   its cache for a resolution; the fingerprint takes milliseconds).
2. Download what the store does not hold yet (`apt-get download NAME:ARCH=VERSION`, which
   checks every file against the archive's signed indices) into DIR/.partial, then move each
   .deb into DIR. With pruning, .debs outside the set are removed.
3. Re-index only on change: `dpkg-scanpackages` into Packages, Packages.gz and Release, each
   written to a temporary file and renamed (a failure never leaves a half-written index).

Prints one JSON line: {"changed": bool, "downloaded": [...], "removed": [...],
"resolution": "apt" | "kept", "refreshed": bool, ...}.
Exit 1 with a clear message (the package named) when something cannot be resolved,
downloaded or written.
"""

from __future__ import annotations

import argparse
import errno
import gzip
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path

PARTIAL = ".partial"
INDEX_FILES = ("Packages", "Packages.gz", "Release")
URI_LINE = re.compile(r"^'(?P<uri>[^']+)' (?P<file>\S+) (?P<size>\d+)")
# How long `apt-get update` waits for another apt to release its lock, and how often a failed
# update is tried (as the apt module's lock_timeout and the role's retries did).
LOCK_WAIT = 600
UPDATE_TRIES = 3
RETRY_DELAY = 5


class Failure(Exception):
    pass


def apt_env() -> dict[str, str]:
    return dict(os.environ, DEBIAN_FRONTEND="noninteractive", LC_ALL="C.UTF-8")


def apt_dirs() -> tuple[Path, Path]:
    """apt's configuration directory and package lists directory, as apt itself sees them."""
    out = subprocess.run(["apt-config", "shell", "E", "Dir::Etc/d", "L", "Dir::State::lists/d"],
                         capture_output=True, text=True, check=True).stdout
    found = dict(re.findall(r"^(\w)='([^']*)'$", out, re.M))
    return Path(found.get("E", "/etc/apt")), Path(found.get("L", "/var/lib/apt/lists"))


def fingerprint(packages: list[str], recommends: bool) -> str:
    """What a resolution depends on: the request, apt's settings, sources and package lists."""
    h = hashlib.sha256(json.dumps([sorted(set(packages)), recommends]).encode())
    h.update(subprocess.run(["apt-config", "dump"], capture_output=True, check=True).stdout)
    for root in apt_dirs():
        for path in sorted(root.rglob("*")):
            if path.is_file() and path.name != "lock" and "partial" not in path.parts:
                st = path.stat()
                h.update(f"{path}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def load_state(path: Path | None) -> dict:
    if path is None or not path.exists():
        return {}
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}  # unreadable: resolve and refresh again, then rewrite it
    return state if isinstance(state, dict) else {}


def save_state(path: Path | None, state: dict) -> None:
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    os.replace(write_atomic(path, json.dumps(state, sort_keys=True).encode()), path)


def refresh_lists() -> None:
    """`apt-get update`, waiting for apt's lock, tried UPDATE_TRIES times."""
    deadline = time.monotonic() + LOCK_WAIT
    tries = 0
    while True:
        proc = subprocess.run(["apt-get", "update", "-q", "-o", "Acquire::Retries=3"],
                              capture_output=True, text=True, env=apt_env())
        if proc.returncode == 0:
            return
        if "Could not get lock" in proc.stderr and time.monotonic() < deadline:
            time.sleep(RETRY_DELAY)
            continue
        tries += 1
        if tries >= UPDATE_TRIES:
            errors = [ln for ln in proc.stderr.splitlines() if ln.startswith(("E:", "W:"))]
            raise Failure("cannot refresh apt's package lists (apt-get update): "
                          + ("; ".join(errors)[-600:] or proc.stderr.strip()[-600:])
                          + ". Check this machine's network and apt sources; the mirror was "
                          "left as it was (offline, lab_mode=offline serves it as it is).")
        time.sleep(RETRY_DELAY)


def resolve(packages: list[str], recommends: bool, work: Path) -> dict[str, int]:
    """{deb file name: size} of the recursive dependency set on an empty system."""
    status = work / "status"
    status.write_text("")
    cache = work / "cache"
    (cache / "archives" / "partial").mkdir(parents=True)
    cmd = ["apt-get", "-o", f"Dir::State::status={status}", "-o", f"Dir::Cache={cache}",
           "-o", "Debug::NoLocking=1", "-o", "APT::Get::Show-Versions=0",
           "install", "--print-uris", "-qq", "-y",
           "--install-recommends" if recommends else "--no-install-recommends", *packages]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=apt_env())
    if proc.returncode != 0:
        errors = [ln[3:].strip() for ln in proc.stderr.splitlines() if ln.startswith("E: ")]
        named = [p for p in packages if any(p in e for e in errors)]
        raise Failure(
            "cannot resolve the package list against this machine's apt sources"
            + (f" (package(s): {', '.join(named)})" if named else "") + ": "
            + ("; ".join(errors) or proc.stderr.strip() or proc.stdout.strip()[-500:])
            + ". Check the names (apt-cache policy NAME) and that `apt-get update` works.")
    debs: dict[str, int] = {}
    for line in proc.stdout.splitlines():
        m = URI_LINE.match(line)
        if m and m["file"].endswith(".deb"):
            debs[m["file"]] = int(m["size"])
    if not debs:
        raise Failure(f"apt resolved no .deb for {' '.join(packages)}: {proc.stdout[-300:]}")
    return debs


def spec(filename: str) -> str:
    """redis-server_5%3a7.0.15-1_amd64.deb -> redis-server:amd64=5:7.0.15-1"""
    name, version, arch = filename.removesuffix(".deb").split("_")
    return f"{name}:{arch}={urllib.parse.unquote(version)}"


def download(missing: dict[str, int], store: Path) -> None:
    partial = store / PARTIAL
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir()
    need = sum(missing.values())
    free = shutil.disk_usage(store).free
    if need + 16 * 2**20 > free:
        raise Failure(f"not enough disk space in {store}: the missing packages need "
                      f"{need / 2**20:.1f} MiB (+16 MiB for the index), {free / 2**20:.1f} MiB "
                      "are free. Free some space or point apt_mirror_dir elsewhere; the "
                      "existing index was left as it was.")
    names = sorted(missing)
    cmd = ["apt-get", "-q", "-o", "APT::Sandbox::User=root", "download"]
    proc = subprocess.run([*cmd, *map(spec, names)], cwd=partial, capture_output=True,
                          text=True, env=apt_env())
    if proc.returncode != 0:
        # Once more one by one, to name exactly what cannot be downloaded.
        failed = []
        for n in names:
            if (partial / n).exists():
                continue
            one = subprocess.run([*cmd, spec(n)], cwd=partial, capture_output=True, text=True,
                                 env=apt_env())
            if one.returncode != 0:
                reason = [ln for ln in one.stderr.splitlines() if ln.startswith(("E:", "W:"))]
                failed.append(f"{spec(n)} ({' '.join(reason)[:300] or 'apt-get download failed'})")
        if failed:
            if any("No space left" in f for f in failed):
                raise Failure(f"disk full in {store} while downloading: {'; '.join(failed)}")
            raise Failure("cannot download: " + "; ".join(failed))
    for n in names:
        src = partial / n
        if not src.exists():
            raise Failure(f"apt-get download did not produce {n} ({spec(n)})")
        src.chmod(0o644)
        os.replace(src, store / n)
    shutil.rmtree(partial, ignore_errors=True)


def indexed(store: Path) -> dict[str, int]:
    """{file name: size} the current Packages index lists ({} when there is none)."""
    packages = store / "Packages"
    if not all((store / f).exists() for f in INDEX_FILES):
        return {}
    out: dict[str, int] = {}
    name, size = None, None
    for line in packages.read_text(errors="replace").splitlines() + [""]:
        if line.startswith("Filename: "):
            name = line.split(None, 1)[1].removeprefix("./")
        elif line.startswith("Size: "):
            size = int(line.split(None, 1)[1])
        elif not line.strip():
            if name is not None and size is not None:
                out[name] = size
            name, size = None, None
    return out


def write_atomic(path: Path, data: bytes) -> str:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
    except BaseException:
        os.unlink(tmp)
        raise
    return tmp


def reindex(store: Path) -> int:
    proc = subprocess.run(["dpkg-scanpackages", "--multiversion", ".", "/dev/null"], cwd=store,
                          capture_output=True, env=apt_env())
    if proc.returncode != 0:
        raise Failure("dpkg-scanpackages failed: " + proc.stderr.decode(errors="replace")[-500:])
    packages = proc.stdout
    packages_gz = gzip.compress(packages, mtime=0)
    files = {"Packages": packages, "Packages.gz": packages_gz}
    date = time.strftime("%a, %d %b %Y %H:%M:%S UTC", time.gmtime())
    release = [
        "Origin: demolab", "Label: demolab apt mirror", "Suite: demolab", "Codename: demolab",
        f"Date: {date}", "Description: the lab's flat repository (role apt_mirror)",
    ]
    for field, algo in (("MD5Sum", hashlib.md5), ("SHA256", hashlib.sha256)):
        release.append(f"{field}:")
        release += [f" {algo(data).hexdigest()} {len(data)} {name}" for name, data in files.items()]
    files["Release"] = ("\n".join(release) + "\n").encode()
    temps: list[tuple[str, Path]] = []
    try:
        for name in INDEX_FILES:  # all written before any is renamed
            temps.append((write_atomic(store / name, files[name]), store / name))
    except BaseException:
        for tmp, _ in temps:
            Path(tmp).unlink(missing_ok=True)
        raise
    for tmp, dest in temps:
        os.replace(tmp, dest)
    return packages.count(b"\nPackage: ") + packages.startswith(b"Package: ")


def fill(a: argparse.Namespace) -> dict:
    store = Path(a.dir)
    store.mkdir(parents=True, exist_ok=True)
    store.chmod(0o755)
    result: dict = {"changed": False, "downloaded": [], "removed": [], "dir": str(store),
                    "refreshed": False, "resolution": "kept"}
    state_path = Path(a.state) if a.state else None
    state = load_state(state_path)
    if a.refresh_after > 0 and not 0 <= time.time() - state.get("refreshed", 0) < a.refresh_after:
        refresh_lists()
        state["refreshed"] = time.time()
        save_state(state_path, state)
        result["refreshed"] = True
    key = fingerprint(a.packages, a.recommends) if state_path else None
    want = state.get("debs") if key is not None and state.get("key") == key else None
    if not isinstance(want, dict) or not want:
        result["resolution"] = "apt"
        with tempfile.TemporaryDirectory(prefix="demolab-apt-mirror-") as work:
            want = resolve(a.packages, a.recommends, Path(work))
        state.update(key=key, debs=want)
        save_state(state_path, state)
    have = {p.name: p.stat().st_size for p in store.glob("*.deb")}
    missing = {n: s for n, s in want.items() if have.get(n) != s}
    if missing:
        download(missing, store)
        result["downloaded"] = sorted(missing)
    if a.prune:
        for n in sorted(set(have) - set(want)):
            (store / n).unlink()
            result["removed"].append(n)
    shutil.rmtree(store / PARTIAL, ignore_errors=True)
    on_disk = {p.name: p.stat().st_size for p in store.glob("*.deb")}
    if indexed(store) != on_disk:
        result["indexed"] = reindex(store)
        result["changed"] = True
    result["changed"] = result["changed"] or bool(result["downloaded"] or result["removed"])
    result["packages"] = len(want)
    result["bytes"] = sum(want.values())
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("fill", help="resolve, download and index")
    f.add_argument("--dir", required=True)
    f.add_argument("--state", help="JSON file for the last refresh and resolution "
                   "(without it: no refresh, a resolution every run)")
    f.add_argument("--refresh-after", type=int, default=0, metavar="SECONDS",
                   help="run apt-get update when the last one is older (0: never)")
    f.add_argument("--no-recommends", dest="recommends", action="store_false")
    f.add_argument("--no-prune", dest="prune", action="store_false")
    f.add_argument("packages", nargs="+")
    a = ap.parse_args()
    try:
        result = fill(a)
    except Failure as e:
        print(f"demolab-apt-mirror: {e}", file=sys.stderr)
        return 1
    except OSError as e:
        if e.errno == errno.ENOSPC:
            print(f"demolab-apt-mirror: disk full in {a.dir} ({e}); the previous index was "
                  "left as it was (indices are written to temporary files, then renamed)",
                  file=sys.stderr)
            return 1
        raise
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
