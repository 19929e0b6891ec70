"""lab-ffmpeg-build (roles/ffmpeg/files/lab_ffmpeg_build.py) without a build: arguments, the
artifact key (the same keys as the bash version had, so existing artifacts stay valid), the
manifest, the store's version pin, the deb-src stanza, and the errors for bad input (a missing,
half-built, truncated or corrupt artifact). The program runs for real (dpkg, dpkg-deb, flock)
on small .deb artifacts made here; the build itself is covered by tests/media."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PROGRAM = REPO / "roles/ffmpeg/files/lab_ffmpeg_build.py"
sys.path.insert(0, str(PROGRAM.parent))
import lab_ffmpeg_build as lfb  # noqa: E402 - the role's file, found via sys.path above

BOOKWORM = "7:5.1.9-0+deb12u1"
TRIXIE = "7:7.1.5-0+deb13u1"


# A lab's settings as the lab role writes them (the program's default store is store_dir/ffmpeg).
LAB_JSON = Path(tempfile.mkdtemp(prefix="lab-ffmpeg-build-test-")) / "lab.json"
LAB_JSON.write_text(json.dumps({"store_dir": str(LAB_JSON.parent / "store")}))


def cli(*args, env=None, check_rc=None) -> subprocess.CompletedProcess:
    """The program as the role runs it (its own shebang), in a clean environment."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("LAB_FFMPEG_", "LAB_APT_", "LAB_DEB_"))}
    base.setdefault("LAB_FFMPEG_RELEASE", "bookworm")
    base["DEMOLAB_LAB_JSON"] = str(LAB_JSON)  # never this machine's own lab
    res = subprocess.run([str(PROGRAM), *map(str, args)], capture_output=True, text=True, timeout=60,
                         env={**base, **(env or {})}, stdin=subprocess.DEVNULL)
    if check_rc is not None:
        assert res.returncode == check_rc, res.stdout + res.stderr
    return res


def error_line(res: subprocess.CompletedProcess) -> str:
    """The last stderr line, which must be the one-line error."""
    assert res.returncode == 1, res.stdout + res.stderr
    assert res.stdout == ""
    line = res.stderr.strip().splitlines()[-1]
    assert line.startswith("lab-ffmpeg-build: error: "), res.stderr
    return line


# ---------------------------------------------------------------- arguments
def test_options_in_any_order_both_spellings_and_env():
    env = {"LAB_FFMPEG_STORE": "/env/store", "LAB_FFMPEG_EXTRA_FLAGS": "--enable-a --enable-b", "LAB_FFMPEG_JOBS": "3"}
    cmd, s = lfb.parse_args(["--jobs=4", "key", "--store", "/s", "--extra-flag", "--enable-c",
                             "--extra-flag=--enable-d", "--refresh", "--keep-build", "--cache="], env)
    assert cmd == "key" and s.store == Path("/s") and s.jobs == 4 and s.refresh and s.keep_build
    assert s.cache is None
    assert s.flags[-4:] == ["--enable-a", "--enable-b", "--enable-c", "--enable-d"]
    assert s.flags[: len(lfb.BASE_FLAGS)] == list(lfb.BASE_FLAGS)
    _, s = lfb.parse_args(["flags"], env)
    assert s.store == Path("/env/store") and s.jobs == 3
    _, s = lfb.parse_args(["flags"], {})
    assert s.store is None and s.build_root == Path("/var/tmp/demolab-ffmpeg-build")


def test_the_default_store_is_the_labs_from_lab_json(tmp_path):
    lab_json = tmp_path / "lab.json"
    lab_json.write_text('{"store_dir": "/srv/lab-store"}')
    assert lfb.lab_store({"DEMOLAB_LAB_JSON": str(lab_json)}) == Path("/srv/lab-store/ffmpeg")
    with pytest.raises(lfb.Fail, match=r"no --store given and the lab's settings .*/missing.json cannot be read"):
        lfb.lab_store({"DEMOLAB_LAB_JSON": str(tmp_path / "missing.json")})
    assert lfb.parse_args(["--help", "--frob"], {})[0] == "help"


@pytest.mark.parametrize(("args", "message"), [
    ([], "no command (see --help)"),
    (["frob"], "unknown command frob (see --help)"),
    (["key", "deb"], "one command only"),
    (["--frob", "key"], "unknown option --frob (see --help)"),
    (["key", "--store"], "option --store needs a value (see --help)"),
    (["--store=", "key"], "option --store needs a non-empty value (see --help)"),
    (["--jobs", "0", "ensure"], "--jobs must be a whole number >= 1, not '0'"),
    (["--jobs", "two", "ensure"], "--jobs must be a whole number >= 1, not 'two'"),
    (["--version", "../../etc", "key"], "--version '../../etc' is not a Debian version (e.g. 7:5.1.9-0+deb12u1)"),
    (["--version", BOOKWORM, "--prefix-base", "opt", "key"], "--prefix-base must be an absolute directory, not 'opt'"),
])
def test_bad_arguments_are_one_line_errors_with_exit_1(args, message):
    assert error_line(cli(*args)) == f"lab-ffmpeg-build: error: {message}"


def test_bad_environment_value_is_an_error():
    res = cli("flags", env={"LAB_FFMPEG_PROGRESS_EVERY": "soon"})
    assert error_line(res).endswith("LAB_FFMPEG_PROGRESS_EVERY must be a whole number >= 1, not 'soon'")


def test_help_lists_every_command_and_option():
    out = cli("--help", check_rc=0).stdout
    for word in (*lfb.COMMANDS, *lfb.VALUE_OPTIONS, "--refresh", "--keep-build", "LAB_FFMPEG_STORE"):
        assert word in out, word


def test_flags_are_the_lean_list_plus_extras():
    out = cli("--extra-flag=--enable-encoder=flac", "flags", check_rc=0).stdout.splitlines()
    assert out == [*lfb.BASE_FLAGS, "--enable-encoder=flac"]
    assert "--enable-indev=xcbgrab,pulse,alsa,lavfi" in out and "--disable-network" in out


# ---------------------------------------------------------------- the key
# Computed by the bash lab-ffmpeg-build this program replaces (same release, version, arch,
# prefix base, flags): an artifact built before the rewrite is found, not rebuilt.
@pytest.mark.parametrize(("release", "version", "prefix_base", "extra", "key"), [
    ("bookworm", BOOKWORM, "/opt", [], "e6243c2c68fabaae"),
    ("trixie", TRIXIE, "/opt", [], "67ac80eaef9bb89a"),
    ("bookworm", "7:5.1.0-1", "/opt", [], "c17b07de8136ca42"),
    ("bookworm", BOOKWORM, "/opt", ["--enable-encoder=flac"], "1f5830911e508182"),
    ("bookworm", BOOKWORM, "/usr/local", [], "6a9972f3b0d0685b"),
])
def test_key_is_the_bash_versions_key(release, version, prefix_base, extra, key):
    assert lfb.compute_key(release, version, "amd64", prefix_base, [*lfb.BASE_FLAGS, *extra]) == key


def test_key_depends_on_release_version_arch_prefix_and_flags():
    base = ("bookworm", BOOKWORM, "amd64", "/opt", list(lfb.BASE_FLAGS))
    keys = {lfb.compute_key(*base)}
    for i, other in enumerate(["trixie", "7:5.1.10-0+deb12u1", "arm64", "/srv", [*lfb.BASE_FLAGS, "--enable-x"]]):
        keys.add(lfb.compute_key(*base[:i], other, *base[i + 1:]))
    assert len(keys) == 6


def test_key_command_follows_release_and_version():
    a = cli("--version", BOOKWORM, "key", check_rc=0).stdout.strip()
    b = cli("--version", BOOKWORM, "key", env={"LAB_FFMPEG_RELEASE": "trixie"}, check_rc=0).stdout.strip()
    c = cli("--version", TRIXIE, "key", env={"LAB_FFMPEG_RELEASE": "trixie"}, check_rc=0).stdout.strip()
    arch = lfb.dpkg_arch()
    assert a == lfb.compute_key("bookworm", BOOKWORM, arch, "/opt", list(lfb.BASE_FLAGS))
    assert len({a, b, c}) == 3


def test_versions_and_release_parsing(tmp_path):
    assert lfb.upstream_of(BOOKWORM) == "5.1.9" and lfb.noepoch_of(BOOKWORM) == "5.1.9-0+deb12u1"
    assert lfb.upstream_of("5.1") == "5.1" and lfb.noepoch_of("5.1") == "5.1"
    assert lfb.newest_version(["7:5.1.9-0+deb12u1", "7:5.1.10-0+deb12u1", "", "7:5.1.9-0+deb12u2"]) == \
        "7:5.1.10-0+deb12u1"  # dpkg's ordering, not the string's
    osr = tmp_path / "os-release"
    osr.write_text('PRETTY_NAME="Debian GNU/Linux 13 (trixie)"\nVERSION_CODENAME="trixie"\n')
    assert lfb.os_release_codename(str(osr)) == "trixie"
    osr.write_text("ID=debian\nVERSION_CODENAME=bookworm\n")
    assert lfb.os_release_codename(str(osr)) == "bookworm"
    osr.write_text("ID=debian\n")
    assert lfb.os_release_codename(str(osr)) == "unknown"
    assert lfb.os_release_codename(str(tmp_path / "missing")) == "unknown"


def test_store_source_pins_the_version(tmp_path):
    """The newest .dsc in STORE/src is the version (dpkg ordering), whatever apt offers."""
    src = tmp_path / "store/src"
    src.mkdir(parents=True)
    for v in ("5.1.9-0+deb12u1", "5.1.10-1"):
        (src / f"ffmpeg_{v}.dsc").write_text("-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA512\n\n"
                                             f"Format: 3.0 (quilt)\nSource: ffmpeg\nVersion: 7:{v}\n")
    pinned = cli("--store", tmp_path / "store", "key", check_rc=0).stdout.strip()
    assert pinned == cli("--version", "7:5.1.10-1", "key", check_rc=0).stdout.strip()


# ---------------------------------------------------------------- artifacts
def make_artifact(store: Path, version: str = BOOKWORM, release: str = "bookworm") -> lfb.Artifact:
    """A real (tiny) .deb under the name the key gives it, and its manifest."""
    s = lfb.Settings(store=store, version=version, release=release)
    a = lfb.setup(s)
    root = store.parent / f"pkgroot-{a.key}"
    (root / "DEBIAN").mkdir(parents=True)
    (root / "DEBIAN/control").write_text(f"Package: {lfb.PKG_NAME}\nVersion: {a.pkg_version}\nArchitecture: "
                                         f"{a.arch}\nMaintainer: t <t@localhost>\nDescription: test\n")
    a.art.mkdir(parents=True)
    subprocess.run(["dpkg-deb", "--build", "--root-owner-group", str(root), str(a.deb)], check=True,
                   capture_output=True, timeout=60)
    a.log.write_text("== test build\n")
    lfb.write_manifest(a, 7)
    return a


@pytest.fixture
def artifact(tmp_path) -> lfb.Artifact:
    return make_artifact(tmp_path / "store")


def test_manifest_is_one_json_line_with_every_field(artifact):
    text = artifact.manifest.read_text()
    assert text.endswith("}\n") and text.count("\n") == 1
    m = json.loads(text)
    assert list(m) == ["package", "package_version", "source_version", "upstream_version", "key", "release", "arch",
                       "prefix", "deb", "sha256", "size", "build_seconds", "built_at", "packaging_rev",
                       "configure_flags"]
    assert m["configure_flags"] == list(lfb.BASE_FLAGS)  # commas inside a flag stay as they are
    assert m["deb"] == artifact.deb.name and m["size"] == artifact.deb.stat().st_size
    assert m["source_version"] == BOOKWORM and m["upstream_version"] == "5.1.9" and m["release"] == "bookworm"
    assert m["prefix"] == "/opt/ffmpeg-5.1.9-lab" and m["build_seconds"] == 7
    assert m["package_version"] == f"5.1.9-0+deb12u1+lab.{m['key'][:8]}"
    assert lfb.read_manifest(artifact.manifest) == m


def test_describe_deb_and_ensure_use_a_good_artifact(artifact):
    store = artifact.art.parents[1]
    out = cli("--store", store, "--version", BOOKWORM, "describe", check_rc=0).stdout
    assert out.count("\n") == 1
    result = json.loads(out)
    assert result == {"changed": False, "key": artifact.key, "version": BOOKWORM, "package": "demolab-ffmpeg",
                      "package_version": artifact.pkg_version, "deb": str(artifact.deb),
                      "manifest": str(artifact.manifest), "prefix": "/opt/ffmpeg-5.1.9-lab",
                      "ffmpeg": "/opt/ffmpeg-5.1.9-lab/bin/ffmpeg", "ffprobe": "/opt/ffmpeg-5.1.9-lab/bin/ffprobe",
                      "log": str(artifact.log)}
    assert cli("--store", store, "--version", BOOKWORM, "deb", check_rc=0).stdout == f"{artifact.deb}\n"
    res = cli("--store", store, "--version", BOOKWORM, "ensure", check_rc=0)
    assert json.loads(res.stdout) == result and "building" not in res.stderr


def test_relative_store_gives_absolute_paths(artifact):
    store = artifact.art.parents[1]
    env = {**os.environ, "LAB_FFMPEG_RELEASE": "bookworm"}
    res = subprocess.run([str(PROGRAM), "--store", "store", "--version", BOOKWORM, "deb"], cwd=store.parent,
                         capture_output=True, text=True, timeout=60, env=env)
    assert res.returncode == 0 and res.stdout.strip() == str(artifact.deb), res.stderr


def test_missing_artifact(tmp_path):
    res = cli("--store", tmp_path / "store", "--version", BOOKWORM, "describe")
    key = lfb.compute_key("bookworm", BOOKWORM, lfb.dpkg_arch(), "/opt", list(lfb.BASE_FLAGS))
    assert error_line(res) == f"lab-ffmpeg-build: error: no artifact for key {key} in {tmp_path / 'store'}"
    assert error_line(cli("--store", tmp_path / "store", "--version", BOOKWORM, "deb")) == error_line(res)


def damage_truncated(a):
    a.deb.write_bytes(a.deb.read_bytes()[:100])


def damage_deb_missing(a):
    a.deb.unlink()


def damage_manifest_corrupt(a):
    a.manifest.write_text('{"package": "demolab-ffmpeg", "sha256": ')


def damage_manifest_binary(a):
    a.manifest.write_bytes(b"\xff\xfe\x00garbage")


def damage_manifest_no_sha(a):
    m = json.loads(a.manifest.read_text())
    del m["sha256"]
    a.manifest.write_text(json.dumps(m))


def damage_manifest_list(a):
    a.manifest.write_text("[1, 2]")


def damage_unfinished(a):
    a.manifest.unlink()
    a.deb.unlink()


@pytest.mark.parametrize(("damage", "says"), [
    (damage_truncated, "does not match the sha256 of its manifest (a truncated or damaged copy)"),
    (damage_deb_missing, ".deb is missing"),
    (damage_manifest_corrupt, "manifest.json is not valid JSON (Expecting value at line 1 column 41)"),
    (damage_manifest_binary, "manifest.json is not text"),
    (damage_manifest_no_sha, "manifest.json has no sha256"),
    (damage_manifest_list, "manifest.json is not a JSON object"),
    (damage_unfinished, "no manifest.json: a build did not finish (see "),
])
def test_damaged_artifact_is_named_in_the_error(artifact, damage, says):
    damage(artifact)
    store = artifact.art.parents[1]
    for cmd in ("describe", "deb"):
        line = error_line(cli("--store", store, "--version", BOOKWORM, cmd))
        assert line.startswith(f"lab-ffmpeg-build: error: no usable artifact for key {artifact.key} in {store}: ")
        assert says in line and line.endswith("`lab-ffmpeg-build ensure` rebuilds it"), line


def test_ensure_takes_a_good_artifact_from_the_cache(artifact, tmp_path):
    """Store empty (or holding a damaged copy), cache good: copied, manifest last, changed once."""
    cache = artifact.art.parents[1]
    store = tmp_path / "other-store"
    args = ("--store", store, "--cache", cache, "--version", BOOKWORM, "ensure")
    res = cli(*args, check_rc=0)
    assert json.loads(res.stdout)["changed"] is True and "found in cache" in res.stderr
    copied = store / "artifacts" / artifact.key
    assert sorted(p.name for p in copied.iterdir()) == sorted(["build.log", "manifest.json", artifact.deb.name])
    assert (copied / artifact.deb.name).read_bytes() == artifact.deb.read_bytes()
    assert json.loads(cli(*args, check_rc=0).stdout)["changed"] is False
    (copied / artifact.deb.name).write_bytes(b"truncated")
    res = cli(*args, check_rc=0)
    assert json.loads(res.stdout)["changed"] is True and "is not usable" in res.stderr
    assert (copied / artifact.deb.name).read_bytes() == artifact.deb.read_bytes()


def test_offline_version_is_the_newest_artifact_of_this_release(tmp_path):
    """No --version, no source in the store, apt knows nothing: the newest artifact of the same
    Debian release decides (never one of another release; a corrupt manifest is skipped)."""
    store = tmp_path / "store"
    make_artifact(store, "7:5.1.8-0+deb12u1", "bookworm")
    make_artifact(store, "7:5.1.10-0+deb12u1", "bookworm")
    make_artifact(store, TRIXIE, "trixie")
    bad = store / "artifacts/0000000000000000"
    bad.mkdir()
    (bad / "manifest.json").write_text("{oops")
    s = lfb.Settings(store=store, release="bookworm")
    assert sorted(lfb.artifact_versions(s, "bookworm")) == ["7:5.1.10-0+deb12u1", "7:5.1.8-0+deb12u1"]
    assert lfb.newest_version(lfb.artifact_versions(s, "bookworm")) == "7:5.1.10-0+deb12u1"
    assert lfb.artifact_versions(s, "trixie") == [TRIXIE]
    assert lfb.artifact_versions(s, "forky") == []


def test_copy_of_a_store_keeps_working(artifact, tmp_path):
    """A bundle: the store copied elsewhere is still a good store (paths in the manifest are names)."""
    moved = tmp_path / "bundle/ffmpeg"
    shutil.copytree(artifact.art.parents[1], moved)
    result = json.loads(cli("--store", moved, "--version", BOOKWORM, "describe", check_rc=0).stdout)
    assert result["deb"] == str(moved / "artifacts" / artifact.key / artifact.deb.name)


# ---------------------------------------------------------------- deb-src
SOURCES = """\
Types: deb
# a comment, dropped
URIs: http://deb.example.invalid/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb-src
URIs: http://deb.example.invalid/debian
Suites: bookworm
Components: main

Types: deb
Enabled: no
URIs: http://disabled.example.invalid/debian
Suites: bookworm
Components: main

Types: deb
URIs: http://deb.example.invalid/debian-security
Suites: bookworm-security
Components: main contrib
Signed-By:
 -----BEGIN PGP PUBLIC KEY BLOCK-----
 .
 mDMEZabcdef
 -----END PGP PUBLIC KEY BLOCK-----
"""

EXPECTED = """\
Types: deb-src
URIs: http://deb.example.invalid/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb-src
URIs: http://deb.example.invalid/debian-security
Suites: bookworm-security
Components: main contrib
Signed-By:
 -----BEGIN PGP PUBLIC KEY BLOCK-----
 .
 mDMEZabcdef
 -----END PGP PUBLIC KEY BLOCK-----
"""


def test_deb_src_stanzas_copy_every_enabled_deb_stanza():
    assert lfb.deb_src_stanzas(SOURCES) == EXPECTED
    assert lfb.deb_src_stanzas("Types: deb-src\nURIs: x\n") == ""
    assert lfb.deb_src_stanzas("") == ""


def test_role_installs_this_program_under_its_command_name():
    tasks = (REPO / "roles/ffmpeg/tasks/install.yml").read_text()
    assert f"src: {PROGRAM.name}" in tasks
    defaults = (REPO / "roles/ffmpeg/defaults/main.yml").read_text()
    assert "ffmpeg_script_path: /usr/local/sbin/lab-ffmpeg-build" in defaults
    assert PROGRAM.read_text().startswith("#!/usr/bin/python3\n") and os.access(PROGRAM, os.X_OK)


# ---------------------------------------------------------------- the build pipeline, small
# A tiny Debian source package named ffmpeg (native, 7:0.0.1) whose configure and Makefile
# behave like FFmpeg's: the real dpkg-source, make, dpkg-shlibdeps and dpkg-deb run on it in a
# few seconds. Extra configure flags make it fail where FFmpeg's build can fail.
CONFIGURE = r"""#!/bin/sh
prefix=/usr/local
for a in "$@"; do
  case $a in
    --prefix=*) prefix=${a#--prefix=} ;;
    --enable-test-configure-fails) mkdir -p ffbuild; echo "check failed" > ffbuild/config.log
                                   echo "ERROR: test configure failure"; exit 1 ;;
    --enable-test-make-fails) echo "FAIL=1" >> config.mak ;;
  esac
done
echo "PREFIX=$prefix" >> config.mak
echo "install prefix $prefix"
"""
MAKEFILE = """include config.mak
all: ffmpeg ffprobe
%.o: %.c
\t@echo "CC\\t$@"
\t@sleep 2
\t@$(if $(FAIL),echo "error: test make failure"; exit 1,cc -c -o $@ $<)
ffmpeg ffprobe: %: %.o
\t@echo "LD\\t$@"
\t@cc -o $@ $<
install: all
\tmkdir -p $(DESTDIR)$(PREFIX)/bin
\tcp ffmpeg ffprobe $(DESTDIR)$(PREFIX)/bin/
"""
PROGRAM_C = '#include <stdio.h>\nint main(void) { puts("%s lab build"); return 0; }\n'


@pytest.fixture(scope="module")
def tiny_source(tmp_path_factory) -> Path:
    """STORE/src holding the tiny ffmpeg_0.0.1.dsc (+ .tar.xz), made with dpkg-source -b."""
    src = tmp_path_factory.mktemp("tiny") / "src"
    tree = src / "ffmpeg-0.0.1"
    (tree / "debian/source").mkdir(parents=True)
    (tree / "configure").write_text(CONFIGURE)
    (tree / "configure").chmod(0o755)
    (tree / "Makefile").write_text(MAKEFILE)
    for name in ("ffmpeg", "ffprobe"):
        (tree / f"{name}.c").write_text(PROGRAM_C % name)
    (tree / "debian/source/format").write_text("3.0 (native)\n")
    (tree / "debian/control").write_text("Source: ffmpeg\nMaintainer: t <t@localhost>\n\n"
                                         "Package: ffmpeg\nArchitecture: any\nDescription: tiny\n")
    (tree / "debian/changelog").write_text("ffmpeg (7:0.0.1) unstable; urgency=medium\n\n  * tiny\n\n"
                                           " -- t <t@localhost>  Mon, 30 Nov 2026 00:00:00 +0000\n")
    subprocess.run(["dpkg-source", "-b", tree.name], cwd=src, check=True, capture_output=True, timeout=60)
    shutil.rmtree(tree)
    assert (src / "ffmpeg_0.0.1.dsc").exists()
    return src


def tiny_build(tmp_path: Path, tiny_source: Path, *extra) -> tuple[Path, subprocess.CompletedProcess]:
    store = tmp_path / "store"
    if not (store / "src").exists():
        shutil.copytree(tiny_source, store / "src")
    res = cli("--store", store, "--build-dir", tmp_path / "build", "--prefix-base", "/opt/t", "--jobs", "2",
              *extra, "ensure", env={"LAB_FFMPEG_PROGRESS_EVERY": "1"})
    return store, res


def test_build_packages_a_deb_with_manifest_log_and_progress(tmp_path, tiny_source):
    store, res = tiny_build(tmp_path, tiny_source, "--cache", tmp_path / "cache")
    assert res.returncode == 0, res.stderr
    result = json.loads(res.stdout)
    assert result["changed"] is True and result["version"] == "7:0.0.1"
    assert result["prefix"] == "/opt/t/ffmpeg-0.0.1-lab"
    for phase in ("building FFmpeg 7:0.0.1", "tail -f", "configure", "make -j2", "files compiled",
                  "stage + package", "built "):
        assert phase in res.stderr, (phase, res.stderr)
    deb, manifest = Path(result["deb"]), json.loads(Path(result["manifest"]).read_text())
    assert deb.name == f"demolab-ffmpeg_0.0.1+lab.{result['key'][:8]}_{lfb.dpkg_arch()}.deb"
    assert manifest["sha256"] == lfb.sha256_of(deb) and manifest["size"] == deb.stat().st_size
    assert manifest["key"] == result["key"] and manifest["release"] == "bookworm"
    log = Path(result["log"]).read_text()
    for step in ("== unpack", "== configure --disable-everything", "install prefix /opt/t/ffmpeg-0.0.1-lab",
                 "== make -j2", "CC\tffmpeg.o", "== make install (staged)", "== dpkg-deb", "== done in"):
        assert step in log, step
    info = subprocess.run(["dpkg-deb", "-f", str(deb)], capture_output=True, text=True, check=True).stdout
    assert "Package: demolab-ffmpeg" in info and f"Version: {result['package_version']}" in info
    assert "Depends: libc6" in info and f"Key {result['key']}" in info
    root = tmp_path / "root"
    subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True)
    ran = subprocess.run([str(root / result["ffmpeg"].lstrip("/"))], capture_output=True, text=True, check=True)
    assert ran.stdout == "ffmpeg lab build\n"
    flags = (root / "opt/t/ffmpeg-0.0.1-lab/share/demolab/configure-flags.txt").read_text().splitlines()
    assert flags == list(lfb.BASE_FLAGS) == manifest["configure_flags"]
    assert not (tmp_path / "build" / result["key"]).exists()  # scratch dir removed after success
    cached = tmp_path / "cache/artifacts" / result["key"]
    assert (cached / deb.name).read_bytes() == deb.read_bytes() and (cached / "manifest.json").exists()
    again = cli("--store", store, "--version", "7:0.0.1", "--prefix-base", "/opt/t", "ensure", check_rc=0)
    assert json.loads(again.stdout) == {**result, "changed": False} and "building" not in again.stderr


def test_failed_configure_names_the_logs(tmp_path, tiny_source):
    store, res = tiny_build(tmp_path, tiny_source, "--extra-flag=--enable-test-configure-fails")
    line = error_line(res)
    key = next(p.name for p in (store / "artifacts").iterdir())
    log = store / "artifacts" / key / "build.log"
    assert line == (f"lab-ffmpeg-build: error: configure failed, see {log} "
                    f"(and {tmp_path}/build/{key}/src/ffbuild/config.log)")
    assert "ERROR: test configure failure" in res.stderr  # the log's tail comes before the error
    # what is left is no artifact: describe says so, naming the log of the failed build
    again = error_line(cli("--store", store, "--prefix-base", "/opt/t", "--extra-flag=--enable-test-configure-fails",
                           "describe"))
    assert f"a build did not finish (see {log})" in again


def test_failed_make_names_the_log(tmp_path, tiny_source):
    store, res = tiny_build(tmp_path, tiny_source, "--extra-flag=--enable-test-make-fails")
    key = next(p.name for p in (store / "artifacts").iterdir())
    assert error_line(res) == (f"lab-ffmpeg-build: error: make failed (exit 2), see "
                               f"{store / 'artifacts' / key / 'build.log'}")
    assert "error: test make failure" in res.stderr


def test_full_disk_is_refused_before_building(tmp_path):
    with pytest.raises(lfb.Fail, match=r"^only \d+ MB free in .*: building FFmpeg needs about 1000000000 MB there; "
                                       r"free some space or pass --build-dir DIR on a larger disk$"):
        lfb.check_space(tmp_path / "not/yet/made", 10**9)


def test_missing_source_package_is_one_line(tmp_path):
    res = cli("--store", tmp_path / "store", "--version", "7:0.0.0-1", "fetch")
    line = error_line(res)
    assert line.startswith("lab-ffmpeg-build: error: apt-get source ffmpeg=7:0.0.0-1 failed (exit 100): E: "), line
    assert line.endswith("is a deb-src entry configured? (run 'lab-ffmpeg-build sources')"), line
