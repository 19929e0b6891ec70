"""The presenter pages' pure parts: the loopback rule, the paths' defaults, the log follower."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import pytest

from demolab_app.access import is_local_address, is_local_environ
from demolab_app.config import Settings
from demolab_app.labview import LogTail, run_readiness, scan_mirror
from demolab_app.talkview import cast_file

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("address", "local"),
    [
        ("127.0.0.1", True), ("127.1.2.3", True), ("::1", True), ("::ffff:127.0.0.1", True),
        ("10.77.0.5", False), ("192.168.1.20", False), ("::ffff:10.0.0.1", False),
        ("fe80::1%eth0", False), ("0.0.0.0", False), ("", False), (None, False),
        ("localhost", False), ("127.0.0.1, 10.0.0.1", False),
    ],
)  # fmt: skip
def test_is_local_address(address: str | None, local: bool) -> None:
    assert is_local_address(address) is local


def test_is_local_environ_reads_the_peer_never_a_header() -> None:
    assert is_local_environ({"REMOTE_ADDR": "127.0.0.1"})
    assert not is_local_environ({"REMOTE_ADDR": "10.77.0.9", "HTTP_X_FORWARDED_FOR": "127.0.0.1"})
    assert not is_local_environ({})
    assert not is_local_environ(None)


def test_defaults_are_the_lab_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """config.py's defaults are the lab's paths: the ones the talk role's paths.py reads from
    the lab.json a lab with the lab role's default directories has."""
    defaults = (REPO / "roles" / "lab" / "defaults" / "main.yml").read_text()
    etc, state = (
        Path(re.search(rf"^{name}: (/\S+)$", defaults, re.M).group(1))  # type: ignore[union-attr]
        for name in ("lab_etc_dir", "lab_state_dir")
    )
    lab_json = tmp_path / "lab.json"
    lab_json.write_text(json.dumps({
        "talk_dir": str(etc / "talk"), "state_dir": str(state),
        "rehearsal": {"report": str(state / "rehearsal.json")},
        "proxy": {
            "url": "http://127.0.0.1:9",
            "miss_log": str(state / "http_cache" / "misses.jsonl"),
        },
        "demo_app": {"url": "http://127.0.0.1:9"},
    }))  # fmt: skip
    monkeypatch.setenv("DEMOLAB_LAB_JSON", str(lab_json))
    spec = importlib.util.spec_from_file_location(
        "talk_paths", REPO / "roles" / "talk" / "files" / "demolab_talk" / "paths.py"
    )
    assert spec is not None and spec.loader is not None
    paths = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(paths)
    settings = Settings()
    assert settings.talk_json == str(paths.TALK_JSON)
    assert settings.rehearsal_json == str(paths.REHEARSAL_JSON)
    assert settings.casts_dir == str(paths.CASTS_DIR)
    assert settings.miss_log == str(paths.MISS_LOG)


def test_cast_file_by_step_id_only(tmp_path: Path) -> None:
    casts = tmp_path / "casts"
    casts.mkdir()
    (casts / "redis.cast").write_text("{}\n")
    (tmp_path / "secret.cast").write_text("secret\n")
    (casts / "dir.cast").mkdir()
    settings = Settings(casts_dir=str(casts))
    assert cast_file(settings, "redis") == casts / "redis.cast"
    for step in ("../secret", "..", "", "Redis", "redis/../redis", "dir", "/etc/passwd", "-x"):
        assert cast_file(settings, step) is None, step


def test_log_tail_follows_appends_truncation_and_replacement(tmp_path: Path) -> None:
    log = tmp_path / "misses.jsonl"
    tail = LogTail(str(log))
    assert tail.read() == []  # no file yet
    log.write_text('{"url": "a"}\n{"url": "b"}\n{"url": "c"')  # the last line is incomplete
    assert [x["url"] for x in tail.read()] == ["a", "b"]
    with log.open("a") as handle:
        handle.write('}\nnot json\n{"url": "d"}\n')
    assert [x["url"] for x in tail.read()] == ["c", "d"]
    assert tail.read() == []
    log.write_text('{"url": "e"}\n')  # truncated and rewritten
    assert [x["url"] for x in tail.read()] == ["e"]
    moved = tmp_path / "new.jsonl"
    moved.write_text('{"url": "f"}\n{"url": "g"}\n')
    moved.replace(log)  # rotated: a new file under the same name
    assert [x["url"] for x in tail.read()] == ["f", "g"]


def test_scan_mirror_counts_its_kind(tmp_path: Path) -> None:
    apt = tmp_path / "apt"
    (apt / "sub").mkdir(parents=True)
    (apt / "a.deb").write_bytes(b"x" * 10)
    (apt / "sub" / "b.deb").write_bytes(b"x" * 5)
    (apt / "Packages").write_bytes(b"x" * 3)
    info = scan_mirror(apt, (".deb",))
    assert (info["items"], info["bytes"], info["problem"]) == (2, 18, "")
    assert info["newest"] > 0
    assert scan_mirror(tmp_path / "none", (".deb",))["problem"].startswith("missing")


def test_readiness_that_cannot_run_is_one_red_tile(tmp_path: Path) -> None:
    report = run_readiness(str(tmp_path / "no-such-demolab-ready") + " --json")
    assert report["ready"] is False
    (tile,) = report["services"]
    assert not tile["ok"] and "not installed" in tile["detail"][0] and "make lab" in tile["hint"]
    script = tmp_path / "garbage"
    script.write_text("#!/bin/sh\necho not json\n")
    script.chmod(0o755)
    (tile,) = run_readiness(str(script))["services"]
    assert "gave no report" in tile["detail"][0]
    json.dumps(report)  # what the page gets is JSON
