#!/usr/bin/python3
"""lab-ffmpeg-build: build a lean FFmpeg ONCE from the Debian source package, package it as a
.deb with a manifest in a store directory, and reuse that artifact until the Debian release,
the source version, the configure flags or this program's packaging revision change.

Usable on its own (tests, bench) and run by the Ansible role `ffmpeg`. Python 3 standard
library only: it runs on a fresh Debian 12 or 13 host.

  lab-ffmpeg-build [options] COMMAND

Commands
  sources   add a deb-src stanza derived from the machine's debian.sources (same URIs,
            suites, components, Signed-By) and apt-get update; no-op if deb-src exists
  fetch     download the Debian source package into STORE/src (apt-get source)
  flags     print the configure flags (one a line)
  key       print the artifact key (hash of Debian release + source version + flags +
            packaging revision): each release builds from, and links against, its own
  ensure    build + package unless STORE/artifacts/KEY/ already holds a good artifact;
            prints one JSON line: changed, key, version, deb, manifest, prefix, ffmpeg, log
  install   ensure, then install the .deb with apt-get (runtime deps from apt)
  deb       print the path of the artifact for the current key (exit 1 if not built)
  describe  print the JSON line of `ensure` for an existing artifact (exit 1 if not built)

Options (or environment variables)
  --store DIR       LAB_FFMPEG_STORE   store dir (default: the lab's store_dir/ffmpeg, from lab.json)
  --cache DIR       LAB_FFMPEG_CACHE   extra artifact cache: looked up before building and
                                       filled after a build (e.g. /var/cache/demolab/ffmpeg)
  --version VER     LAB_FFMPEG_VERSION Debian source version (e.g. 7:5.1.9-0+deb12u1);
                                       default: newest .dsc in the store, else apt's newest
  --refresh         LAB_FFMPEG_REFRESH=1  take apt's newest source version even if the store
                                       holds an older one
  --prefix-base DIR LAB_FFMPEG_PREFIX_BASE  default /opt (prefix: BASE/ffmpeg-UPSTREAM-lab)
  --jobs N          LAB_FFMPEG_JOBS    make -j (default: number of cores)
  --build-dir DIR   LAB_FFMPEG_BUILD_DIR  scratch dir (default /var/tmp/demolab-ffmpeg-build)
  --keep-build      keep the scratch dir after a successful build
  --extra-flag FLAG LAB_FFMPEG_EXTRA_FLAGS (space separated)  one more configure flag, e.g.
                    --enable-encoder=flac (repeatable; no spaces or quotes in a flag); part of
                    the key, so a changed list means one new build
  Also read: LAB_FFMPEG_RELEASE (Debian codename, default VERSION_CODENAME of
  /etc/os-release), LAB_FFMPEG_PROGRESS_EVERY (seconds between progress lines, default 30),
  LAB_APT_SOURCES, LAB_DEB_SRC_FILE (the `sources` command's input and output files).

Progress: every build step is appended to STORE/artifacts/KEY/build.log (`tail -f` it);
phase lines and a progress line every 30 s go to stderr. Errors: one line on stderr
starting with "lab-ffmpeg-build: error:", exit status 1.
"""

from __future__ import annotations

import dataclasses
import datetime
import errno
import fcntl
import hashlib
import json
import math
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROG = "lab-ffmpeg-build"
PACKAGING_REV = 1
PKG_NAME = "demolab-ffmpeg"
# The lab's settings (the lab role writes it; DEMOLAB_LAB_JSON names another): the default store.
LAB_JSON = "/etc/demolab/lab.json"
DEFAULT_BUILD_DIR = "/var/tmp/demolab-ffmpeg-build"
DEFAULT_APT_SOURCES = "/etc/apt/sources.list.d/debian.sources"
DEFAULT_DEB_SRC_FILE = "/etc/apt/sources.list.d/demolab-deb-src.sources"
OS_RELEASE = "/etc/os-release"
# Free space the scratch dir needs for one build: source + objects + staging + package came to
# 203 MB for 5.1.9 on bookworm (--keep-build); FFmpeg 7.1 on trixie is larger. With a margin.
BUILD_SPACE_MB = 800
APT_LOCK = ["-o", "DPkg::Lock::Timeout=600"]

# Lean: nothing is autodetected, every component is named. Order matters only for
# readability, but it is part of the artifact key: do not reorder.
BASE_FLAGS = (
    "--disable-everything",
    "--disable-autodetect",
    "--enable-pthreads",
    "--enable-zlib",
    "--enable-gpl",
    "--disable-doc",
    "--disable-debug",
    "--disable-ffplay",
    "--enable-ffmpeg",
    "--enable-ffprobe",
    "--disable-network",
    "--enable-libvpx",
    "--enable-libvorbis",
    "--enable-libopus",
    "--enable-libx264",
    "--enable-libxcb",
    "--enable-libxcb-shm",
    "--enable-libxcb-xfixes",
    "--enable-libxcb-shape",
    "--enable-libpulse",
    "--enable-alsa",
    "--enable-indev=xcbgrab,pulse,alsa,lavfi",
    "--enable-protocol=file,pipe",
    "--enable-demuxer=mov,matroska,avi,mp3,ogg,wav,aac,h264,hevc,image2,rawvideo,flac,concat",
    "--enable-decoder=h264,hevc,vp8,vp9,mpeg4,mjpeg,aac,mp3,mp3float,opus,vorbis,flac,png,rawvideo,"
    "pcm_s16le,pcm_s16be,pcm_s24le,pcm_s32le,pcm_f32le,pcm_u8",
    "--enable-parser=h264,hevc,vp8,vp9,mpeg4video,mjpeg,aac,mpegaudio,opus,vorbis,flac,png",
    "--enable-encoder=libvpx_vp8,libvpx_vp9,libvorbis,libopus,libx264,aac,png,rawvideo,wrapped_avframe,"
    "pcm_s16le",
    "--enable-muxer=webm,matroska,mp4,mov,null,wav,ogg,image2,rawvideo",
    "--enable-bsf=aac_adtstoasc,h264_mp4toannexb,hevc_mp4toannexb,vp9_superframe,vp9_superframe_split,"
    "extract_extradata,null",
    "--enable-filter=scale,fps,aresample,format,aformat,null,anull,loudnorm,volume,setpts,asetpts,trim,atrim,"
    "pad,crop,split,asplit,concat,amix,apad,anullsrc,testsrc,testsrc2,color,sine,showinfo,setsar,setdar,select,"
    "transpose,hflip,vflip,copy,acopy",
)

# A Debian version: [epoch:]upstream[-revision], upstream starting with a digit.
VERSION_RE = re.compile(r"^(?:[0-9]+:)?[0-9][A-Za-z0-9.+~:-]*$")


class Fail(Exception):
    """A one-line error for the user (printed as `lab-ffmpeg-build: error: ...`, exit 1)."""


def say(msg: str) -> None:
    print(f"{PROG}: {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- settings and arguments
@dataclasses.dataclass
class Settings:
    store: Path | None = None  # None: the lab's store_dir/ffmpeg (lab.json)
    cache: Path | None = None
    version: str = ""
    refresh: bool = False
    prefix_base: str = "/opt"
    jobs: int = 0
    build_root: Path = Path(DEFAULT_BUILD_DIR)
    keep_build: bool = False
    extra_flags: list[str] = dataclasses.field(default_factory=list)
    progress_every: int = 30
    release: str = ""
    apt_sources: Path = Path(DEFAULT_APT_SOURCES)
    deb_src_file: Path = Path(DEFAULT_DEB_SRC_FILE)

    @property
    def flags(self) -> list[str]:
        return [*BASE_FLAGS, *self.extra_flags]


COMMANDS = ("sources", "fetch", "flags", "key", "ensure", "install", "deb", "describe")
VALUE_OPTIONS = ("--store", "--cache", "--version", "--prefix-base", "--jobs", "--build-dir", "--extra-flag")


def positive_int(text: str, what: str) -> int:
    if not text.strip().isdigit() or int(text) < 1:
        raise Fail(f"{what} must be a whole number >= 1, not {text!r}")
    return int(text)


def split_flags(text: str) -> list[str]:
    """One configure flag a word (a flag never holds a space)."""
    return text.split()


def settings_from_env(env: dict[str, str]) -> Settings:
    s = Settings()
    s.store = Path(env["LAB_FFMPEG_STORE"]) if env.get("LAB_FFMPEG_STORE") else None
    s.cache = Path(env["LAB_FFMPEG_CACHE"]) if env.get("LAB_FFMPEG_CACHE") else None
    s.version = env.get("LAB_FFMPEG_VERSION", "")
    s.refresh = env.get("LAB_FFMPEG_REFRESH", "0") == "1"
    s.prefix_base = env.get("LAB_FFMPEG_PREFIX_BASE") or "/opt"
    if env.get("LAB_FFMPEG_JOBS"):
        s.jobs = positive_int(env["LAB_FFMPEG_JOBS"], "LAB_FFMPEG_JOBS")
    s.build_root = Path(env.get("LAB_FFMPEG_BUILD_DIR") or DEFAULT_BUILD_DIR)
    s.extra_flags = split_flags(env.get("LAB_FFMPEG_EXTRA_FLAGS", ""))
    if env.get("LAB_FFMPEG_PROGRESS_EVERY"):
        s.progress_every = positive_int(env["LAB_FFMPEG_PROGRESS_EVERY"], "LAB_FFMPEG_PROGRESS_EVERY")
    s.release = env.get("LAB_FFMPEG_RELEASE", "")
    s.apt_sources = Path(env.get("LAB_APT_SOURCES") or DEFAULT_APT_SOURCES)
    s.deb_src_file = Path(env.get("LAB_DEB_SRC_FILE") or DEFAULT_DEB_SRC_FILE)
    return s


def parse_args(argv: list[str], env: dict[str, str]) -> tuple[str, Settings]:
    """(command, settings); command "help" for -h/--help. Options and the command in any order;
    `--opt VALUE` and `--opt=VALUE` both work."""
    s = settings_from_env(env)
    cmd = ""
    args = list(argv)
    while args:
        arg = args.pop(0)
        if arg in ("-h", "--help"):
            return "help", s
        if arg.startswith("-"):
            name, eq, value = arg.partition("=")
            if name in VALUE_OPTIONS:
                if not eq:
                    if not args:
                        raise Fail(f"option {name} needs a value (see --help)")
                    value = args.pop(0)
                if value == "" and name in ("--store", "--prefix-base", "--jobs", "--build-dir"):
                    raise Fail(f"option {name} needs a non-empty value (see --help)")
                apply_option(s, name, value)
            elif arg == "--refresh":
                s.refresh = True
            elif arg == "--keep-build":
                s.keep_build = True
            else:
                raise Fail(f"unknown option {arg} (see --help)")
        elif cmd:
            raise Fail("one command only")
        else:
            cmd = arg
    if not cmd:
        raise Fail("no command (see --help)")
    if cmd not in COMMANDS:
        raise Fail(f"unknown command {cmd} (see --help)")
    return cmd, s


def apply_option(s: Settings, name: str, value: str) -> None:
    if name == "--store":
        s.store = Path(value)
    elif name == "--cache":
        s.cache = Path(value) if value else None
    elif name == "--version":
        s.version = value
    elif name == "--prefix-base":
        s.prefix_base = value
    elif name == "--jobs":
        s.jobs = positive_int(value, "--jobs")
    elif name == "--build-dir":
        s.build_root = Path(value)
    elif name == "--extra-flag":
        s.extra_flags.extend(split_flags(value))


# ---------------------------------------------------------------- versions, release, key
def os_release_codename(path: str = OS_RELEASE) -> str:
    """VERSION_CODENAME of an os-release file (shell syntax, values maybe quoted)."""
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "unknown"
    for line in text.splitlines():
        name, eq, value = line.partition("=")
        if eq and name.strip() == "VERSION_CODENAME":
            try:
                words = shlex.split(value)
            except ValueError:
                words = [value.strip("\"' ")]
            return words[0] if words and words[0] else "unknown"
    return "unknown"


def upstream_of(version: str) -> str:
    """7:5.1.9-0+deb12u1 -> 5.1.9"""
    return noepoch_of(version).rsplit("-", 1)[0]


def noepoch_of(version: str) -> str:
    """7:5.1.9-0+deb12u1 -> 5.1.9-0+deb12u1"""
    return version.split(":", 1)[1] if ":" in version else version


def check_version(version: str, what: str = "--version") -> str:
    if not VERSION_RE.match(version):
        raise Fail(f"{what} {version!r} is not a Debian version (e.g. 7:5.1.9-0+deb12u1)")
    return version


def version_gt(a: str, b: str) -> bool:
    """Debian version ordering, as dpkg itself defines it."""
    return run_quiet(["dpkg", "--compare-versions", a, "gt", b]).returncode == 0


def newest_version(versions: list[str]) -> str:
    best = ""
    for v in versions:
        if v and (not best or version_gt(v, best)):
            best = v
    return best


def compute_key(release: str, version: str, arch: str, prefix_base: str, flags: list[str]) -> str:
    """16 hex digits of sha256 over what makes an artifact: the same text the bash version
    hashed, so artifacts built before the rewrite keep their keys."""
    text = (f"release={release}\nsource={version}\narch={arch}\npackaging={PACKAGING_REV}\n"
            f"prefix_base={prefix_base}\n") + "".join(f"{f}\n" for f in flags)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def run_quiet(argv: list[str], **kw) -> subprocess.CompletedProcess:
    """Run a tool, capture its output; a missing tool is a clear error."""
    try:
        return subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL, check=False, **kw)
    except FileNotFoundError:
        raise Fail(f"{argv[0]} not found: this runs on Debian (dpkg, apt) with the build "
                   "dependencies installed (role ffmpeg: ffmpeg_build_packages)") from None


def dpkg_arch() -> str:
    res = run_quiet(["dpkg", "--print-architecture"])
    if res.returncode != 0 or not res.stdout.strip():
        raise Fail(f"dpkg --print-architecture failed: {res.stderr.strip()}")
    return res.stdout.strip()


def dsc_version(path: Path) -> str:
    """The Version: field of a .dsc (clear-signed or not)."""
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        if line.startswith("Version:"):
            return line.split(":", 1)[1].strip()
    return ""


def store_version(store: Path) -> str:
    return newest_version([dsc_version(p) for p in sorted((store / "src").glob("ffmpeg_*.dsc"))])


def apt_versions(showsrc: str) -> list[str]:
    """Versions of the source package `ffmpeg` in `apt-cache showsrc ffmpeg` output."""
    versions, package = [], ""
    for line in showsrc.splitlines():
        if line.startswith("Package: "):
            package = line.split(None, 1)[1].strip()
        elif line.startswith("Version:") and package == "ffmpeg":
            versions.append(line.split(":", 1)[1].strip())
    return versions


def apt_showsrc() -> str:
    try:
        res = subprocess.run(["apt-cache", "showsrc", "ffmpeg"], capture_output=True, text=True,
                             stdin=subprocess.DEVNULL, check=False)
    except FileNotFoundError:
        return ""
    return res.stdout


def read_manifest(path: Path) -> dict:
    """A manifest.json as a dict; ValueError naming what is wrong with it."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        raise ValueError(f"{path} is not text ({e.reason})") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON ({e.msg} at line {e.lineno} column {e.colno})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path} is not a JSON object")
    return data


def manifest_dirs(s: Settings) -> list[Path]:
    roots = [s.store] + ([s.cache] if s.cache else [])
    return [d for root in roots for d in sorted((root / "artifacts").glob("*")) if d.is_dir()]


def artifact_versions(s: Settings, release: str) -> list[str]:
    """Source versions of the artifacts of RELEASE in the store and the cache."""
    versions = []
    for d in manifest_dirs(s):
        if not (d / "manifest.json").exists():
            continue
        try:
            m = read_manifest(d / "manifest.json")
        except (OSError, ValueError) as e:
            say(f"ignoring an unreadable artifact: {e}")
            continue
        if m.get("release") == release and isinstance(m.get("source_version"), str):
            versions.append(m["source_version"])
    return versions


def resolve_version(s: Settings) -> str:
    if s.version:
        return check_version(s.version)
    version = "" if s.refresh else store_version(s.store)
    version = version or newest_version(apt_versions(apt_showsrc()))
    if not version:  # offline host: fall back to the newest artifact of this release
        version = newest_version(artifact_versions(s, s.release))
    if not version:
        raise Fail(f"no ffmpeg source version known: run '{PROG} sources' (needs apt access) or pass --version")
    return check_version(version, "source version")


# ---------------------------------------------------------------- the artifact
@dataclasses.dataclass
class Artifact:
    key: str
    version: str
    upstream: str
    prefix: str
    pkg_version: str
    arch: str
    release: str
    flags: list[str]
    art: Path

    @property
    def deb(self) -> Path:
        return self.art / f"{PKG_NAME}_{self.pkg_version}_{self.arch}.deb"

    @property
    def manifest(self) -> Path:
        return self.art / "manifest.json"

    @property
    def log(self) -> Path:
        return self.art / "build.log"

    def result(self, changed: bool) -> dict:
        """The JSON line of ensure/describe/install (field order as before)."""
        return {"changed": changed, "key": self.key, "version": self.version, "package": PKG_NAME,
                "package_version": self.pkg_version, "deb": str(self.deb), "manifest": str(self.manifest),
                "prefix": self.prefix,
                "ffmpeg": f"{self.prefix}/bin/ffmpeg", "ffprobe": f"{self.prefix}/bin/ffprobe", "log": str(self.log)}

    def manifest_data(self, sha256: str, size: int, build_seconds: int, built_at: str) -> dict:
        return {"package": PKG_NAME, "package_version": self.pkg_version, "source_version": self.version,
                "upstream_version": self.upstream, "key": self.key, "release": self.release, "arch": self.arch,
                "prefix": self.prefix, "deb": self.deb.name, "sha256": sha256, "size": size,
                "build_seconds": build_seconds, "built_at": built_at, "packaging_rev": PACKAGING_REV,
                "configure_flags": self.flags}


def setup(s: Settings, arch: str | None = None) -> Artifact:
    if not s.prefix_base.startswith("/"):
        raise Fail(f"--prefix-base must be an absolute directory, not {s.prefix_base!r}")
    version = resolve_version(s)
    arch = arch or dpkg_arch()
    flags = s.flags
    key = compute_key(s.release, version, arch, s.prefix_base, flags)
    upstream = upstream_of(version)
    return Artifact(key=key, version=version, upstream=upstream, prefix=f"{s.prefix_base}/ffmpeg-{upstream}-lab",
                    pkg_version=f"{noepoch_of(version)}+lab.{key[:8]}", arch=arch, release=s.release, flags=flags,
                    art=s.store / "artifacts" / key)


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def artifact_problem(directory: Path, deb_name: str) -> str | None:
    """None if DIRECTORY holds a good artifact (manifest + .deb whose sha256 matches), else
    what is wrong with it ("absent" when there is nothing at all)."""
    manifest = directory / "manifest.json"
    if not manifest.exists():
        if (directory / "build.log").exists():
            return f"no manifest.json: a build did not finish (see {directory / 'build.log'})"
        return "absent"
    try:
        m = read_manifest(manifest)
    except (OSError, ValueError) as e:
        return str(e)
    sha = m.get("sha256")
    if not isinstance(sha, str) or not re.fullmatch(r"[0-9a-f]{64}", sha):
        return f"{manifest} has no sha256"
    deb = directory / deb_name
    if not deb.is_file():
        return f"{deb_name} is missing"
    if sha256_of(deb) != sha:
        return f"{deb} does not match the sha256 of its manifest (a truncated or damaged copy)"
    return None


def require_artifact(s: Settings, a: Artifact) -> None:
    problem = artifact_problem(a.art, a.deb.name)
    if problem == "absent":
        raise Fail(f"no artifact for key {a.key} in {s.store}")
    if problem:
        raise Fail(f"no usable artifact for key {a.key} in {s.store}: {problem}; `{PROG} ensure` rebuilds it")


def copy_artifact(src: Path, dst: Path, deb_name: str) -> None:
    """Copy an artifact; the manifest last (renamed into place): a half copy never looks done."""
    dst.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src / deb_name, dst / deb_name)
    if (src / "build.log").exists():
        shutil.copyfile(src / "build.log", dst / "build.log")
    shutil.copyfile(src / "manifest.json", dst / "manifest.json.tmp")
    os.replace(dst / "manifest.json.tmp", dst / "manifest.json")


def write_manifest(a: Artifact, build_seconds: int) -> None:
    built_at = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    data = a.manifest_data(sha256_of(a.deb), a.deb.stat().st_size, build_seconds, built_at)
    tmp = a.manifest.with_name("manifest.json.tmp")
    tmp.write_text(json.dumps(data) + "\n", encoding="utf-8")
    os.replace(tmp, a.manifest)


# ---------------------------------------------------------------- sources
def deb_src_stanzas(sources_text: str) -> str:
    """For every enabled deb822 stanza of type `deb`: the same stanza as `Types: deb-src`
    (URIs, Suites, Components, Signed-By incl. inline multi-line keys copied verbatim;
    comments dropped). Empty if there is none."""
    out = []
    for block in re.split(r"\n[ \t]*\n", sources_text):
        fields, is_deb, enabled = [], False, True
        for line in block.splitlines():
            if not line.strip() or line.startswith("#"):
                continue
            name = line.split(":", 1)[0].strip().lower() if not line[:1].isspace() else ""
            if name == "types":
                is_deb = "deb" in line.split(":", 1)[1].split()
            elif name == "enabled":
                enabled = line.split(":", 1)[1].strip().lower() not in ("no", "false", "0")
            else:
                fields.append(line + "\n")
        if is_deb and enabled and fields:
            out.append("Types: deb-src\n" + "".join(fields))
    return "\n".join(out)


def cmd_sources(s: Settings) -> int:
    if any(line.startswith("Package: ffmpeg") for line in apt_showsrc().splitlines()):
        say("deb-src already configured")
        print("unchanged")
        return 0
    try:
        text = s.apt_sources.read_text(encoding="utf-8")
    except OSError as e:
        raise Fail(f"{s.apt_sources} not readable ({e.strerror}): cannot derive a deb-src stanza; add a deb-src "
                   "entry for ffmpeg's suite yourself") from None
    stanzas = deb_src_stanzas(text)
    if not stanzas:
        raise Fail(f"no 'Types: deb' stanza found in {s.apt_sources}")
    result = "unchanged"
    try:
        current = s.deb_src_file.read_text(encoding="utf-8")
    except OSError:
        current = None
    if current != stanzas:
        write_atomic(s.deb_src_file, stanzas, 0o644)
        say(f"wrote {s.deb_src_file}")
        result = "changed"
    run_to_stderr(["apt-get", "update", "-q", *APT_LOCK], "apt-get update")  # (re)load the Sources indexes
    print(result)
    return 0


def write_atomic(path: Path, text: str, mode: int) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def run_to_stderr(argv: list[str], what: str, cwd: Path | None = None, env: dict | None = None) -> None:
    """Run a tool whose output is for the user (stdout is kept for our JSON line); its last
    error line goes into ours."""
    sys.stderr.flush()
    try:
        res = subprocess.run(argv, cwd=cwd, env=env, stdout=sys.stderr.fileno(), stderr=subprocess.PIPE,
                             text=True, stdin=subprocess.DEVNULL, check=False)
    except FileNotFoundError:
        raise Fail(f"{argv[0]} not found: this runs on Debian (apt, dpkg)") from None
    sys.stderr.write(res.stderr)
    if res.returncode != 0:
        errors = [line for line in res.stderr.splitlines() if line.startswith("E:")] or res.stderr.splitlines()
        last = f": {errors[-1].strip()}" if errors else ""
        raise Fail(f"{what} failed (exit {res.returncode}){last}")


# ---------------------------------------------------------------- fetch and build
def cmd_fetch(s: Settings, version: str | None = None) -> int:
    version = version or resolve_version(s)
    src = s.store / "src"
    dsc = src / f"ffmpeg_{noepoch_of(version)}.dsc"
    if dsc.exists():
        say(f"source {version} already in {src}")
        return 0
    src.mkdir(parents=True, exist_ok=True)
    say(f"downloading Debian source ffmpeg={version} into {src}")
    try:
        run_to_stderr(["apt-get", "source", "--download-only", "-q", "-o", "APT::Sandbox::User=root",
                       f"ffmpeg={version}"], f"apt-get source ffmpeg={version}", cwd=src)
    except Fail as e:
        raise Fail(f"{e}; is a deb-src entry configured? (run '{PROG} sources')") from None
    if not dsc.exists():
        raise Fail(f"expected {dsc} after apt-get source")
    return 0


def check_space(path: Path, need_mb: int) -> None:
    probe = path
    while not probe.exists():
        probe = probe.parent
    free_mb = shutil.disk_usage(probe).free // (1 << 20)
    if free_mb < need_mb:
        raise Fail(f"only {free_mb} MB free in {probe}: building FFmpeg needs about {need_mb} MB there; free some "
                   "space or pass --build-dir DIR on a larger disk")


def tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


class Builder:
    """One build: every step's output appended to the artifact's build.log."""

    def __init__(self, s: Settings, a: Artifact):
        self.s, self.a = s, a
        self.jobs = s.jobs or len(os.sched_getaffinity(0))
        self.work = s.build_root / a.key
        self.src = self.work / "src"

    def log(self, text: str) -> None:
        with self.a.log.open("a", encoding="utf-8") as f:
            f.write(text + "\n")

    def step(self, title: str, argv: list[str], failure: str, cwd: Path | None = None, show_tail: bool = False,
             **kw) -> None:
        self.log(f"== {title}")
        with self.a.log.open("ab") as out:
            try:
                rc = subprocess.run(argv, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    check=False, **kw).returncode
            except FileNotFoundError:
                raise Fail(f"{argv[0]} not found: install the build dependencies (role ffmpeg: "
                           "ffmpeg_build_packages)") from None
        if rc != 0:
            self.fail(failure, show_tail)

    def fail(self, message: str, show_tail: bool) -> None:
        last = tail(self.a.log)
        if show_tail and last:
            print(last, file=sys.stderr)
        if "No space left on device" in last:
            message += f"; the disk is full: free some space in {self.s.build_root} (or pass --build-dir)"
        raise Fail(message)

    def run(self) -> int:
        a, s = self.a, self.s
        check_space(s.build_root, BUILD_SPACE_MB)
        a.art.mkdir(parents=True, exist_ok=True)
        a.log.write_text("")
        say(f"building FFmpeg {a.version} (key {a.key}); follow the log with: tail -f {a.log}")
        t0 = time.monotonic()
        shutil.rmtree(self.work, ignore_errors=True)
        self.work.mkdir(parents=True)
        stamp = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
        self.log(f"== {stamp} {PROG} key={a.key} version={a.version} prefix={a.prefix} jobs={self.jobs}")
        self.step("unpack", ["dpkg-source", "--no-check", "-x", str(s.store / "src" / f"ffmpeg_"
                                                                     f"{noepoch_of(a.version)}.dsc"), str(self.src)],
                  f"unpacking the source failed, see {a.log}")
        say("configure")
        self.step(f"configure {' '.join(a.flags)} --prefix={a.prefix}",
                  ["./configure", f"--prefix={a.prefix}", "--extra-version=demolab", *a.flags],
                  f"configure failed, see {a.log} (and {self.src}/ffbuild/config.log)", cwd=self.src, show_tail=True)
        self.make()
        say("stage + package")
        stage = self.work / "stage"
        self.step("make install (staged)", ["make", "install", f"DESTDIR={stage}"], f"make install failed, see {a.log}",
                  cwd=self.src)
        self.package(stage)
        seconds = round(time.monotonic() - t0)
        write_manifest(a, seconds)
        self.log(f"== done in {seconds} s: {a.deb}")
        if not s.keep_build:
            shutil.rmtree(self.work, ignore_errors=True)
        say(f"built {a.deb} in {seconds} s")
        return seconds

    def make(self) -> None:
        every = self.s.progress_every
        say(f"make -j{self.jobs} (several minutes; progress every {every}s)")
        self.log(f"== make -j{self.jobs}")
        t0 = time.monotonic()
        compiled, last, offset = 0, "", self.a.log.stat().st_size
        with self.a.log.open("ab") as out:
            try:
                proc = subprocess.Popen(["nice", "-n", "10", "make", f"-j{self.jobs}"], cwd=self.src, stdout=out,
                                        stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
            except FileNotFoundError:
                raise Fail("nice or make not found: install the build dependencies (role ffmpeg: "
                           "ffmpeg_build_packages)") from None
            try:
                while True:
                    try:
                        rc = proc.wait(timeout=every)
                        break
                    except subprocess.TimeoutExpired:
                        pass
                    with self.a.log.open("rb") as f:  # only what make wrote since the last look
                        f.seek(offset)
                        new = f.read()
                    cut = new.rfind(b"\n") + 1
                    offset += cut
                    for line in new[:cut].decode(errors="replace").splitlines():
                        if line.startswith("CC"):
                            compiled += 1
                            last = line.split()[1] if len(line.split()) > 1 else last
                    took = round(time.monotonic() - t0)
                    say(f"make: {compiled} files compiled, {took // 60}m{took % 60}s, last: {last}")
            except BaseException:
                proc.terminate()
                proc.wait()
                raise
        if rc != 0:
            self.fail(f"make failed (exit {rc}), see {self.a.log}", show_tail=True)

    def package(self, stage: Path) -> None:
        a = self.a
        pkg = self.work / "pkg"
        root = pkg / "root"
        shutil.rmtree(pkg, ignore_errors=True)
        bindir = root / a.prefix.lstrip("/") / "bin"
        share = root / a.prefix.lstrip("/") / "share/demolab"
        for d in (bindir, share, root / "DEBIAN", pkg / "debian"):
            d.mkdir(parents=True, exist_ok=True)
        for name in ("ffmpeg", "ffprobe"):
            built = stage / a.prefix.lstrip("/") / "bin" / name
            if not built.is_file():
                raise Fail(f"{built} missing after make install, see {a.log}")
            shutil.copyfile(built, bindir / name)
            (bindir / name).chmod(0o755)
        (share / "configure-flags.txt").write_text("".join(f"{f}\n" for f in a.flags))
        (pkg / "debian/control").write_text(f"Source: {PKG_NAME}\nMaintainer: demolab <root@localhost>\n\n"
                                            f"Package: {PKG_NAME}\nArchitecture: any\n")
        rel_bin = f"root{a.prefix}/bin"
        with a.log.open("a") as err:
            res = run_quiet(["dpkg-shlibdeps", "-O", f"-e{rel_bin}/ffmpeg", f"-e{rel_bin}/ffprobe"], cwd=pkg)
            err.write(res.stderr)
        depends = next((line.split("=", 1)[1] for line in res.stdout.splitlines()
                        if line.startswith("shlibs:Depends=")), "")
        if res.returncode != 0 or not depends:
            raise Fail(f"dpkg-shlibdeps found no dependencies, see {a.log}")
        (root / "DEBIAN/control").write_text(
            f"Package: {PKG_NAME}\nVersion: {a.pkg_version}\nArchitecture: {a.arch}\n"
            f"Maintainer: demolab <root@localhost>\nInstalled-Size: {installed_size_kib(root)}\n"
            f"Depends: {depends}\nSection: video\nPriority: optional\n"
            "Description: lean FFmpeg build for demolab (x11grab, VP8/VP9, Opus, Vorbis, x264)\n"
            f" Built by {PROG} from the Debian source package ffmpeg {a.version},\n"
            f" installed under {a.prefix} (does not touch /usr/bin/ffmpeg). Key {a.key}.\n")
        tmp = a.deb.with_name(a.deb.name + ".tmp")
        self.step("dpkg-deb", ["dpkg-deb", "--build", "--root-owner-group", str(root), str(tmp)],
                  f"dpkg-deb failed, see {a.log}")
        os.replace(tmp, a.deb)


def installed_size_kib(root: Path) -> int:
    """Disk usage of the package tree in KiB, as `du -sk` counts it."""
    blocks = os.lstat(root).st_blocks
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            blocks += os.lstat(os.path.join(dirpath, name)).st_blocks
    return math.ceil(blocks * 512 / 1024)


# ---------------------------------------------------------------- commands
def ensure(s: Settings) -> dict:
    a = setup(s)
    (s.store / "artifacts").mkdir(parents=True, exist_ok=True)
    with (s.store / ".lock").open("w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            say(f"waiting for another {PROG} working in {s.store} (lock {s.store / '.lock'})")
            fcntl.flock(lock, fcntl.LOCK_EX)
        problem = artifact_problem(a.art, a.deb.name)
        if problem is None:
            return a.result(False)
        if problem != "absent":
            say(f"artifact {a.key} in {s.store} is not usable ({problem}): making it again")
        cached = s.cache / "artifacts" / a.key if s.cache else None
        if cached and artifact_problem(cached, a.deb.name) is None:
            say(f"artifact {a.key} found in cache {s.cache}")
            copy_artifact(cached, a.art, a.deb.name)
            return a.result(True)
        cmd_fetch(s, a.version)
        Builder(s, a).run()
        if cached:
            copy_artifact(a.art, cached, a.deb.name)
        return a.result(True)


def emit(result: dict) -> int:
    print(json.dumps(result), flush=True)
    return 0


def cmd_install(s: Settings) -> int:
    result = ensure(s)
    res = run_quiet(["dpkg-query", "-W", "-f=${Version}", PKG_NAME])
    current = res.stdout.strip() if res.returncode == 0 else ""
    if current != result["package_version"]:
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        run_to_stderr(["apt-get", "install", "-y", "-q", *APT_LOCK, result["deb"]],
                      f"apt-get install {result['deb']}", env=env)
    return emit(result)


def cmd_key(s: Settings) -> int:
    print(setup(s).key)
    return 0


def cmd_flags(s: Settings) -> int:
    print("\n".join(s.flags))
    return 0


def cmd_deb(s: Settings) -> int:
    a = setup(s)
    require_artifact(s, a)
    print(a.deb)
    return 0


def cmd_describe(s: Settings) -> int:
    a = setup(s)
    require_artifact(s, a)
    return emit(a.result(False))


HANDLERS = {"sources": cmd_sources, "fetch": cmd_fetch, "flags": cmd_flags, "key": cmd_key,
            "ensure": lambda s: emit(ensure(s)), "install": cmd_install, "deb": cmd_deb, "describe": cmd_describe}


def lab_store(env: dict[str, str]) -> Path:
    """The lab's FFmpeg store: store_dir of lab.json, /ffmpeg."""
    path = Path(env.get("DEMOLAB_LAB_JSON") or LAB_JSON)
    try:
        return Path(json.loads(path.read_text())["store_dir"]) / "ffmpeg"
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise Fail(f"no --store given and the lab's settings {path} cannot be read ({exc}): "
                   "give --store DIR (or LAB_FFMPEG_STORE), or provision the lab first (make lab)") from None


def main(argv: list[str] | None = None, env: dict[str, str] | None = None) -> int:
    env = dict(os.environ if env is None else env)
    try:
        cmd, s = parse_args(sys.argv[1:] if argv is None else argv, env)
        if cmd == "help":
            print(__doc__.strip())
            return 0
        s.release = s.release or os_release_codename()
        s.store = Path(os.path.abspath(s.store or lab_store(env)))
        s.cache = Path(os.path.abspath(s.cache)) if s.cache else None
        s.build_root = Path(os.path.abspath(s.build_root))
        os.umask(0o022)  # the store is served to other hosts; dpkg-deb wants 0755 dirs
        return HANDLERS[cmd](s)
    except Fail as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 1
    except OSError as e:
        where = f" ({e.filename})" if e.filename else ""
        if e.errno == errno.ENOSPC:
            print(f"{PROG}: error: no space left on device{where}: free some space and run again", file=sys.stderr)
        else:
            print(f"{PROG}: error: {e.strerror or e}{where}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
