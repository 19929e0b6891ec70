"""Pure functions: Range parsing, ETag matching, /proc/stat maths, settings precedence."""

from __future__ import annotations

from pathlib import Path

import pytest

from demolab_app.config import load_settings
from demolab_app.cpu import read_cpu_times, usage_percent
from demolab_app.transcode import encoder_args, parse_progress
from demolab_app.videos import RangeNotSatisfiableError, etag_matches, parse_range


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),
        ("bytes=0-99", (0, 99)),
        ("bytes=100-", (100, 999)),
        ("bytes=-100", (900, 999)),
        ("bytes=-5000", (0, 999)),
        ("bytes=990-5000", (990, 999)),
        ("bytes=5-2", None),
        ("bytes=0-1,5-6", None),
        ("items=0-1", None),
    ],
)
def test_parse_range(header: str | None, expected: tuple[int, int] | None) -> None:
    assert parse_range(header, 1000) == expected


@pytest.mark.parametrize("header", ["bytes=1000-", "bytes=5000-6000", "bytes=-0"])
def test_unsatisfiable(header: str) -> None:
    with pytest.raises(RangeNotSatisfiableError):
        parse_range(header, 1000)


def test_etag_matches() -> None:
    assert etag_matches('"abc"', '"abc"')
    assert etag_matches('W/"abc", "x"', '"abc"')
    assert etag_matches("*", '"abc"')
    assert not etag_matches('"abd"', '"abc"')
    assert not etag_matches(None, '"abc"')


def test_cpu_usage(tmp_path: Path) -> None:
    stat = tmp_path / "stat"
    stat.write_text("cpu  100 0 100 800 0 0 0 0 0 0\ncpu0 1 2 3 4\n")
    before = read_cpu_times(stat)
    stat.write_text("cpu  150 0 150 900 0 0 0 0 0 0\n")
    assert usage_percent(before, read_cpu_times(stat)) == pytest.approx(50.0)
    assert 0 <= usage_percent(read_cpu_times(), read_cpu_times()) <= 100


def test_settings_precedence(tmp_path: Path) -> None:
    ini = tmp_path / "app.ini"
    ini.write_text("[demolab_app]\nport = 9000\nredis_channel = from-ini\nvideo_codec = vp9\n")
    env = {"DEMOLAB_PORT": "9100", "FFMPEG": "/opt/ff/bin/ffmpeg"}
    settings = load_settings(str(ini), env)
    assert settings.port == 9100
    assert settings.redis_channel == "from-ini"
    assert settings.video_codec == "vp9"
    assert settings.ffmpeg == "/opt/ff/bin/ffmpeg"
    assert load_settings(None, {}).host == "127.0.0.1"
    with pytest.raises(ValueError, match="video_codec"):
        load_settings(None, {"DEMOLAB_VIDEO_CODEC": "h264"})


def test_encoder_args() -> None:
    vp8 = encoder_args("vp8", "1M", "128k")
    assert vp8[:2] == ["-c:v", "libvpx"] and "-cpu-used" in vp8 and "libvorbis" in vp8
    assert vp8[vp8.index("-threads") + 1] == "1"
    vp9 = encoder_args("vp9", "1M", "96k")
    assert "libvpx-vp9" in vp9 and "-row-mt" in vp9 and "libopus" in vp9
    assert "-threads" not in vp9
    vp9_two = encoder_args("vp9", "1M", "96k", threads=2)
    assert vp9_two[vp9_two.index("-threads") + 1] == "2"


def test_parse_progress() -> None:
    lines = [b"frame=1\n", b"out_time_us=500000\n", b"progress=continue\n",
             b"out_time_us=1000000\n", b"progress=end\n"]  # fmt: skip
    blocks = list(parse_progress(iter(lines)))
    assert [b["progress"] for b in blocks] == ["continue", "end"]
    assert blocks[0]["out_time_us"] == "500000"
