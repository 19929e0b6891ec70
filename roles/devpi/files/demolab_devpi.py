#!/usr/bin/env python3
"""demolab-devpi: set up the lab's devpi indexes and fill one from a hashed lock.

  demolab-devpi --url URL setup [--index USER/INDEX] [--mirror-url U] [--check]
  demolab-devpi --url URL fill --lock FILE --store DIR --target 3.11:PLAT[,PLAT] ...
                [--index USER/INDEX] [--offline] [--pip-index-url URL] [--check]

The root password comes from the environment (DEVPI_ROOT_PASSWORD), never from argv.
`fill` downloads WITHOUT installing (pip download --require-hashes --only-binary=:all:
--python-version X --platform Y, one run per target) into a staging directory, moves the
files into the store and writes store/manifest.json; a store whose manifest matches the
lock and whose files still have their hashes is not downloaded again (offline mode never
downloads). Then it uploads (devpi upload --from-dir) only the files the index lacks and
checks that the index holds every file with the lock's hash. Each step can be killed and
rerun. The last line printed is JSON: {"changed": bool, "msg": ...}.
Exit status: 0 ok, 2 the lock or the store is wrong (the package is named), 3 disk full
(nothing half written), 1 other errors.
"""

from __future__ import annotations

import argparse
import base64
import errno
import hashlib
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

BIN = Path(sys.executable).parent
MANIFEST = "manifest.json"
# A passing fault between pip, devpi and its upstream (devpi answers 502 when its own fetch
# from the upstream fails; a proxy on the way may time out): pip's own retries come within a
# few seconds, so the whole download is tried again after a pause. Files already downloaded
# stay in the staging directory and are not fetched twice.
TRANSIENT = re.compile(r"HTTP error 5\d\d|Bad Gateway|Service Unavailable|Gateway Time-?out|Read timed out"
                       r"|Connection (?:reset|refused|aborted)|RemoteDisconnected|IncompleteRead", re.I)
DOWNLOAD_ATTEMPTS = 3
DOWNLOAD_PAUSE = float(os.environ.get("DEMOLAB_DEVPI_RETRY_PAUSE", "10"))


class Failure(Exception):
    def __init__(self, msg: str, code: int = 1):
        super().__init__(msg)
        self.code = code


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def log(msg: str) -> None:
    print(f"demolab-devpi: {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- devpi server access
class Devpi:
    def __init__(self, url: str, clientdir: str | None, password: str | None):
        self.url = url.rstrip("/")
        self.clientdir = clientdir
        self.password = password
        self._token: str | None = None
        self._logged_in_client = False

    def request(self, method: str, path: str, body=None, auth: bool = False):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={"Accept": "application/json",
                                              "Content-Type": "application/json"})
        if auth:
            req.add_header("X-Devpi-Auth", base64.b64encode(f"root:{self.token()}".encode()).decode())
        try:
            with urllib.request.urlopen(req, timeout=60) as resp:
                return resp.status, json.loads(resp.read() or b"{}")
        except urllib.error.HTTPError as err:
            if err.code == 404:
                return 404, {}
            raise Failure(f"{method} {path}: HTTP {err.code} {err.read()[:300]!r}") from err
        except (urllib.error.URLError, OSError) as err:
            raise Failure(f"devpi-server at {self.url} is not reachable: {err}") from err

    def token(self) -> str:
        if self._token is None:
            if not self.password:
                raise Failure("DEVPI_ROOT_PASSWORD is not set")
            _, data = self.request("POST", "/+login", {"user": "root", "password": self.password})
            self._token = data["result"]["password"]
        return self._token

    def get(self, path: str) -> dict | None:
        status, data = self.request("GET", path)
        return None if status == 404 else data.get("result", {})

    def client(self, *args: str) -> str:
        """Run devpi-client as root (logged in once, password on stdin-free argv)."""
        env = dict(os.environ, DEVPI_INDEX="")
        base = [str(BIN / "devpi")]
        extra = ["--clientdir", self.clientdir] if self.clientdir else []
        if not self._logged_in_client:
            for cmd in (["use", self.url], ["login", "root", "--password", self.password or ""]):
                run([*base, *cmd, *extra], env=env, what=f"devpi {cmd[0]}")
            self._logged_in_client = True
        return run([*base, *args, *extra], env=env, what=f"devpi {args[0]}")


def run(cmd: list[str], env=None, what: str = "") -> str:
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise Failure(f"{what or cmd[0]} failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}")
    return proc.stdout


# ---------------------------------------------------------------- setup
def pip_index_url(own_url: str) -> str:
    """The index-url of the machine's pip configuration (environment first), unless it is
    devpi itself (the role points pip at the lab index) or a local directory."""
    proc = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True,
                          text=True, check=False)
    found = {}
    for line in proc.stdout.splitlines():
        key, _, value = line.partition("=")
        found[key.strip()] = value.strip().strip("'\"")
    for key in (":env:.index-url", "global.index-url", "download.index-url"):
        url = found.get(key, "").split()[0] if found.get(key) else ""
        if url.startswith(("http://", "https://")) and not url.startswith(own_url.rstrip("/") + "/"):
            return url
    return ""


def cmd_setup(args, devpi: Devpi) -> tuple[bool, str]:
    """Plain REST calls (each devpi-client run costs seconds of imports)."""
    actions = []
    if not args.mirror_url:
        # Empty: the upstream pip on this machine is configured with; if pip has none, devpi's
        # own default (the same public index pip uses by default) stays.
        args.mirror_url = pip_index_url(devpi.url)
        if args.mirror_url:
            log(f"root/pypi upstream from pip's configuration: {args.mirror_url}")
    user, _, _ = args.index.partition("/")
    pypi = devpi.get("/root/pypi?no_projects=")
    if pypi is None:
        raise Failure("root/pypi does not exist (devpi-init was run with --no-root-pypi?)")
    changes = []
    if pypi.get("mirror_no_project_list") is not True:
        changes.append("mirror_no_project_list=True")
    if args.mirror_url and pypi.get("mirror_url") != args.mirror_url:
        changes.append(f"mirror_url={args.mirror_url}")
    if changes:
        actions.append("root/pypi: " + " ".join(changes))
        if not args.check:
            devpi.request("PATCH", "/root/pypi", changes, auth=True)
    user_missing = devpi.get(f"/{user}") is None
    if user_missing:
        actions.append(f"create user {user}")
        if not args.check:
            # Nobody logs in as this user: root uploads. An unusable random password.
            devpi.request("PUT", f"/{user}", {"password": secrets.token_urlsafe(24)}, auth=True)
    index = None if user_missing else devpi.get(f"/{args.index}?no_projects=")
    if index is None:
        actions.append(f"create index {args.index} bases=root/pypi")
        if not args.check:
            devpi.request("PUT", f"/{args.index}",
                          {"type": "stage", "bases": ["root/pypi"], "volatile": False,
                           "acl_upload": ["root", user]}, auth=True)
    else:
        fixes = []
        if list(index.get("bases", [])) != ["root/pypi"]:
            fixes.append("bases=root/pypi")
        if "root" not in index.get("acl_upload", []):  # fill uploads as root
            fixes.append(f"acl_upload=root,{user}")
        if fixes:
            actions.append(f"{args.index}: " + " ".join(fixes))
            if not args.check:
                devpi.request("PATCH", f"/{args.index}", fixes, auth=True)
    return bool(actions), "; ".join(actions) or "indexes as wanted"


# ---------------------------------------------------------------- fill
def parse_lock(path: Path) -> dict[str, tuple[str, str, set[str]]]:
    """canonical name -> (display name, version, sha256 set)."""
    text = path.read_text().replace("\\\n", " ")
    entries: dict[str, tuple[str, str, set[str]]] = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = re.sub(r"(^|\s)#.*$", "", line)
        if not line.strip():
            continue
        match = re.match(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)\s*(.*)$", line)
        if not match:
            raise Failure(f"{path}: line {number}: not 'name==version --hash=sha256:...': {line}", 2)
        name, version, rest = match.groups()
        hashes = set(re.findall(r"--hash=sha256:([0-9a-fA-F]{64})", rest))
        if not hashes:
            raise Failure(f"{path}: {name}=={version} has no --hash=sha256: entry", 2)
        entries[canonical(name)] = (name, version, {h.lower() for h in hashes})
    if not entries:
        raise Failure(f"{path}: the lock is empty", 2)
    return entries


def wheel_project(filename: str) -> tuple[str, str]:
    parts = filename[:-4].split("-") if filename.endswith(".whl") else filename.rsplit("-", 1)
    return canonical(parts[0]), parts[1].removesuffix(".tar.gz").removesuffix(".zip")


def store_is_complete(store: Path, lock_sha: str, targets: list[str],
                      lock: dict) -> tuple[bool, dict[str, str]]:
    try:
        manifest = json.loads((store / MANIFEST).read_text())
    except (OSError, ValueError):
        return False, {}
    if manifest.get("lock_sha256") != lock_sha or manifest.get("targets") != targets:
        return False, {}
    files = manifest.get("files", {})
    for name, digest in files.items():
        path = store / name
        if not path.is_file() or sha256(path) != digest:
            log(f"store: {name} is missing or damaged, downloading again")
            return False, {}
        project, version = wheel_project(name)
        if project not in lock or lock[project][1] != version or digest not in lock[project][2]:
            return False, {}
    return True, files


def explain_pip_failure(output: str, lock_path: Path) -> str:
    bad = re.findall(r"^\s+(\S+==\S+) from (\S+)[^\n]*\n\s+Expected sha256 (\S+)\n\s+Got\s+(\S+)",
                     output, re.M)
    if bad:
        lines = [f"hash mismatch in {lock_path} for {', '.join(b[0] for b in bad)} - refused, "
                 "nothing was stored:"]
        lines += [f"  {req}: lock says sha256 {exp}, the index serves {got} ({url.rsplit('/', 1)[-1]})"
                  for req, url, exp, got in bad]
        return "\n".join(lines) + "\n--- pip ---\n" + output.strip()[-3000:]
    missing = re.findall(r"No matching distribution found for (\S+)", output)
    if missing:
        return (f"no wheel for {', '.join(missing)} for this target (only binary wheels are "
                f"mirrored; add the platform tags or pin another version)\n--- pip ---\n"
                + output.strip()[-3000:])
    return "pip download failed:\n" + output.strip()[-3000:]


def pip_env(args) -> dict[str, str]:
    """pip talks to --pip-index-url only (devpi's root/pypi): the machine's pip configuration
    (which the role points at the lab index itself) stays out. Without --pip-index-url, pip's
    own configuration decides."""
    if not args.pip_index_url:
        return dict(os.environ)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env.update(PIP_CONFIG_FILE=os.devnull, PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_INPUT="1")
    return env


def disk_full(output: str) -> bool:
    return "No space left on device" in output or "[Errno 28]" in output


def download(args, lock_path: Path, store: Path, lock: dict) -> dict[str, str]:
    staging = store / ".download"
    staging.mkdir(parents=True, exist_ok=True)
    for target in args.target:
        python, _, platforms = target.partition(":")
        staged = staging / re.sub(r"[^A-Za-z0-9.]+", "_", target)
        cmd = [sys.executable, "-m", "pip", "download", "--disable-pip-version-check",
               "--no-input", "--require-hashes", "--only-binary=:all:", "--implementation", "cp",
               "--python-version", python, "-d", str(staged), "-r", str(lock_path)]
        for platform in filter(None, platforms.split(",")):
            cmd += ["--platform", platform]
        if args.pip_index_url:
            cmd += ["--index-url", args.pip_index_url]
            index = urllib.parse.urlsplit(args.pip_index_url)
            if index.scheme == "http" and index.hostname not in ("127.0.0.1", "localhost", "::1"):
                # devpi on the lab network's address: plain http, which pip must be told to use
                cmd += ["--trusted-host", index.hostname]
        log("download for " + target)
        for attempt in range(1, DOWNLOAD_ATTEMPTS + 1):
            proc = subprocess.run(cmd, capture_output=True, text=True, check=False,
                                  env=pip_env(args))
            if proc.returncode == 0:
                break
            output = proc.stdout + proc.stderr
            if disk_full(output):
                raise OSError(errno.ENOSPC, "No space left on device (pip download)")
            explained = explain_pip_failure(output, lock_path)
            if attempt == DOWNLOAD_ATTEMPTS or not explained.startswith("pip download failed") \
                    or not TRANSIENT.search(output):
                raise Failure(explained, 2)
            fault = TRANSIENT.search(output).group(0)
            log(f"the index failed on the way ({fault}); trying again in {DOWNLOAD_PAUSE * attempt:.0f} s "
                f"(attempt {attempt + 1} of {DOWNLOAD_ATTEMPTS})")
            time.sleep(DOWNLOAD_PAUSE * attempt)
    files: dict[str, Path] = {}
    for staged in sorted(p for p in staging.iterdir() if p.is_dir()):
        for path in sorted(staged.iterdir()):
            if not path.is_file() or path.name in files:
                continue
            digest = sha256(path)
            project, version = wheel_project(path.name)
            if project not in lock or lock[project][1] != version or digest not in lock[project][2]:
                raise Failure(f"{path.name}: not in {lock_path} with this hash - refused", 2)
            files[path.name] = path
    hashes: dict[str, str] = {}
    for name, path in files.items():
        digest = sha256(path)
        target_path = store / name
        if not (target_path.is_file() and sha256(target_path) == digest):
            os.replace(path, target_path)  # same filesystem: a rename, never a partial file
        hashes[name] = digest
    return hashes


def cleanup(store: Path) -> None:
    """Drop what an interrupted or failed fill left: staging and temporary files."""
    shutil.rmtree(store / ".download", ignore_errors=True)
    if store.is_dir():
        for tmp in store.glob(".*.tmp"):
            tmp.unlink(missing_ok=True)
        for tmp in store.glob(".upload-*"):
            shutil.rmtree(tmp, ignore_errors=True)


def free_bytes(path: Path) -> int:
    while not path.exists():
        path = path.parent
    stat = os.statvfs(path)
    return stat.f_bavail * stat.f_frsize


def write_manifest(store: Path, lock_sha: str, targets: list[str], files: dict[str, str]) -> None:
    tmp = store / f".{MANIFEST}.tmp"
    with tmp.open("w") as handle:
        json.dump({"lock_sha256": lock_sha, "targets": targets, "files": files}, handle,
                  indent=1, sort_keys=True)
        handle.write("\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, store / MANIFEST)


def index_files(devpi: Devpi, index: str) -> dict[str, str]:
    """basename -> sha256 of the files uploaded to the index itself (not its bases)."""
    info = devpi.get(f"/{index}")
    if info is None:
        raise Failure(f"index {index} does not exist (run 'setup' first)")
    found: dict[str, str] = {}
    for project in info.get("projects", []):
        versions = devpi.get(f"/{index}/{project}") or {}
        for data in versions.values():
            for link in data.get("+links", []) if isinstance(data, dict) else []:
                if link.get("rel") != "releasefile":
                    continue
                spec = link.get("hash_spec", "")
                found[link["href"].rsplit("/", 1)[-1].split("#")[0]] = spec.partition("=")[2]
    return found


def cmd_fill(args, devpi: Devpi) -> tuple[bool, str]:
    lock_path = Path(args.lock)
    lock = parse_lock(lock_path)
    lock_sha = sha256(lock_path)
    store = Path(args.store)
    targets = sorted(args.target)
    changed, notes = False, []

    complete, files = store_is_complete(store, lock_sha, targets, lock)
    if not complete:
        if args.offline:
            raise Failure(f"the store {store} does not hold every file of {lock_path} and the lab "
                          "is offline: fill it online first (lab_mode: online)", 2)
        changed = True
        notes.append("store: download")
        if args.check:
            return True, "would download into the store and upload"
        try:
            files = download(args, lock_path, store, lock)
            write_manifest(store, lock_sha, targets, files)
        except OSError as err:
            cleanup(store)
            if err.errno != errno.ENOSPC:
                raise Failure(f"store {store}: {err}") from err
            raise Failure(f"disk full: the store {store} ran out of space while filling "
                          f"({free_bytes(store) // 1024} KiB free after cleanup); nothing was "
                          "half written (no manifest, staging removed, index untouched): free "
                          "space or move lab_store_dir/devpi_fill_store, then rerun", 3) from err
        except BaseException:
            (store / f".{MANIFEST}.tmp").unlink(missing_ok=True)
            raise
        cleanup(store)
        log(f"store: {len(files)} files")
    present = index_files(devpi, args.index)
    for name, digest in sorted(present.items()):
        if name in files and digest and digest != files[name]:
            raise Failure(f"{args.index} already holds {name} with another hash ({digest}); "
                          "remove it from the index or fix the lock", 2)
    missing = sorted(set(files) - set(present))
    if missing:
        changed = True
        notes.append(f"upload {len(missing)} files")
        if not args.check:
            with tempfile.TemporaryDirectory(prefix=".upload-", dir=store) as tmp:
                for name in missing:
                    try:
                        os.link(store / name, Path(tmp) / name)
                    except OSError:
                        shutil.copyfile(store / name, Path(tmp) / name)
                log(f"upload {len(missing)} files into {args.index}")
                devpi.client("upload", "--index", args.index, "--from-dir", tmp)
            present = index_files(devpi, args.index)
            still = sorted(set(files) - set(present))
            if still:
                raise Failure(f"after the upload {args.index} still lacks: {', '.join(still)}")
    return changed, "; ".join(notes) or f"{args.index} holds all {len(files)} files of the lock"


# The lab's settings and endpoints (the lab role writes it; DEMOLAB_LAB_JSON names another, for tests):
# devpi's URL and index when --url / --index are not given.
LAB_JSON = Path(os.environ.get("DEMOLAB_LAB_JSON") or "/etc/demolab/lab.json")


def lab_devpi() -> dict:
    try:
        return json.loads(LAB_JSON.read_text())["devpi"]
    except (OSError, ValueError, KeyError) as exc:
        raise Failure(f"no --url/--index given and the lab's settings {LAB_JSON} are unreadable ({exc}): "
                      "give them, or run `make lab` first") from None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="devpi's URL (default: lab.json's devpi.url)")
    parser.add_argument("--clientdir", help="devpi-client state directory")
    sub = parser.add_subparsers(dest="command", required=True)
    setup = sub.add_parser("setup")
    setup.add_argument("--index", help="USER/INDEX (default: lab.json's devpi.index)")
    setup.add_argument("--mirror-url", default="")
    setup.add_argument("--check", action="store_true")
    fill = sub.add_parser("fill")
    fill.add_argument("--index", help="USER/INDEX (default: lab.json's devpi.index)")
    fill.add_argument("--lock", required=True)
    fill.add_argument("--store", required=True)
    fill.add_argument("--target", action="append", required=True,
                      help="PYVER:PLATFORM[,PLATFORM...], repeatable")
    fill.add_argument("--offline", action="store_true", help="never download")
    fill.add_argument("--pip-index-url", default="",
                      help="index pip downloads from (default: the machine's pip configuration)")
    fill.add_argument("--check", action="store_true")
    args = parser.parse_args()
    try:
        if not (args.url and args.index):
            lab = lab_devpi()
            args.url, args.index = args.url or lab["url"], args.index or lab["index"]
        devpi = Devpi(args.url, args.clientdir, os.environ.get("DEVPI_ROOT_PASSWORD"))
        changed, msg = (cmd_setup if args.command == "setup" else cmd_fill)(args, devpi)
    except Failure as err:
        log(str(err))
        print(json.dumps({"changed": False, "failed": True, "msg": str(err).splitlines()[0]}))
        return err.code
    print(json.dumps({"changed": changed, "msg": msg}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
