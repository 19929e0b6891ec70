"""Unit tests of the response framing (no processes)."""

import pytest
from demolab_cache.framing import FramingError, ResponseFraming

CHUNKED = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
           b"5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\nX-Trailer: yes\r\n\r\n")
LENGTH = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"


@pytest.mark.parametrize("raw", [CHUNKED, LENGTH])
def test_every_split_point_finds_the_end(raw):
    for cut in range(1, len(raw)):
        f = ResponseFraming("GET")
        used = f.feed(memoryview(raw[:cut]))
        used += f.feed(memoryview(raw[used:] + b"NEXT"))
        assert f.done and used == len(raw), cut


@pytest.mark.parametrize("method,head", [
    ("HEAD", b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n"),
    ("GET", b"HTTP/1.1 304 Not Modified\r\nContent-Length: 99\r\n\r\n"),
    ("GET", b"HTTP/1.1 204 No Content\r\n\r\n"),
])
def test_bodyless_responses(method, head):
    f = ResponseFraming(method)
    assert f.feed(memoryview(head + b"more")) == len(head) and f.done


def test_interim_then_final():
    f = ResponseFraming("POST")
    interim = b"HTTP/1.1 100 Continue\r\n\r\n"
    assert f.feed(memoryview(interim + LENGTH)) == len(interim) and f.interim
    assert f.feed(memoryview(LENGTH)) == len(LENGTH) and f.done and f.status == 200


def test_close_delimited_is_not_cacheable():
    f = ResponseFraming("GET")
    f.feed(memoryview(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nbody"))
    assert f.until_close and not f.done


def test_garbage_is_rejected():
    with pytest.raises(FramingError):
        ResponseFraming("GET").feed(memoryview(b"SSH-2.0-OpenSSH\r\n\r\n"))
