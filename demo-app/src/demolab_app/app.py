"""Pyramid app (explicit configuration) + Socket.IO server, wired to Redis, GridFS and FFmpeg."""

from __future__ import annotations

import html
import logging
import os
import shutil
import string
import tempfile
import uuid
from importlib import resources
from typing import Any

import gevent
import socketio
from gevent.lock import BoundedSemaphore
from gridfs import GridFSBucket
from pymongo import MongoClient
from pymongo.errors import PyMongoError
from pyramid.config import Configurator
from pyramid.request import Request
from pyramid.response import Response
from redis import RedisError

from . import labview, talkview
from .audience import page_context
from .broadcast import Broadcaster
from .chunkcache import ChunkCache, FileCache
from .config import CODECS, Settings
from .cpu import CpuBroadcaster
from .relay import ANNOUNCE_EVENT, Publisher, Relay
from .transcode import ProbeError, TranscodeError, TranscodeJob, Transcoder, ffmpeg_version, probe
from .videos import (
    ByteSource,
    RangeNotSatisfiableError,
    describe,
    etag_matches,
    find_local,
    find_video,
    list_videos,
    parse_range,
)

log = logging.getLogger(__name__)

DRAIN_LIMIT = 16 * 1024 * 1024  # read at most this much of a refused body before answering 413
COPY_SIZE = 256 * 1024


class Services:
    """Everything the views and background tasks share; lives in the Pyramid registry."""

    def __init__(self, settings: Settings, sio: socketio.Server) -> None:
        self.settings = settings
        self.sio = sio
        credentials: dict[str, Any] = {}
        if settings.mongodb_username:
            credentials = {
                "username": settings.mongodb_username,
                "password": settings.mongodb_password,
                "authMechanism": "SCRAM-SHA-256",
            }
            if settings.mongodb_auth_source:
                credentials["authSource"] = settings.mongodb_auth_source
        self.mongo: MongoClient[dict[str, Any]] = MongoClient(
            settings.mongodb_uri,
            serverSelectionTimeoutMS=settings.mongodb_timeout_ms,
            connectTimeoutMS=settings.mongodb_timeout_ms,
            socketTimeoutMS=max(30_000, settings.mongodb_timeout_ms),
            appname="demolab-app",
            **credentials,
        )
        self.db = self.mongo[settings.mongodb_database]
        self.bucket = GridFSBucket(self.db, bucket_name=settings.mongodb_bucket)
        # stored videos never change: chunks and files documents from memory (0 = off)
        self.chunk_cache = (
            ChunkCache(settings.chunk_cache_bytes) if settings.chunk_cache_bytes else None
        )
        self.file_cache = FileCache() if settings.chunk_cache_bytes else None
        self.publisher = Publisher(
            settings.redis_url, settings.redis_password, settings.redis_channel
        )
        self.broadcaster = Broadcaster(sio)  # one encode + direct writes for emits to all
        broadcast = self.broadcaster.emit
        self.relay = Relay(
            sio, settings.redis_url, settings.redis_password, settings.redis_channel,
            broadcast=broadcast,
        )  # fmt: skip
        self.cpu = CpuBroadcaster(sio, settings.cpu_interval, settings.cpu_history, broadcast)
        self.transcoder = Transcoder(
            settings.ffmpeg, settings.video_bitrate, settings.audio_bitrate,
            settings.transcode_timeout, settings.encoder_threads,
        )  # fmt: skip
        self.transcode_slots = BoundedSemaphore(max(1, settings.max_transcodes))
        self.ffmpeg_version = ffmpeg_version(settings.ffmpeg)
        self.clients = 0
        self.audience: Any = None  # audience.AudienceServer when audience mode is on

    def start(self) -> None:
        self.cpu.start()
        self.relay.start()

    def shutdown(self) -> None:
        self.transcoder.kill_all()
        self.mongo.close()

    # -- health ------------------------------------------------------------------------------
    def redis_ok(self) -> tuple[bool, str]:
        try:
            self.publisher.ping()
        except (RedisError, OSError) as exc:
            return False, str(exc) or type(exc).__name__
        return True, "ok"

    def mongodb_ok(self) -> tuple[bool, str]:
        try:
            self.mongo.admin.command("ping")
        except PyMongoError as exc:
            return False, str(exc).split(",")[0][:200]
        return True, "ok"

    # -- background processing ---------------------------------------------------------------
    def process_upload(self, job_id: str, job: TranscodeJob, sid: str | None) -> None:
        """Transcode, store, announce; report to the uploader; always close the spool file."""

        def tell(event: str, data: dict[str, Any]) -> None:
            if sid:
                self.sio.emit(event, {"job": job_id, "filename": job.filename, **data}, to=sid)

        try:
            if self.transcode_slots.locked():
                tell("progress", {"percent": 0.0, "seconds": 0.0, "speed": "queued"})
            with self.transcode_slots:
                file_id = self.transcoder.run(job, self.bucket, lambda p: tell("progress", p))
            doc = self.db[f"{self.settings.mongodb_bucket}.files"].find_one({"_id": file_id})
            if doc and self.chunk_cache is not None:  # every page asks for it at once: warm up
                self.chunk_cache.warm(self.db[f"{self.settings.mongodb_bucket}.chunks"], doc)
            announcement = describe(doc or {"_id": file_id})
            warning = ""
            try:
                self.publisher.publish(announcement)
            except (RedisError, OSError) as exc:
                log.warning("publish failed (%s): announcing to local clients only", exc)
                warning = "Redis is unavailable: announced to this server's clients only"
                self.broadcaster.emit(ANNOUNCE_EVENT, announcement)
            tell("upload_done", {"video": announcement, "warning": warning})
        except (TranscodeError, PyMongoError) as exc:
            log.warning("upload %s (%s) failed: %s", job_id, job.filename, exc)
            tell("upload_error", {"error": f"Transcoding failed: {exc}"})
        except Exception as exc:
            log.exception("upload %s failed", job_id)
            tell("upload_error", {"error": f"Internal error: {type(exc).__name__}"})
        finally:
            os.close(job.source_fd)


def services_of(request: Request) -> Services:
    return request.registry.demolab_services  # type: ignore[no-any-return]


def json_error(status: int, message: str, **extra: Any) -> Response:
    response = Response(status=status, json_body={"error": message, **extra})
    response.cache_control = "no-store"
    return response


# -- views -------------------------------------------------------------------------------------
def index_view(request: Request) -> Response:
    settings = services_of(request).settings
    template = resources.files("demolab_app").joinpath("templates/index.html").read_text()
    viewer = page_context(request.environ, settings, int(request.environ["SERVER_PORT"]))
    page = string.Template(template).substitute(
        max_upload_bytes=html.escape(str(settings.max_upload_bytes)),
        default_codec=html.escape(settings.video_codec),
        **{key: html.escape(value) for key, value in viewer.items()},
    )
    response = Response(page, content_type="text/html", charset="utf-8")
    response.headers["Content-Security-Policy"] = (
        "default-src 'self'; media-src 'self' blob:; img-src 'self' data:; "
        "style-src 'self' 'unsafe-inline'; connect-src 'self' ws: wss:"
    )
    return response


def healthz_view(request: Request) -> Response:
    services = services_of(request)
    redis_check = gevent.spawn(services.redis_ok)
    mongo_check = gevent.spawn(services.mongodb_ok)
    gevent.joinall([redis_check, mongo_check], timeout=10)
    redis_ok, redis_detail = redis_check.value or (False, "timeout")
    mongo_ok, mongo_detail = mongo_check.value or (False, "timeout")
    if services.ffmpeg_version is None:
        services.ffmpeg_version = ffmpeg_version(services.settings.ffmpeg)
    healthy = redis_ok and mongo_ok and services.ffmpeg_version is not None
    body = {
        "status": "ok" if healthy else "degraded",
        "redis": {"ok": redis_ok, "detail": redis_detail, "relay": services.relay.subscribed},
        "mongodb": {"ok": mongo_ok, "detail": mongo_detail},
        "ffmpeg": {"ok": services.ffmpeg_version is not None, "version": services.ffmpeg_version},
        "clients": services.clients,
        "chunk_cache": services.chunk_cache.stats() if services.chunk_cache else None,
        "audience": services.audience.stats() if services.audience else None,
    }
    response = Response(status=200 if healthy else 503, json_body=body)
    response.cache_control = "no-store"
    return response


def videos_view(request: Request) -> Response:
    services = services_of(request)
    try:
        items = list_videos(services.db, services.settings.mongodb_bucket)
    except PyMongoError as exc:
        return json_error(503, f"MongoDB is unavailable: {str(exc)[:160]}")
    response = Response(json_body={"videos": items})
    response.cache_control = "no-store"
    return response


def upload_view(request: Request) -> Response:
    services = services_of(request)
    settings = services.settings
    limit = settings.max_upload_bytes
    length = request.content_length
    if length is None:
        return json_error(411, "Content-Length required")
    if length > limit:
        drain(request, min(length, DRAIN_LIMIT))
        response = json_error(413, f"File too large: the limit is {limit} bytes", limit=limit)
        response.headers["Connection"] = "close"
        return response
    mongo_ok, detail = services.mongodb_ok()
    if not mongo_ok:
        drain(request, length)
        return json_error(503, f"MongoDB is unavailable, the video was not stored ({detail})")
    field = request.POST.get("file")
    if field is None or not hasattr(field, "file"):
        return json_error(400, "No file in the upload (form field 'file')")
    filename = os.path.basename(str(field.filename or "upload").replace("\\", "/"))[:200]
    uploader = str(request.POST.get("uploader") or "anonymous").strip()[:80] or "anonymous"
    codec = str(request.POST.get("codec") or settings.video_codec)
    if codec not in CODECS:
        return json_error(400, f"Unknown codec {codec!r}; choose one of {', '.join(CODECS)}")
    sid = str(request.POST.get("sid") or "") or None

    # The spool file is unlinked at once: ffprobe/ffmpeg read it through an inherited fd
    # (/proc/self/fd/N), so nothing is left on disk even if this process is killed.
    fd, path = tempfile.mkstemp(prefix="demolab-upload-", dir=settings.upload_dir or None)
    os.unlink(path)
    handed_over = False
    try:
        with os.fdopen(os.dup(fd), "wb") as spool:
            shutil.copyfileobj(field.file, spool, COPY_SIZE)
            size = spool.tell()
        if size == 0:
            return json_error(400, "The uploaded file is empty")
        try:
            info = probe(settings.ffprobe_path, fd)
        except ProbeError as exc:
            return json_error(400, f"{filename}: {exc}; nothing was stored")
        job_id = uuid.uuid4().hex
        job = TranscodeJob(
            source_fd=fd, filename=filename, uploader=uploader, codec=codec, probe=info,
            source_size=size,
        )  # fmt: skip
        services.sio.start_background_task(services.process_upload, job_id, job, sid)
        handed_over = True
        return Response(
            status=202,
            json_body={"job": job_id, "filename": filename, "duration": info.duration,
                       "codec": codec, "status": "transcoding"},
        )  # fmt: skip
    finally:
        if not handed_over:
            os.close(fd)


def drain(request: Request, limit: int) -> None:
    """Read (and drop) up to ``limit`` body bytes so the client can read our answer."""
    stream = request.environ["wsgi.input"]
    remaining = limit
    while remaining > 0:
        data = stream.read(min(COPY_SIZE, remaining))
        if not data:
            break
        remaining -= len(data)


def serve_bytes(request: Request, source: ByteSource) -> Response:
    """200/206/304/416 for one byte source, with ETag and Accept-Ranges."""
    headers = {
        "Accept-Ranges": "bytes",
        "ETag": source.etag,
        "Cache-Control": "public, max-age=3600",
    }
    if etag_matches(request.headers.get("If-None-Match"), source.etag):
        return Response(status=304, headers=headers)
    length = source.length
    range_header = request.headers.get("Range")
    if_range = request.headers.get("If-Range")
    if range_header and if_range and if_range.strip() != source.etag:
        range_header = None  # the client's copy is stale: send everything
    try:
        selected = parse_range(range_header, length)
    except RangeNotSatisfiableError:
        headers["Content-Range"] = f"bytes */{length}"
        return Response(status=416, headers=headers)
    if selected is None:
        start, end, status = 0, length - 1, 200
    else:
        start, end = selected
        status = 206
        headers["Content-Range"] = f"bytes {start}-{end}/{length}"
    response = Response(status=status, headers=headers, app_iter=source.iter_range(start, end))
    response.content_type = source.content_type
    response.content_length = end - start + 1 if length else 0
    return response


def video_view(request: Request) -> Response:
    services = services_of(request)
    try:
        video = find_video(services.db, services.settings.mongodb_bucket,
                           request.matchdict["fileid"], services.chunk_cache,
                           services.file_cache)  # fmt: skip
    except PyMongoError as exc:
        return json_error(503, f"MongoDB is unavailable: {str(exc)[:160]}")
    if video is None:
        return json_error(404, "No such video")
    return serve_bytes(request, video)


def local_view(request: Request) -> Response:
    source = find_local(services_of(request).settings.local_media_dir, request.matchdict["name"])
    if source is None:
        return json_error(404, "No such file")
    return serve_bytes(request, source)


# -- wiring ------------------------------------------------------------------------------------
def register_socket_handlers(sio: socketio.Server, services: Services) -> None:
    def connect(sid: str, environ: dict[str, Any], auth: Any = None) -> None:
        services.clients += 1
        sio.emit("cpu_history", services.cpu.history(), to=sid)

    def disconnect(sid: str, reason: Any = None) -> None:
        services.clients = max(0, services.clients - 1)

    sio.on("connect", connect)
    sio.on("disconnect", disconnect)


def make_pyramid_app(services: Services) -> Any:
    with Configurator() as config:
        config.registry.demolab_services = services
        config.add_route("index", "/")
        config.add_route("healthz", "/healthz")
        config.add_route("videos", "/videos")
        config.add_route("upload", "/upload")
        config.add_route("video", "/video/{fileid}.webm")
        config.add_view(index_view, route_name="index", request_method="GET")
        config.add_view(healthz_view, route_name="healthz", request_method="GET")
        config.add_view(videos_view, route_name="videos", request_method="GET")
        config.add_view(upload_view, route_name="upload", request_method="POST")
        config.add_view(video_view, route_name="video", request_method=("GET", "HEAD"))
        if services.settings.local_media_dir:
            config.add_route("local", "/local/{name}")
            config.add_view(local_view, route_name="local", request_method=("GET", "HEAD"))
        talkview.add_views(config)  # /talk (loopback only)
        labview.add_views(config, services.sio, services.settings)  # /lab (loopback only)
        config.add_static_view(name="static", path="demolab_app:static", cache_max_age=3600)
        return config.make_wsgi_app()


def create_app(settings: Settings) -> tuple[Any, Services]:
    """The WSGI callable (Socket.IO in front of Pyramid) and its services (not yet started)."""
    sio = socketio.Server(async_mode="gevent", logger=False, engineio_logger=False)
    services = Services(settings, sio)
    register_socket_handlers(sio, services)
    pyramid_app = make_pyramid_app(services)
    return socketio.WSGIApp(sio, pyramid_app), services
