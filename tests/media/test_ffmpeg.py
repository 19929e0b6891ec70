"""The lab FFmpeg artifact: capabilities, real transcode, offline install, bad input."""

from __future__ import annotations

import hashlib
import json
import subprocess
import time
from pathlib import Path

import pytest
from conftest import BUILD_SCRIPT, STORE, probe, run

ENCODERS = ["libvpx", "libvpx-vp9", "libvorbis", "libopus", "libx264"]


@pytest.mark.parametrize("encoder", ENCODERS)
def test_encoder_present(ffmpeg, encoder):
    out = run([ffmpeg, "-hide_banner", "-encoders"]).stdout
    assert any(line.split()[1:2] == [encoder] for line in out.splitlines() if line.startswith(" ")), out


@pytest.mark.parametrize("device", ["x11grab", "pulse", "alsa", "lavfi"])
def test_input_device_present(ffmpeg, device):
    out = run([ffmpeg, "-hide_banner", "-devices"]).stdout
    assert any(line.split()[1:2] == [device] for line in out.splitlines() if line.strip().startswith("D")), out


def test_lean_build_has_no_network_and_no_ffplay(artifact, lab_root):
    bindir = lab_root / artifact["ffmpeg"].lstrip("/")
    assert sorted(p.name for p in bindir.parent.iterdir()) == ["ffmpeg", "ffprobe"]
    protocols = run([bindir, "-hide_banner", "-protocols"]).stdout
    assert "http" not in protocols and "file" in protocols


def test_manifest_matches_artifact(artifact):
    manifest = json.loads(Path(artifact["manifest"]).read_text())
    assert manifest["sha256"] == hashlib.sha256(Path(artifact["deb"]).read_bytes()).hexdigest()
    assert manifest["source_version"] == artifact["version"]
    assert "--disable-everything" in manifest["configure_flags"]
    assert "--enable-libx264" in manifest["configure_flags"]
    assert (Path(artifact["manifest"]).parent / "build.log").stat().st_size > 0


def test_rerun_reuses_artifact_without_building(artifact):
    t0 = time.monotonic()
    res = run([BUILD_SCRIPT, "--store", STORE, "ensure"], timeout=60)
    assert json.loads(res.stdout)["changed"] is False
    assert time.monotonic() - t0 < 10


def test_key_changes_with_version(artifact):
    other = run([BUILD_SCRIPT, "--store", STORE, "--version", "7:5.1.0-1", "key"]).stdout.strip()
    assert other and other != artifact["key"]


def test_transcode_generated_clip_to_webm(ffmpeg, ffprobe, tmp_path):
    src = tmp_path / "clip.mp4"
    run([ffmpeg, "-hide_banner", "-nostdin", "-v", "error", "-f", "lavfi", "-i", "testsrc2=size=640x360:rate=25",
         "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000", "-t", "3", "-c:v", "libx264", "-preset",
         "veryfast", "-pix_fmt", "yuv420p", "-c:a", "aac", str(src)], timeout=120)
    for vcodec, acodec, name in (("libvpx", "libvorbis", "vp8"), ("libvpx-vp9", "libopus", "vp9")):
        out = tmp_path / f"clip-{name}.webm"
        run([ffmpeg, "-hide_banner", "-nostdin", "-v", "error", "-i", src, "-c:v", vcodec, "-deadline", "realtime",
             "-cpu-used", "8", "-b:v", "1M", "-c:a", acodec, str(out)], timeout=120)
        info = probe(ffprobe, out)
        codecs = sorted(s["codec_name"] for s in info["streams"])
        assert codecs == sorted([name, acodec.replace("lib", "")]), info
        assert info["format"]["format_name"].startswith("matroska,webm")
        assert abs(float(info["format"]["duration"]) - 3.0) < 0.3


def test_deb_installs_into_fresh_root_without_building(artifact, tmp_path):
    root = tmp_path / "root"
    for d in ("var/lib/dpkg/info", "var/lib/dpkg/updates", "var/lib/dpkg/triggers"):
        (root / d).mkdir(parents=True)
    (root / "var/lib/dpkg/status").touch()
    t0 = time.monotonic()
    # --force-depends: the runtime libraries live on the host, not in this empty root
    run(["dpkg", f"--root={root}", "--force-depends", "--force-not-root", "--log=/dev/null", "-i", artifact["deb"]],
        timeout=60)
    took = time.monotonic() - t0
    status = (root / "var/lib/dpkg/status").read_text()
    assert "Package: demolab-ffmpeg" in status and "Status: install ok installed" in status
    binary = root / artifact["ffmpeg"].lstrip("/")
    assert "5.1" in run([binary, "-hide_banner", "-version"]).stdout
    assert took < 10, f"offline install took {took:.1f} s"


def test_corrupt_input_fails_fast(ffmpeg, ffprobe, tmp_path):
    bad = tmp_path / "corrupt.mkv"
    bad.write_bytes(b"\x1a\x45\xdf\xa3" + bytes(range(256)) * 400)  # EBML magic, garbage after
    res = run([ffmpeg, "-hide_banner", "-nostdin", "-v", "error", "-i", bad, "-f", "null", "-"], timeout=30,
              check=False)
    assert res.returncode != 0
    res = run([ffprobe, "-v", "error", bad], timeout=30, check=False)
    assert res.returncode != 0


def test_truncated_input_does_not_hang(ffmpeg, tmp_path):
    src = tmp_path / "full.mkv"
    run([ffmpeg, "-hide_banner", "-nostdin", "-v", "error", "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25",
         "-t", "4", "-c:v", "libx264", "-preset", "veryfast", str(src)], timeout=60)
    cut = tmp_path / "cut.mkv"
    data = src.read_bytes()
    cut.write_bytes(data[: len(data) // 2] + b"\0" * 5000 + data[len(data) // 2 + 5000:])
    try:
        run([ffmpeg, "-hide_banner", "-nostdin", "-v", "error", "-i", cut, "-f", "null", "-"], timeout=30,
            check=False)
    except subprocess.TimeoutExpired:
        pytest.fail("ffmpeg hung on a damaged file")


def test_changed_configure_flags_mean_a_new_build(artifact):
    """Extra flags (role: ffmpeg_configure_extra_flags) change the key: the artifact does not match
    any more, so the role would build once; the same flags give the same key again."""
    extra = ["--extra-flag=--enable-encoder=flac"]
    key = run([BUILD_SCRIPT, "--store", STORE, *extra, "key"]).stdout.strip()
    assert key != artifact["key"] and key == run([BUILD_SCRIPT, "--store", STORE, *extra, "key"]).stdout.strip()
    assert run([BUILD_SCRIPT, "--store", STORE, *extra, "describe"], check=False).returncode == 1
    flags = run([BUILD_SCRIPT, *extra, "flags"]).stdout.splitlines()
    assert flags[-1] == "--enable-encoder=flac" and "--disable-everything" in flags
