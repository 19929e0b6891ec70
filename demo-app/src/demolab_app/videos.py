"""Serving stored videos with HTTP Range support.

GridFS reads go straight to the chunks collection with a bounded query
``{files_id, n: {$gte: first, $lt: last + 1}}``: only the chunks a range needs, one round
trip (pymongo's GridOut seek/read fetches up to 101 chunks per fresh read, ~100 ms).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from bson import ObjectId
from bson.errors import InvalidId
from pymongo.database import Database

from .chunkcache import ChunkCache, FileCache

RANGE_RE = re.compile(r"^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$", re.IGNORECASE)
FILE_READ = 256 * 1024


class RangeNotSatisfiableError(ValueError):
    """The Range header asks for bytes beyond the end."""


def parse_range(header: str | None, length: int) -> tuple[int, int] | None:
    """Return the inclusive (start, end) of a single byte range, or None to send it all.

    Malformed headers and multi-range requests are ignored (a full 200 is always allowed);
    a syntactically valid range that selects nothing raises :class:`RangeNotSatisfiableError`.
    """
    if not header:
        return None
    match = RANGE_RE.match(header)
    if not match:
        return None
    first, last = match.groups()
    if not first and not last:
        return None
    if not first:  # suffix: the last N bytes
        suffix = int(last)
        if suffix == 0 or length == 0:
            raise RangeNotSatisfiableError(header)
        return max(0, length - suffix), length - 1
    start = int(first)
    end = int(last) if last else length - 1
    if last and end < start:
        return None  # invalid range: ignore the header
    if start >= length:
        raise RangeNotSatisfiableError(header)
    return start, min(end, length - 1)


def etag_matches(if_none_match: str | None, etag: str) -> bool:
    """Weak comparison of an If-None-Match header against our (strong) ETag."""
    if not if_none_match:
        return False
    if if_none_match.strip() == "*":
        return True
    wanted = etag.strip('"')
    for candidate in if_none_match.split(","):
        tag = candidate.strip()
        if tag.startswith("W/"):
            tag = tag[2:]
        if tag.strip('"') == wanted:
            return True
    return False


class ByteSource(Protocol):
    length: int
    content_type: str

    @property
    def etag(self) -> str:
        """A strong entity tag, quoted."""
        ...

    def iter_range(self, start: int, end: int) -> Iterator[bytes]:
        """Yield the bytes start..end (inclusive)."""
        ...


@dataclass
class GridFSVideo:
    """One GridFS file, read by bounded chunk queries."""

    db: Database[Any]
    bucket: str
    file_id: ObjectId
    length: int
    chunk_size: int
    content_type: str = "video/webm"
    cache: ChunkCache | None = None

    @property
    def etag(self) -> str:
        return f'"{self.file_id}"'

    def iter_range(self, start: int, end: int) -> Iterator[bytes]:
        if end < start:
            return
        first = start // self.chunk_size
        last = end // self.chunk_size
        if self.cache is not None:
            chunks = self.cache.chunks(self.db[f"{self.bucket}.chunks"], self.file_id, first, last)
            for n, data in chunks:
                offset = n * self.chunk_size
                lo = max(start - offset, 0)
                hi = min(end - offset + 1, len(data))
                yield data[lo:hi]
            return
        cursor = (
            self.db[f"{self.bucket}.chunks"]
            .find(
                {"files_id": self.file_id, "n": {"$gte": first, "$lt": last + 1}},
                {"_id": 0, "n": 1, "data": 1},
            )
            .sort("n", 1)
            .batch_size(max(1, min(last - first + 1, 64)))
        )
        expected = first
        try:
            for chunk in cursor:
                if chunk["n"] != expected:
                    raise OSError(f"GridFS file {self.file_id}: chunk {expected} missing")
                data: bytes = chunk["data"]
                offset = chunk["n"] * self.chunk_size
                lo = max(start - offset, 0)
                hi = min(end - offset + 1, len(data))
                yield data[lo:hi]
                expected += 1
        finally:
            cursor.close()
        if expected != last + 1:
            raise OSError(f"GridFS file {self.file_id}: chunks {expected}..{last} missing")


def find_video(
    db: Database[Any],
    bucket: str,
    raw_id: str,
    cache: ChunkCache | None = None,
    files: FileCache | None = None,
) -> GridFSVideo | None:
    """Look up a GridFS file by its hex id; None if the id is invalid or unknown.

    With ``files``, the files document comes from that cache (one query per id, however many
    requests ask at once); with ``cache``, the chunks are read through it.
    """
    try:
        file_id = ObjectId(raw_id)
    except (InvalidId, TypeError):
        return None

    def load(oid: ObjectId) -> dict[str, Any] | None:
        return db[f"{bucket}.files"].find_one({"_id": oid}, {"length": 1, "chunkSize": 1})

    doc = files.get(file_id, load) if files is not None else load(file_id)
    if doc is None:
        return None
    return GridFSVideo(
        db=db,
        bucket=bucket,
        file_id=file_id,
        length=int(doc["length"]),
        chunk_size=int(doc["chunkSize"]),
        cache=cache,
    )


def list_videos(db: Database[Any], bucket: str, limit: int = 50) -> list[dict[str, Any]]:
    """Newest stored videos as announcement-shaped dicts."""
    docs = db[f"{bucket}.files"].find({}, sort=[("uploadDate", -1)], limit=limit)
    return [describe(doc) for doc in docs]


def describe(doc: dict[str, Any]) -> dict[str, Any]:
    """The public JSON view of a GridFS files document."""
    meta = doc.get("metadata") or {}
    file_id = str(doc["_id"])
    uploaded = doc.get("uploadDate")
    return {
        "type": "video",
        "fileid": file_id,
        "url": f"/video/{file_id}.webm",
        "filename": meta.get("original_filename", doc.get("filename", "")),
        "uploader": meta.get("uploader", ""),
        "duration": meta.get("duration", 0.0),
        "size": int(doc.get("length", 0)),
        "codec": meta.get("codec", ""),
        "uploaded": uploaded.isoformat() + "Z" if uploaded is not None else None,
    }


@dataclass
class LocalFile:
    """A file under ``local_media_dir``, served by the same Range code (benchmark baseline)."""

    path: Path
    length: int
    mtime_ns: int
    content_type: str = "video/webm"

    @property
    def etag(self) -> str:
        return f'"{self.mtime_ns:x}-{self.length:x}"'

    def iter_range(self, start: int, end: int) -> Iterator[bytes]:
        with self.path.open("rb") as handle:
            handle.seek(start)
            remaining = end - start + 1
            while remaining > 0:
                data = handle.read(min(FILE_READ, remaining))
                if not data:
                    raise OSError(f"{self.path} shrank while reading")
                remaining -= len(data)
                yield data


def find_local(directory: str, name: str) -> LocalFile | None:
    """A plain file directly inside ``directory`` (no path traversal), or None."""
    if not directory or "/" in name or name.startswith("."):
        return None
    path = Path(directory) / name
    try:
        stat = path.stat()
    except OSError:
        return None
    if not path.is_file():
        return None
    return LocalFile(path=path, length=stat.st_size, mtime_ns=stat.st_mtime_ns)
