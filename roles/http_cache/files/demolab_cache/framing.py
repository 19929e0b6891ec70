"""Incremental HTTP/1.x response framing.

Tells where one response ends in a byte stream, without buffering the body:
status line + headers, then a Content-Length body, a chunked body (with
trailers) or no body at all (HEAD, 1xx, 204, 304).  A body delimited only by
the connection closing cannot be told apart from a dropped connection, so it is
reported as not cacheable.
"""

from __future__ import annotations

MAX_HEADER_BYTES = 256 * 1024


class FramingError(Exception):
    """The upstream stream is not HTTP/1.x we can delimit."""


class ResponseFraming:
    """Feed bytes with feed(); it returns how many belong to this response."""

    HEAD, LENGTH, CHUNK_SIZE, CHUNK_DATA, CHUNK_CRLF, TRAILER, DONE = range(7)

    def __init__(self, method: str) -> None:
        self.method = method.upper()
        self.state = self.HEAD
        self.status = 0
        self.header_bytes = bytearray()
        self.header_len = 0
        self.remaining = 0
        self.line = bytearray()
        self.interim = False        # a 1xx response just ended (not the final one)
        self.upgrade = False        # 101: the connection stops being HTTP
        self.until_close = False    # body delimited by close: not cacheable

    @property
    def done(self) -> bool:
        return self.state == self.DONE

    def feed(self, data: memoryview) -> int:
        """Consume bytes of this response; return the count consumed.

        Stops at the end of the response (done) or of the header block of an
        interim 1xx response (interim), leaving the rest for the caller.
        """
        self.interim = False
        pos = 0
        size = len(data)
        while pos < size and self.state != self.DONE:
            if self.state == self.HEAD:
                pos += self._feed_head(data[pos:])
                if self.interim or self.upgrade or self.until_close:
                    return pos
            elif self.state == self.LENGTH:
                take = min(self.remaining, size - pos)
                self.remaining -= take
                pos += take
                if self.remaining == 0:
                    self.state = self.DONE
            elif self.state == self.CHUNK_DATA:
                take = min(self.remaining, size - pos)
                self.remaining -= take
                pos += take
                if self.remaining == 0:
                    self.state = self.CHUNK_CRLF
                    self.line.clear()
            else:  # CHUNK_SIZE, CHUNK_CRLF, TRAILER: line oriented
                pos += self._feed_line(data[pos:])
        return pos

    def _feed_head(self, data: memoryview) -> int:
        # Look for the blank line, also across chunk boundaries.
        start = max(0, len(self.header_bytes) - 3)
        self.header_bytes += data
        end = self.header_bytes.find(b"\r\n\r\n", start)
        if end < 0:
            if len(self.header_bytes) > MAX_HEADER_BYTES:
                raise FramingError("response header block too large")
            return len(data)
        used = end + 4 - (len(self.header_bytes) - len(data))
        del self.header_bytes[end + 4:]
        self.header_len = end + 4
        self._parse_head(bytes(self.header_bytes[:end]))
        return used

    def _parse_head(self, head: bytes) -> None:
        lines = head.split(b"\r\n")
        parts = lines[0].split(None, 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1."):
            raise FramingError("not an HTTP/1.x status line: %r" % lines[0][:80])
        try:
            self.status = int(parts[1])
        except ValueError as exc:
            raise FramingError("bad status code %r" % parts[1]) from exc
        headers: dict[bytes, bytes] = {}
        for line in lines[1:]:
            name, sep, value = line.partition(b":")
            if sep:
                key = name.strip().lower()
                value = value.strip()
                headers[key] = headers[key] + b"," + value if key in headers else value
        if self.status == 101:
            self.upgrade = True
            return
        if 100 <= self.status < 200:
            # Interim response: the final one follows with its own header block.
            self.interim = True
            self.header_bytes = bytearray()
            return
        if self.method == "HEAD" or self.status in (204, 304):
            self.state = self.DONE
            return
        coding = headers.get(b"transfer-encoding", b"").lower()
        if coding:
            if coding.split(b",")[-1].strip() == b"chunked":
                self.state = self.CHUNK_SIZE
                return
            self.until_close = True
            return
        if b"content-length" in headers:
            values = {v.strip() for v in headers[b"content-length"].split(b",")}
            if len(values) != 1 or not next(iter(values)).isdigit():
                raise FramingError("bad Content-Length %r" % headers[b"content-length"])
            self.remaining = int(next(iter(values)))
            self.state = self.LENGTH if self.remaining else self.DONE
            return
        self.until_close = True

    def _feed_line(self, data: memoryview) -> int:
        window = bytes(data[:8192])
        nl = window.find(b"\n")
        if nl < 0:
            if len(self.line) + len(window) >= 8192:
                raise FramingError("chunk framing line too long")
            self.line += window
            return len(window)
        self.line += data[: nl + 1]
        line = bytes(self.line).rstrip(b"\r\n")
        self.line.clear()
        if self.state == self.CHUNK_SIZE:
            size_text = line.split(b";", 1)[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError as exc:
                raise FramingError("bad chunk size %r" % size_text) from exc
            if size == 0:
                self.state = self.TRAILER
            else:
                self.remaining = size
                self.state = self.CHUNK_DATA
        elif self.state == self.CHUNK_CRLF:
            if line:
                raise FramingError("missing CRLF after chunk data")
            self.state = self.CHUNK_SIZE
        elif self.state == self.TRAILER and not line:
            self.state = self.DONE
        return nl + 1
