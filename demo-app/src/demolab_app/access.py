"""Who may see what: the presenter's pages answer loopback clients only.

One place for the rule, so that every presenter-only view and Socket.IO event asks the same
question. A client is local when the connection's peer address (``REMOTE_ADDR``, set by the
WSGI server from the socket, never from a header) is a loopback address: 127.0.0.0/8, ::1 or
an IPv4-mapped ::ffff:127.x.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Mapping
from typing import Any

from pyramid.request import Request
from pyramid.response import Response

FORBIDDEN_TEXT = (
    "403 Forbidden: this page is for the presenter's own machine only "
    "(open it on the laptop itself, at http://127.0.0.1).\n"
)


def is_local_address(address: str | None) -> bool:
    """True for a loopback peer address; False for anything else, unparsable or missing."""
    if not address:
        return False
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    mapped = getattr(ip, "ipv4_mapped", None)
    if mapped is not None:
        ip = mapped
    return ip.is_loopback


def is_local_environ(environ: Mapping[str, Any] | None) -> bool:
    """The rule for a WSGI environ (Socket.IO handlers get the connection's environ)."""
    return bool(environ) and is_local_address(environ.get("REMOTE_ADDR"))  # type: ignore[union-attr]


def is_local(request: Request) -> bool:
    return is_local_environ(request.environ)


def forbidden(request: Request) -> Response:
    response = Response(FORBIDDEN_TEXT, status=403, content_type="text/plain", charset="utf-8")
    response.cache_control = "no-store"
    return response


def local_only(view: Callable[[Request], Response]) -> Callable[[Request], Response]:
    """Wrap a view: non-loopback clients get a 403 and the view never runs."""

    def guarded(request: Request) -> Response:
        if not is_local(request):
            return forbidden(request)
        return view(request)

    guarded.__name__ = view.__name__
    guarded.__doc__ = view.__doc__
    return guarded
