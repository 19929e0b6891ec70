"""The GridFS chunk cache against real SecantusDB: hits, misses, LRU eviction, bounded size,
single-flight loads (counted with pymongo's command monitoring), and through the real app."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import requests
from bson import ObjectId
from gridfs import GridFSBucket
from pymongo import monitoring
from servers import AppServer, SecantusServer

from demolab_app.chunkcache import ChunkCache, ChunkMissingError, FileCache
from demolab_app.videos import find_video

CHUNK = 1024
CHUNKS = 10


class FindCounter(monitoring.CommandListener):
    """Counts the real `find` commands the server receives, per collection."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.finds: dict[str, int] = {}

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if event.command_name == "find":
            with self.lock:
                name = str(event.command["find"])
                self.finds[name] = self.finds.get(name, 0) + 1

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass

    def count(self, name: str) -> int:
        with self.lock:
            return self.finds.get(name, 0)


@pytest.fixture(scope="module")
def counted(mongo_server: SecantusServer) -> Iterator[tuple[Any, FindCounter]]:
    counter = FindCounter()
    client = mongo_server.client(event_listeners=[counter], maxPoolSize=200)
    yield client["demolab_chunkcache"], counter
    client.close()


def put_file(db: Any, size: int = CHUNK * CHUNKS) -> tuple[ObjectId, bytes]:
    data = os.urandom(size)
    bucket = GridFSBucket(db, "videos", chunk_size_bytes=CHUNK)
    return bucket.upload_from_stream("t.webm", data), data


def read(cache: ChunkCache, db: Any, file_id: ObjectId, first: int, last: int) -> bytes:
    return b"".join(d for _, d in cache.chunks(db["videos.chunks"], file_id, first, last))


def test_miss_then_hit(counted: tuple[Any, FindCounter]) -> None:
    db, counter = counted
    file_id, data = put_file(db)
    cache = ChunkCache(1 << 20)
    before = counter.count("videos.chunks")
    assert read(cache, db, file_id, 2, 5) == data[2 * CHUNK : 6 * CHUNK]
    assert counter.count("videos.chunks") == before + 1  # four chunks, one query
    stats = cache.stats()
    assert (stats["misses"], stats["hits"], stats["queries"]) == (4, 0, 1)
    assert read(cache, db, file_id, 2, 5) == data[2 * CHUNK : 6 * CHUNK]
    assert counter.count("videos.chunks") == before + 1  # served from memory
    stats = cache.stats()
    assert (stats["misses"], stats["hits"], stats["bytes"]) == (4, 4, 4 * CHUNK)
    # a range straddling cached and uncached chunks loads only the missing ones
    assert read(cache, db, file_id, 0, 9) == data
    assert counter.count("videos.chunks") == before + 2
    stats = cache.stats()
    assert (stats["misses"], stats["hits"], stats["queries"]) == (10, 8, 2)


def test_bounded_lru_eviction(counted: tuple[Any, FindCounter]) -> None:
    db, _ = counted
    file_id, data = put_file(db)
    cache = ChunkCache(3 * CHUNK + CHUNK // 2, batch=2)  # room for three chunks
    assert read(cache, db, file_id, 0, 9) == data
    stats = cache.stats()
    assert stats["bytes"] <= cache.max_bytes and stats["chunks"] == 3
    assert stats["evictions"] == 7
    assert [(file_id, n) in cache for n in range(10)] == [False] * 7 + [True] * 3
    read(cache, db, file_id, 7, 7)  # 7 becomes the most recently used
    read(cache, db, file_id, 0, 0)  # evicts 8, the least recently used
    assert [(file_id, n) in cache for n in (0, 7, 8, 9)] == [True, True, False, True]
    assert cache.stats()["bytes"] == 3 * CHUNK


def test_chunk_larger_than_cache_is_served_not_kept(counted: tuple[Any, FindCounter]) -> None:
    db, _ = counted
    file_id, data = put_file(db)
    cache = ChunkCache(CHUNK // 2)
    assert read(cache, db, file_id, 0, 9) == data
    assert cache.stats()["bytes"] == 0 and cache.stats()["chunks"] == 0


def test_single_flight(counted: tuple[Any, FindCounter]) -> None:
    db, counter = counted
    file_id, data = put_file(db)
    cache = ChunkCache(1 << 20)
    threads = 64
    gate = threading.Barrier(threads)
    before = counter.count("videos.chunks")

    def one(_: int) -> bytes:
        gate.wait()
        return read(cache, db, file_id, 0, 9)

    with ThreadPoolExecutor(threads) as pool:
        results = list(pool.map(one, range(threads)))
    assert all(r == data for r in results)
    assert counter.count("videos.chunks") == before + 1, "concurrent misses made several queries"
    stats = cache.stats()
    assert stats["queries"] == 1 and stats["misses"] == 10
    assert stats["hits"] + stats["shared"] == (threads - 1) * 10


def test_failed_load_reaches_every_waiter_and_caches_nothing(
    counted: tuple[Any, FindCounter],
) -> None:
    db, _ = counted
    file_id, _ = put_file(db)
    db["videos.chunks"].delete_one({"files_id": file_id, "n": 4})
    cache = ChunkCache(1 << 20)
    gate = threading.Barrier(8)

    def one(_: int) -> str:
        gate.wait()
        try:
            read(cache, db, file_id, 0, 9)
        except ChunkMissingError as exc:
            return str(exc)
        return "no error"

    with ThreadPoolExecutor(8) as pool:
        errors = list(pool.map(one, range(8)))
    assert all("chunk 4 missing" in e for e in errors), errors
    assert cache.stats()["chunks"] == 0 and cache.stats()["bytes"] == 0


def test_file_cache_single_flight_and_no_negative_entries(
    counted: tuple[Any, FindCounter],
) -> None:
    db, counter = counted
    file_id, data = put_file(db)
    files = FileCache()
    cache = ChunkCache(1 << 20)
    gate = threading.Barrier(32)
    before = counter.count("videos.files")

    def one(_: int) -> bytes:
        gate.wait()
        video = find_video(db, "videos", str(file_id), cache, files)
        assert video is not None
        return b"".join(video.iter_range(100, len(data) - 100))

    with ThreadPoolExecutor(32) as pool:
        assert all(r == data[100 : len(data) - 99] for r in pool.map(one, range(32)))
    assert counter.count("videos.files") == before + 1
    unknown = str(ObjectId())
    assert find_video(db, "videos", unknown, cache, files) is None
    assert find_video(db, "videos", unknown, cache, files) is None
    assert counter.count("videos.files") == before + 3  # unknown ids are asked again


def test_uncached_path_reads_the_same_bytes(counted: tuple[Any, FindCounter]) -> None:
    db, _ = counted
    file_id, data = put_file(db)
    video = find_video(db, "videos", str(file_id))
    assert video is not None and video.cache is None
    assert b"".join(video.iter_range(CHUNK - 7, 5 * CHUNK + 3)) == data[CHUNK - 7 : 5 * CHUNK + 4]


def test_app_serves_concurrent_ranges_of_a_new_video_with_one_query_per_block(
    app: AppServer, mongo_server: SecantusServer, stored_video: dict[str, Any]
) -> None:
    """A 'new' video (a copy of the stored one under a fresh id): 200 simultaneous Range
    requests, byte-exact, and the app's cache made one query per chunk block at most."""
    with mongo_server.client() as client:
        db = client[app.database]
        original = (
            GridFSBucket(db, "videos").open_download_stream(ObjectId(stored_video["fileid"])).read()
        )
        fresh = GridFSBucket(db, "videos").upload_from_stream("copy.webm", original)
    url = f"{app.url}/video/{fresh}.webm"
    size = len(original)
    span = 1024 * 1024 if size > 1024 * 1024 else size // 2
    before = requests.get(app.url + "/healthz", timeout=10).json()["chunk_cache"]

    def one(i: int) -> bool:
        start = (i * 7919) % (size - span)
        reply = requests.get(
            url, headers={"Range": f"bytes={start}-{start + span - 1}"}, timeout=60
        )
        return reply.status_code == 206 and reply.content == original[start : start + span]

    with ThreadPoolExecutor(100) as pool:
        assert all(pool.map(one, range(200)))
    after = requests.get(app.url + "/healthz", timeout=10).json()["chunk_cache"]
    chunks = -(-size // 261120)
    assert after["misses"] - before["misses"] == chunks, (before, after)
    assert after["queries"] - before["queries"] <= chunks
    assert after["bytes"] <= after["max_bytes"]


def test_warm_loads_the_first_chunks_within_its_share(counted: tuple[Any, FindCounter]) -> None:
    db, counter = counted
    file_id, data = put_file(db)
    doc = db["videos.files"].find_one({"_id": file_id})
    cache = ChunkCache(16 * CHUNK)
    assert cache.warm(db["videos.chunks"], doc) == 4 * CHUNK  # a quarter of the cache
    assert [(file_id, n) in cache for n in range(6)] == [True] * 4 + [False] * 2
    before = counter.count("videos.chunks")
    assert read(cache, db, file_id, 0, 3) == data[: 4 * CHUNK]
    assert counter.count("videos.chunks") == before


def test_an_uploaded_video_is_in_memory_when_announced(
    app: AppServer, listener_factory: Any, big_clip: Any
) -> None:
    """The app warms the cache before it publishes: the pages' first reads are hits."""
    from conftest import upload_and_wait

    video = upload_and_wait(app, listener_factory(), big_clip, filename="warm.mp4")
    before = requests.get(app.url + "/healthz", timeout=10).json()["chunk_cache"]
    reply = requests.get(app.url + video["url"], headers={"Range": "bytes=0-65535"}, timeout=30)
    assert reply.status_code == 206 and len(reply.content) == 65536
    after = requests.get(app.url + "/healthz", timeout=10).json()["chunk_cache"]
    assert after["misses"] == before["misses"] and after["hits"] > before["hits"]
