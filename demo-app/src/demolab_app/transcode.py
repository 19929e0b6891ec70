"""ffprobe an upload, then transcode it to WebM with FFmpeg straight into GridFS.

FFmpeg writes the WebM to stdout (``pipe:1``) and its ``-progress`` report to an extra pipe;
both are read cooperatively (gevent), the WebM bytes go chunk by chunk into a GridFS upload
stream.  Every exit path kills and reaps the FFmpeg process and aborts a half-written file.
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import signal
import subprocess
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import IO, Any

import gevent
from gevent.fileobject import FileObjectPosix
from gridfs import GridFSBucket
from pymongo.errors import PyMongoError

log = logging.getLogger(__name__)

READ_SIZE = 256 * 1024
PR_SET_PDEATHSIG = 1
STILL_IMAGE_CODECS = {"mjpeg", "png", "bmp", "gif", "webp", "tiff"}
ProgressCallback = Callable[[dict[str, Any]], None]


class ProbeError(ValueError):
    """The upload is not a video FFmpeg can read."""


class TranscodeError(RuntimeError):
    """FFmpeg failed or storing its output failed."""


@dataclass(frozen=True)
class ProbeResult:
    format_name: str
    duration: float
    width: int
    height: int
    video_codec: str
    has_audio: bool


def fd_path(fd: int) -> str:
    """How a child that inherited ``fd`` opens it (works for an unlinked file, seekable)."""
    return f"file:/proc/self/fd/{fd}"


def probe(ffprobe: str, source_fd: int, timeout: float = 30.0) -> ProbeResult:
    """Describe the file open at ``source_fd``; raise :class:`ProbeError` if it is no video."""
    path = fd_path(source_fd)
    cmd = [
        ffprobe, "-v", "error", "-print_format", "json", "-show_format", "-show_streams", path,
    ]  # fmt: skip
    try:
        done = subprocess.run(
            cmd, capture_output=True, timeout=timeout, check=False, pass_fds=(source_fd,)
        )
    except subprocess.TimeoutExpired as exc:  # run() kills and reaps the child
        raise ProbeError("probing the file took too long") from exc
    if done.returncode != 0:
        detail = done.stderr.decode(errors="replace").replace(path, "input").strip().splitlines()
        raise ProbeError("not a video file" + (f" ({detail[-1][:200]})" if detail else ""))
    info = json.loads(done.stdout or b"{}")
    streams = info.get("streams", [])
    fmt = info.get("format", {})
    try:
        duration = float(fmt.get("duration") or 0.0)
    except ValueError:
        duration = 0.0
    video = [
        s
        for s in streams
        if s.get("codec_type") == "video"
        and not s.get("disposition", {}).get("attached_pic")
        and not (s.get("codec_name") in STILL_IMAGE_CODECS and duration <= 0)
    ]
    format_name = str(fmt.get("format_name", ""))
    if format_name == "image2" or format_name.endswith("_pipe"):
        video = []  # a still image, not a video  # fmt: skip
    if not video:
        raise ProbeError("not a video file (no video stream found)")
    return ProbeResult(
        format_name=format_name,
        duration=duration,
        width=int(video[0].get("width") or 0),
        height=int(video[0].get("height") or 0),
        video_codec=str(video[0].get("codec_name", "")),
        has_audio=any(s.get("codec_type") == "audio" for s in streams),
    )


def ffmpeg_version(ffmpeg: str) -> str | None:
    """First line of ``ffmpeg -version``, or None when the binary does not run."""
    try:
        done = subprocess.run([ffmpeg, "-version"], capture_output=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if done.returncode != 0:
        return None
    lines = done.stdout.decode(errors="replace").splitlines()
    return lines[0] if lines else None


def die_with_parent() -> None:
    """In the forked child: get SIGKILL when the app dies, even by SIGKILL (Linux)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass


def encoder_args(codec: str, video_bitrate: str, audio_bitrate: str, threads: int = 0) -> list[str]:
    """Realtime WebM settings: VP8/Vorbis (default) or VP9/Opus.

    ``threads`` 0 picks per codec: VP8 gets 1 (its realtime encoder ran 3-4x SLOWER with
    FFmpeg's automatic thread count on the 2-core lab box: 8-11 s vs 2.4-2.7 s for a 30 s
    640x360 clip), VP9 keeps FFmpeg's choice and uses ``-row-mt 1``.
    """
    if threads <= 0:
        threads = 1 if codec == "vp8" else 0
    common = ["-deadline", "realtime", "-cpu-used", "8", "-b:v", video_bitrate]
    if threads > 0:
        common += ["-threads", str(threads)]
    if codec == "vp9":
        return ["-c:v", "libvpx-vp9", *common, "-row-mt", "1", "-c:a", "libopus",
                "-b:a", audio_bitrate]  # fmt: skip
    return ["-c:v", "libvpx", *common, "-c:a", "libvorbis", "-b:a", audio_bitrate]


def parse_progress(lines: Iterator[bytes]) -> Iterator[dict[str, str]]:
    """Group FFmpeg ``-progress`` ``key=value`` lines into one dict per report."""
    block: dict[str, str] = {}
    for raw in lines:
        key, sep, value = raw.decode(errors="replace").strip().partition("=")
        if not sep:
            continue
        block[key] = value
        if key == "progress":
            yield block
            block = {}


@dataclass
class TranscodeJob:
    source_fd: int
    filename: str
    uploader: str
    codec: str
    probe: ProbeResult
    source_size: int


class Transcoder:
    """Runs one FFmpeg per job and streams its WebM output into a GridFS bucket."""

    def __init__(
        self,
        ffmpeg: str,
        video_bitrate: str,
        audio_bitrate: str,
        timeout: float,
        threads: int = 0,
    ) -> None:
        self.ffmpeg = ffmpeg
        self.threads = threads
        self.video_bitrate = video_bitrate
        self.audio_bitrate = audio_bitrate
        self.timeout = timeout
        self.active: set[subprocess.Popen[bytes]] = set()

    def kill_all(self) -> None:
        """Kill and reap every running FFmpeg (server shutdown)."""
        for proc in list(self.active):
            if proc.poll() is None:
                proc.kill()
            proc.wait()

    def command(self, job: TranscodeJob, progress_fd: int) -> list[str]:
        audio = ["-map", "0:a:0"] if job.probe.has_audio else []
        return [
            self.ffmpeg, "-hide_banner", "-nostdin", "-loglevel", "error",
            "-i", fd_path(job.source_fd), "-map", "0:v:0", *audio,
            *encoder_args(job.codec, self.video_bitrate, self.audio_bitrate, self.threads),
            "-pix_fmt", "yuv420p", "-f", "webm",
            "-progress", f"pipe:{progress_fd}", "pipe:1",
        ]  # fmt: skip

    def run(self, job: TranscodeJob, bucket: GridFSBucket, on_progress: ProgressCallback) -> Any:
        """Transcode ``job`` into ``bucket``; return the new file id or raise TranscodeError."""
        metadata: dict[str, Any] = {
            "original_filename": job.filename,
            "uploader": job.uploader,
            "duration": job.probe.duration,
            "codec": "vp9/opus" if job.codec == "vp9" else "vp8/vorbis",
            "width": job.probe.width,
            "height": job.probe.height,
            "source_size": job.source_size,
            "size": 0,
        }
        read_fd, write_fd = os.pipe()
        proc: subprocess.Popen[bytes] | None = None
        progress_reader: gevent.Greenlet | None = None
        stderr_reader: gevent.Greenlet | None = None
        grid_in = None
        stored = False
        try:
            try:
                proc = subprocess.Popen(
                    self.command(job, write_fd), stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                    pass_fds=(write_fd, job.source_fd),
                    preexec_fn=die_with_parent,
                )  # fmt: skip
                self.active.add(proc)
            except OSError as exc:
                raise TranscodeError(f"cannot start FFmpeg: {exc}") from exc
            finally:
                os.close(write_fd)
            progress_file = FileObjectPosix(read_fd, "rb", close=True)
            read_fd = -1
            progress_reader = gevent.spawn(self._pump_progress, progress_file, job, on_progress)
            errors: deque[str] = deque(maxlen=20)
            stderr_reader = gevent.spawn(self._pump_stderr, proc.stderr, errors)
            assert proc.stdout is not None
            with gevent.Timeout(self.timeout, TranscodeError("transcoding took too long")):
                grid_in = bucket.open_upload_stream(
                    f"{os.path.splitext(job.filename)[0] or 'video'}.webm",
                    metadata=metadata,
                )
                size = 0
                while chunk := proc.stdout.read(READ_SIZE):
                    grid_in.write(chunk)
                    size += len(chunk)
                code = proc.wait()
                stderr_reader.join()
                if code != 0:
                    raise TranscodeError(
                        f"FFmpeg exited with {code}: {' | '.join(errors)[-400:] or 'no output'}"
                    )
                if size == 0:
                    raise TranscodeError("FFmpeg produced no output")
                metadata["size"] = size  # still the dict GridIn writes on close()
                grid_in.close()
                stored = True
                progress_reader.join(timeout=1)
                return grid_in._id
        except PyMongoError as exc:
            raise TranscodeError(f"storing the video in MongoDB failed: {exc}") from exc
        finally:
            if proc is not None and proc.poll() is None:
                proc.kill()
            if proc is not None:
                proc.wait()
                self.active.discard(proc)
            for reader in (progress_reader, stderr_reader):
                if reader is not None:
                    reader.kill(block=True, timeout=2)
            if proc is not None:
                for pipe in (proc.stdout, proc.stderr):
                    if pipe is not None:
                        pipe.close()
            if read_fd >= 0:
                os.close(read_fd)
            if grid_in is not None and not stored:
                try:
                    grid_in.abort()
                except PyMongoError:
                    log.warning("could not abort partial GridFS file %s", grid_in._id)

    @staticmethod
    def _pump_progress(stream: IO[bytes], job: TranscodeJob, on_progress: ProgressCallback) -> None:
        try:
            for block in parse_progress(iter(stream.readline, b"")):
                out_us = block.get("out_time_us") or block.get("out_time_ms") or "0"
                try:
                    seconds = max(0.0, int(out_us) / 1_000_000)
                except ValueError:
                    seconds = 0.0
                percent = 100.0 * seconds / job.probe.duration if job.probe.duration else 0.0
                if block.get("progress") == "end":
                    percent = 100.0
                on_progress(
                    {"seconds": round(seconds, 2), "percent": round(min(percent, 100.0), 1),
                     "speed": block.get("speed", "").strip()}
                )  # fmt: skip
        finally:
            stream.close()

    @staticmethod
    def _pump_stderr(stream: IO[bytes] | None, errors: deque[str]) -> None:
        if stream is None:
            return
        for raw in iter(stream.readline, b""):
            line = raw.decode(errors="replace").strip()
            if line:
                errors.append(line[:300])
