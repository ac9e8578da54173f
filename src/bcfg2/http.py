"""What the HTTP cores share: credentials before the body, body limits, and the 401 challenge.

Agents send one XML-RPC call per connection as an HTTP/1.0 POST with a
Content-Length. ``answer`` takes a call from its headers to its result:
the caller is authenticated from the headers first, and only then is the
body read. A refusal here is a ``Refused`` carrying the HTTP status and one
line of text for the client; each core sends it its own way.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, BinaryIO

from bcfg2 import xmlrpc
from bcfg2.xmlrpc import Request, Result, parse_basic_auth

if TYPE_CHECKING:
    from bcfg2.connections import Ticket
    from bcfg2.core import NetworkCore

#: the WWW-Authenticate header agents expect with a 401
CHALLENGE = 'Basic realm="Bcfg2 Server"'
UNAUTHORIZED_TEXT = b"Unauthorized\n"


class Refused(Exception):
    """A request refused before it reaches the core: an HTTP status and one line."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def content_length(header: str | None, limit: int) -> int:
    """The body length a request announces, checked against ``[server] max_request_size``."""
    if header is None:
        raise Refused(411, "a Content-Length is required")
    try:
        length = int(header)
        if length < 0:
            raise ValueError
    except ValueError:
        raise Refused(400, f"invalid Content-Length {header[:64]!r}") from None
    if length > limit:
        raise Refused(413, f"request body of {length} bytes exceeds the limit of {limit}")
    return length


def read_body(rfile: BinaryIO, length: int) -> bytes:
    """Exactly ``length`` bytes of body; a short or broken read is refused."""
    try:
        body = rfile.read(length)
    except OSError as err:  # [server] connection_timeout, or the connection broke
        raise Refused(408, f"request body not received: {err}") from None
    if len(body) < length:
        raise Refused(400, f"truncated request: {len(body)} of {length} bytes")
    return body


def make_request(body: bytes, address: tuple[str, int], cert: dict | None,
                 authorization: str | None) -> Request:
    """The transport-neutral request for the core's one door."""
    user, password = parse_basic_auth(authorization)
    return Request(body=body, address=(address[0], address[1]), cert=cert or None,
                   user=user, password=password)


def answer(core: NetworkCore, ticket: Ticket, rfile: BinaryIO, length: int,
           address: tuple[str, int], cert: dict[str, Any] | None,
           authorization: str | None) -> Result:
    """Authenticate from the headers, then read the body and take the call through the door.

    An unauthenticated caller gets ``xmlrpc.UNAUTHORIZED`` with its body
    left unread; a body that does not arrive raises ``Refused``. The ticket
    learns when the request is read and when the response starts.
    """
    request = make_request(b"", address, cert, authorization)
    caller = xmlrpc.authenticate(core, request)
    if caller is None:
        ticket.writing()
        return xmlrpc.UNAUTHORIZED
    body = read_body(rfile, length)
    ticket.processing()
    result = xmlrpc.handle(core, dataclasses.replace(request, body=body), caller)
    ticket.writing()
    return result


def coding_headers(coding: str | None) -> dict[str, str]:
    """The headers of a response in this content coding (None: as it is)."""
    if coding is None:
        return {}
    return {"Content-Encoding": coding, "Vary": "Accept-Encoding"}


__all__ = ["CHALLENGE", "UNAUTHORIZED_TEXT", "Refused", "answer", "coding_headers",
           "content_length", "make_request", "read_body"]
