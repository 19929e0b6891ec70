"""A second host installs the lab FFmpeg from the artifact: no build, no network.

The "second host" is a fresh Debian 12 root (the test-host harness's cached debootstrap
rootfs, no compiler in it) run in its own network namespace (`unshare --net`: not even a
loopback route). What it gets is what the lab mirror holds: the FFmpeg store (.deb + manifest)
and a flat apt repo with the .deb's runtime libraries, filled here beforehand like the mirror
is filled at home. Inside, `lab-ffmpeg-build install` (what the role runs) must find the
artifact, install it with apt from the flat repo and produce a working FFmpeg.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import BUILD_SCRIPT, REPO, run

CHROOT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
TESTHOSTS = Path(os.environ.get("DEMOLAB_TESTHOSTS_CACHE", "/var/cache/demolab/testhosts"))


def base_tarball() -> Path:
    """The harness's cached rootfs; wait while another run is building it, else build it."""
    deadline = time.monotonic() + 900
    while True:
        found = sorted(TESTHOSTS.glob("bookworm-base-*.tar.zst"), key=lambda p: p.stat().st_mtime)
        if found:
            return found[-1]
        building = [p for p in TESTHOSTS.glob("rootfs-*") if time.time() - p.stat().st_mtime < 900]
        if not building or time.monotonic() > deadline:
            break
        time.sleep(5)
    sys.path.insert(0, str(REPO / "tests/harness"))
    import labhosts  # noqa: PLC0415 - only needed when no cached rootfs exists

    return labhosts.base_tarball()


@pytest.fixture(scope="module")
def fresh_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("second-host") / "root"
    root.mkdir()
    tar = subprocess.run(["tar", "--zstd", "--numeric-owner", "-C", str(root), "-xf", str(base_tarball())],
                         capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    assert tar.returncode == 0, tar.stderr
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def mirror(artifact, fresh_root, tmp_path_factory) -> Path:
    """At home, online: the store and a flat repo with the runtime libraries the fresh root lacks."""
    mirror = tmp_path_factory.mktemp("mirror")
    art = Path(artifact["deb"]).parent
    store = mirror / "ffmpeg/artifacts" / art.name
    shutil.copytree(art, store)
    debs = mirror / "debs"
    (debs / "partial").mkdir(parents=True)
    # apt resolves the .deb's Depends against the FRESH root's dpkg status and downloads what is
    # missing (the apt_mirror role's job in the real mirror).
    run(["apt-get", "-q", "-y", "--download-only", "--no-install-recommends",
         "-o", "Debug::NoLocking=1", "-o", f"Dir::State::status={fresh_root}/var/lib/dpkg/status",
         "-o", f"Dir::Cache::archives={debs}", "-o", "Dir::Cache::pkgcache=", "-o", "Dir::Cache::srcpkgcache=",
         "-o", "DPkg::Lock::Timeout=600", "install", artifact["deb"]], timeout=600)
    shutil.rmtree(debs / "partial")
    (debs / "lock").unlink(missing_ok=True)
    assert list(debs.glob("*.deb")), "no runtime libraries downloaded: is the fresh root already complete?"
    packages = run(["dpkg-scanpackages", "-m", "."], cwd=debs, timeout=120).stdout
    (debs / "Packages").write_text(packages)
    return mirror


def in_offline_root(root: Path, script: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run script as root inside ROOT with no network at all (new netns) and its own /proc."""
    outer = (f"mount -t proc proc {root}/proc && mount --rbind /dev {root}/dev && "
             f"exec chroot {root} /usr/bin/env -i PATH={CHROOT_PATH} HOME=/root "
             f"DEBIAN_FRONTEND=noninteractive /bin/bash -euc \"$0\"")
    return run(["unshare", "--net", "--mount", "--pid", "--fork", "--propagation", "private",
                "sh", "-c", outer, script], timeout=timeout, check=False)


def test_second_host_installs_artifact_without_build_or_network(artifact, fresh_root, mirror):
    assert not (fresh_root / "usr/bin/gcc").exists() and not (fresh_root / "usr/bin/make").exists()
    shutil.copytree(mirror, fresh_root / "srv/lab-mirror")
    shutil.copy2(BUILD_SCRIPT, fresh_root / "usr/local/sbin/lab-ffmpeg-build")
    sources = fresh_root / "etc/apt/sources.list.d"
    for f in sources.iterdir():
        f.unlink()
    (fresh_root / "etc/apt/sources.list").write_text("deb [trusted=yes] file:/srv/lab-mirror/debs ./\n")
    res = in_offline_root(fresh_root, """
        test "$(tail -n +2 /proc/net/route | wc -l)" -eq 0 || { echo "routes found" >&2; exit 1; }
        python3 -c 'import errno, socket, sys; s = socket.socket(); s.settimeout(3)
sys.exit(0 if s.connect_ex(("192.0.2.1", 80)) == errno.ENETUNREACH else "network reachable")'
        apt-get update -qq -o APT::Sandbox::User=root
        t0=$(date +%s%N)
        lab-ffmpeg-build --store /srv/lab-mirror/ffmpeg install > /tmp/result.json
        echo "install_ms=$(( ($(date +%s%N) - t0) / 1000000 ))"
        cat /tmp/result.json
        ffmpeg=$(python3 -c 'import json; print(json.load(open("/tmp/result.json"))["ffmpeg"])')
        "$ffmpeg" -hide_banner -encoders | grep -cE ' (libvpx-vp9|libopus|libx264) ' | sed 's/^/encoders=/'
        "$ffmpeg" -hide_banner -nostdin -v error -f lavfi -i testsrc2=size=320x240:rate=25 -t 2 \\
            -c:v libvpx-vp9 -deadline realtime -cpu-used 8 /tmp/out.webm
        "${ffmpeg%/*}/ffprobe" -v error -show_entries stream=codec_name -of csv=p=0 /tmp/out.webm | sed 's/^/codec=/'
        dpkg-query -W -f='pkg=${Package} ${Version} ${Status}\\n' demolab-ffmpeg
    """)
    assert res.returncode == 0, res.stdout + res.stderr
    out = res.stdout
    result = json.loads(next(line for line in out.splitlines() if line.startswith("{")))
    assert result["changed"] is False and result["key"] == artifact["key"], result
    assert "encoders=3" in out and "codec=vp9" in out, out
    assert f"pkg=demolab-ffmpeg {artifact['package_version']} install ok installed" in out, out
    assert "building" not in res.stderr, res.stderr
    seconds = int(next(line for line in out.splitlines() if line.startswith("install_ms=")).split("=")[1]) / 1000
    print(f"offline install on the second host: {seconds:.1f} s")
    assert seconds < 60, f"offline install took {seconds:.1f} s"
