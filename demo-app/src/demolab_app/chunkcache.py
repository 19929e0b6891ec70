"""Stored videos never change: serve their GridFS chunks from a bounded in-memory LRU.

When a video is announced, every open page asks for the same bytes at once.  Without a cache
each request reads its chunks from the database (SecantusDB: ~1-2.5 ms per 255 KiB chunk), so
1,000 phones queue 1,000 times behind it.  Here:

- ``ChunkCache`` keeps chunks keyed by ``(files_id, n)`` up to ``max_bytes`` (least recently
  used out).  A GridFS file is immutable once its files document exists (the driver writes
  the chunks first), so an entry never needs invalidating.
- Single-flight: concurrent misses for the same chunk make ONE database query; the other
  requests wait for its result instead of asking again.  A failed load is reported to every
  waiter and nothing is cached.
- ``FileCache`` does the same for the files documents (length, chunk size): small, bounded by
  entry count; unknown ids are never cached (an upload may still be writing them).

Locks are ``threading`` primitives: under the app's gevent monkey-patching they are gevent's,
in a plain process (the tests) they are real thread locks.  Nothing blocks while holding one.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import Any

from bson import ObjectId

Key = tuple[ObjectId, int]
BATCH = 16  # chunks loaded per query (a full-body GET streams in blocks of ~4 MiB)


class ChunkMissingError(OSError):
    """A chunk the files document promises is not in the chunks collection."""


class _Flight:
    """One database load in progress; other requests for the same key wait on it."""

    __slots__ = ("data", "error", "event")

    def __init__(self) -> None:
        self.event = threading.Event()
        self.data: Any = None
        self.error: BaseException | None = None

    def result(self) -> Any:
        self.event.wait()
        if self.error is not None:
            raise self.error  # the owner's error (e.g. PyMongoError: the view answers 503)
        return self.data


class ChunkCache:
    """Bounded LRU of GridFS chunks with single-flight loading."""

    def __init__(self, max_bytes: int, batch: int = BATCH) -> None:
        if max_bytes < 0:
            raise ValueError("max_bytes must be >= 0")
        self.max_bytes = max_bytes
        self.batch = max(1, batch)
        self._lru: OrderedDict[Key, bytes] = OrderedDict()
        self._flights: dict[Key, _Flight] = {}
        self._lock = threading.Lock()
        self.size = 0
        self.hits = 0  # served from memory
        self.shared = 0  # waited for another request's load (no query of its own)
        self.misses = 0  # chunks this cache loaded from the database
        self.queries = 0  # database round trips
        self.evictions = 0

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {
                "max_bytes": self.max_bytes,
                "bytes": self.size,
                "chunks": len(self._lru),
                "hits": self.hits,
                "shared": self.shared,
                "misses": self.misses,
                "queries": self.queries,
                "evictions": self.evictions,
            }

    def __contains__(self, key: Key) -> bool:
        with self._lock:
            return key in self._lru

    def chunks(
        self, collection: Any, file_id: ObjectId, first: int, last: int
    ) -> Iterator[tuple[int, bytes]]:
        """Yield ``(n, data)`` for chunks first..last of one file, in order."""
        for low in range(first, last + 1, self.batch):
            yield from self._block(collection, file_id, low, min(last, low + self.batch - 1))

    def warm(self, collection: Any, doc: dict[str, Any], share: float = 0.25) -> int:
        """Load a freshly stored file's first chunks (up to ``share`` of the cache) before it
        is announced: every page then asks for bytes already in memory.  Returns bytes kept."""
        length, chunk_size = int(doc.get("length", 0)), int(doc.get("chunkSize", 0))
        budget = min(length, int(self.max_bytes * share))
        if budget <= 0 or chunk_size <= 0:
            return 0
        last = (budget - 1) // chunk_size
        return sum(len(data) for _, data in self.chunks(collection, doc["_id"], 0, last))

    def _block(
        self, collection: Any, file_id: ObjectId, low: int, high: int
    ) -> Iterator[tuple[int, bytes]]:
        found: dict[int, bytes] = {}
        waiting: dict[int, _Flight] = {}
        mine: dict[int, _Flight] = {}
        with self._lock:
            for n in range(low, high + 1):
                key = (file_id, n)
                data = self._lru.get(key)
                if data is not None:
                    self._lru.move_to_end(key)
                    self.hits += 1
                    found[n] = data
                elif key in self._flights:
                    self.shared += 1
                    waiting[n] = self._flights[key]
                else:
                    self.misses += 1
                    mine[n] = self._flights[key] = _Flight()
        if mine:
            self._load(collection, file_id, mine, found)
        for n, flight in waiting.items():
            found[n] = flight.result()
        for n in range(low, high + 1):
            yield n, found[n]

    def _load(
        self, collection: Any, file_id: ObjectId, mine: dict[int, _Flight], found: dict[int, bytes]
    ) -> None:
        """One query for the chunks this request owns; always settles their flights."""
        wanted = sorted(mine)
        error: BaseException | None = None
        try:
            with self._lock:
                self.queries += 1
            query = (
                {"files_id": file_id, "n": {"$gte": wanted[0], "$lte": wanted[-1]}}
                if wanted[-1] - wanted[0] + 1 == len(wanted)
                else {"files_id": file_id, "n": {"$in": wanted}}
            )
            cursor = collection.find(query, {"_id": 0, "n": 1, "data": 1}).batch_size(len(wanted))
            try:
                for doc in cursor:
                    n = int(doc["n"])
                    if n in mine:
                        found[n] = bytes(doc["data"])
            finally:
                cursor.close()
            absent = [n for n in wanted if n not in found]
            if absent:
                raise ChunkMissingError(f"GridFS file {file_id}: chunk {absent[0]} missing")
        except BaseException as exc:
            error = exc
            raise
        finally:
            with self._lock:
                for n, flight in mine.items():
                    key = (file_id, n)
                    self._flights.pop(key, None)
                    if error is None:
                        flight.data = found[n]
                        self._store(key, found[n])
                    else:
                        flight.error = error
            for flight in mine.values():
                flight.event.set()

    def _store(self, key: Key, data: bytes) -> None:
        """Insert under the lock; evict least recently used entries beyond max_bytes."""
        if len(data) > self.max_bytes or key in self._lru:
            return
        self._lru[key] = data
        self.size += len(data)
        while self.size > self.max_bytes:
            _, old = self._lru.popitem(last=False)
            self.size -= len(old)
            self.evictions += 1


class FileCache:
    """Files documents by id (bounded entry count), single-flight; misses are not cached."""

    def __init__(self, max_entries: int = 4096) -> None:
        self.max_entries = max(1, max_entries)
        self._lru: OrderedDict[ObjectId, dict[str, Any]] = OrderedDict()
        self._flights: dict[ObjectId, _Flight] = {}
        self._lock = threading.Lock()
        self.queries = 0

    def get(
        self, file_id: ObjectId, load: Callable[[ObjectId], dict[str, Any] | None]
    ) -> dict[str, Any] | None:
        with self._lock:
            doc = self._lru.get(file_id)
            if doc is not None:
                self._lru.move_to_end(file_id)
                return doc
            flight = self._flights.get(file_id)
            owner = flight is None
            if flight is None:
                flight = self._flights[file_id] = _Flight()
                self.queries += 1
        if not owner:
            return flight.result()  # type: ignore[no-any-return]
        try:
            doc = load(file_id)
        except BaseException as exc:
            flight.error = exc
            raise
        else:
            flight.data = doc
        finally:
            with self._lock:
                self._flights.pop(file_id, None)
                if flight.error is None and flight.data is not None:
                    self._lru[file_id] = flight.data
                    while len(self._lru) > self.max_entries:
                        self._lru.popitem(last=False)
            flight.event.set()
        return doc
