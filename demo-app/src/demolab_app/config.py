"""The one place where settings come from.

Precedence (lowest first): built-in defaults, the ``[demolab_app]`` section of an INI file
(``--config PATH`` or ``DEMOLAB_CONFIG``), then environment variables ``DEMOLAB_<KEY>``
(upper-cased key).  ``ffmpeg`` additionally honours the conventional ``FFMPEG`` variable.
"""

from __future__ import annotations

import configparser
import dataclasses
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

SECTION = "demolab_app"
ENV_PREFIX = "DEMOLAB_"
CODECS = ("vp8", "vp9")


def _default_ffmpeg() -> str:
    return os.environ.get("FFMPEG") or "ffmpeg"


@dataclass(frozen=True)
class Settings:
    """Every knob of the app; see README.md for what each key means."""

    host: str = "127.0.0.1"
    port: int = 8080
    backlog: int = 4096
    access_log: bool = False
    # Audience mode (audience.py): also serve, read-only, on this address ("" = off); the
    # presenter's upload token for other devices ("" = a random one per start).
    audience_host: str = ""
    audience_url: str = ""
    audience_max_connections: int = 2000
    audience_max_per_address: int = 16
    upload_token: str = ""

    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_password: str = ""
    redis_channel: str = "demolab:announce"

    mongodb_uri: str = "mongodb://127.0.0.1:27017/"
    mongodb_username: str = ""
    mongodb_password: str = ""
    mongodb_auth_source: str = ""
    mongodb_database: str = "demolab"
    mongodb_bucket: str = "videos"
    mongodb_timeout_ms: int = 2000
    # stored videos' GridFS chunks kept in memory (LRU; 0 = off): chunkcache.py
    chunk_cache_bytes: int = 64 * 1024 * 1024

    ffmpeg: str = field(default_factory=_default_ffmpeg)
    ffprobe: str = ""
    max_upload_bytes: int = 200 * 1024 * 1024
    video_codec: str = "vp8"
    video_bitrate: str = "1M"
    audio_bitrate: str = "128k"
    transcode_timeout: float = 600.0
    max_transcodes: int = 2
    encoder_threads: int = 0
    upload_dir: str = ""

    cpu_interval: float = 1.0
    cpu_history: int = 60
    local_media_dir: str = ""

    # The presenter's pages (/talk, /lab): where the lab keeps what they show. Defaults are
    # the lab's own paths (roles/talk/files/demolab_talk/paths.py, the lab and http_cache
    # roles); the demo_app role writes them into the INI file.
    talk_json: str = "/etc/demolab/talk/talk.json"
    rehearsal_json: str = "/var/lib/demolab/rehearsal.json"
    casts_dir: str = "/var/lib/demolab/rehearsal/casts"
    mirror_dir: str = "/var/lib/demolab/mirror"
    miss_log: str = "/var/lib/demolab/http_cache/misses.jsonl"
    hit_log: str = "/var/lib/demolab/http_cache/hits.jsonl"
    ready_command: str = "/usr/local/bin/demolab-ready --json --ports-only"
    ready_interval: float = 2.0

    def __post_init__(self) -> None:
        if self.video_codec not in CODECS:
            raise ValueError(f"video_codec must be one of {CODECS}, not {self.video_codec!r}")
        if self.max_upload_bytes <= 0:
            raise ValueError("max_upload_bytes must be positive")
        if self.audience_host in {"0.0.0.0", "::", "*"}:
            raise ValueError(
                "audience_host must be one address (this machine's on the audience's network), "
                "not a wildcard: the lab's other services must stay off it"
            )
        if self.audience_max_connections < 1 or self.audience_max_per_address < 1:
            raise ValueError("audience_max_connections and audience_max_per_address must be >= 1")
        if self.chunk_cache_bytes < 0:
            raise ValueError("chunk_cache_bytes must be >= 0 (0 turns the chunk cache off)")
        if self.ready_interval <= 0:
            raise ValueError("ready_interval must be positive")

    @property
    def ffprobe_path(self) -> str:
        """ffprobe beside the configured ffmpeg binary, unless set explicitly."""
        if self.ffprobe:
            return self.ffprobe
        ffmpeg = Path(self.ffmpeg)
        if ffmpeg.parent != Path("."):
            sibling = ffmpeg.with_name(ffmpeg.name.replace("ffmpeg", "ffprobe"))
            if sibling.exists():
                return str(sibling)
        return shutil.which("ffprobe") or "ffprobe"


def _convert(name: str, raw: str) -> object:
    kind = Settings.__dataclass_fields__[name].type
    if kind == "int":
        return int(raw)
    if kind == "float":
        return float(raw)
    if kind == "bool":
        return raw.strip().lower() in {"1", "true", "yes", "on"}
    return raw


def load_settings(
    config_path: str | None = None, environ: Mapping[str, str] | None = None
) -> Settings:
    """Build :class:`Settings` from defaults, an optional INI file and the environment."""
    env = os.environ if environ is None else environ
    values: dict[str, object] = {}
    names = [f.name for f in dataclasses.fields(Settings)]
    path = config_path or env.get(ENV_PREFIX + "CONFIG")
    if path:
        parser = configparser.ConfigParser(interpolation=None)
        if not parser.read(path):
            raise FileNotFoundError(f"config file not found: {path}")
        if parser.has_section(SECTION):
            for key, raw in parser.items(SECTION):
                if key not in names:
                    raise KeyError(f"unknown setting {key!r} in {path}")
                values[key] = _convert(key, raw)
    if "FFMPEG" in env and "ffmpeg" not in values:
        values["ffmpeg"] = env["FFMPEG"]
    for name in names:
        from_env = env.get(ENV_PREFIX + name.upper())
        if from_env is not None:
            values[name] = _convert(name, from_env)
    return Settings(**values)  # type: ignore[arg-type]
