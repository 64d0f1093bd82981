"""The fast lane's HTTP/1.1 head reader and writer. Pure: bytes in, heads out; heads in, bytes out.

Theory of operation. h11 is the reference parser of this edge and keeps the state of every unusual
exchange. But on the common exchange (a whole request head in one read, no body or a small one that
arrived with it, answered by a Content-Length response) h11's generality costs a third of the time
per request. This module reads exactly that common case, and nothing more:

  - a request head accepted here is one h11 (plus request.check_request) would accept, read the same
    way: the same method, target, version and (lower-cased name, stripped value) fields;
  - anything else returns None, and the caller hands the very same bytes to h11, which then answers
    exactly as it always did, errors included. So the fast lane never decides what is malformed; it only
    recognises what is plainly well-formed.

A request is plain when it has: an origin-form target; HTTP/1.0 or 1.1; header names that are tokens
without '_', values of visible characters, spaces and tabs (no obs-fold, no bare CR or LF); exactly one
Host (HTTP/1.1) or at most one (1.0); at most one Content-Length; no Transfer-Encoding, no Expect, no
Connection: upgrade; not CONNECT; within the head size and field count limits.

A response is plain when it has: HTTP/1.0 or 1.1; a final status (200-599; any 1xx goes to h11); the
same field rules; no Transfer-Encoding; and a known body length: one Content-Length, or none needed
(a HEAD request, 204, 304).

h11 is stricter in a few places than this grammar could be, never looser; tests/http/test_h1.py holds
the two to that with a table of inputs and a differential fuzz.
"""

from __future__ import annotations

import re

# RFC 9110 5.6.2 tchar, without '_' (request.check_request refuses '_': such names go to h11 for the 400).
_NAME = rb"[-!#$%&'*+.^`|~0-9a-zA-Z]+"
# RFC 9110 5.5: a field line is name ":" OWS value OWS; any run of visible characters (and obs-text),
# spaces and tabs is such a value once stripped of the outer spaces, so one class checks it.
_FIELDS = rb"((?:" + _NAME + rb":[\t\x20-\x7e\x80-\xff]*\r\n)*)\r\n"
_REQUEST = re.compile(rb"(" + _NAME + rb") (/[\x21-\x7e]*) HTTP/1\.([01])\r\n" + _FIELDS)
_RESPONSE = re.compile(rb"HTTP/1\.([01]) ([2-5][0-9][0-9])((?: [\t\x20-\x7e\x80-\xff]*)?)\r\n" + _FIELDS)

_OWS = b" \t"
# Names the field reader looks at; every other field goes through as it came.
_R_HOST, _R_LENGTH, _R_CONNECTION = b"host", b"content-length", b"connection"
_REQUEST_REFUSE = frozenset((b"transfer-encoding", b"expect"))
_RESPONSE_REFUSE = frozenset((b"transfer-encoding",))
_WATCH = frozenset((_R_HOST, _R_LENGTH, _R_CONNECTION)) | _REQUEST_REFUSE | _RESPONSE_REFUSE
_NO_LIMIT = 1 << 30  # responses: h11 sets no field-count limit on them either
_NO_TOKENS: frozenset[bytes] = frozenset()
_BODILESS_STATUS = frozenset((b"204", b"304"))


class RequestHead:
    """A plain request head. `end`: offset just past its blank line; `length`: its body's byte count."""

    __slots__ = ("method", "target", "version", "headers", "host", "tokens", "length", "end", "keepalive")

    def __init__(
        self,
        method: bytes,
        target: bytes,
        version: bytes,
        headers: list[tuple[bytes, bytes]],
        host: bytes,
        tokens: frozenset[bytes],
        length: int,
        end: int,
    ) -> None:
        self.method = method
        self.target = target
        self.version = version
        self.headers = headers
        self.host = host
        self.tokens = tokens
        self.length = length
        self.end = end
        # RFC 9112 9.3: HTTP/1.1 persists unless "close"; h11 (and so edge) closes every HTTP/1.0 one.
        self.keepalive = version == b"1.1" and b"close" not in tokens


class ResponseHead:
    """A plain response head: `start` is the client's status line; `length` the body's byte count."""

    __slots__ = ("status", "start", "headers", "tokens", "length", "end", "keepalive")

    def __init__(
        self,
        status: int,
        start: bytes,
        headers: list[tuple[bytes, bytes]],
        tokens: frozenset[bytes],
        length: int,
        end: int,
        keepalive: bool,
    ) -> None:
        self.status = status
        self.start = start
        self.headers = headers
        self.tokens = tokens
        self.length = length
        self.end = end
        self.keepalive = keepalive


def _tokens(value: bytes, tokens: frozenset[bytes]) -> frozenset[bytes]:
    """`tokens` plus the lower-cased tokens of one Connection field value (headers.connection_tokens)."""
    return tokens.union([t.strip(_OWS).lower() for t in value.split(b",")])


class _Fields:
    """What one pass over a head's field lines found (see _read_fields)."""

    __slots__ = ("headers", "host", "length", "tokens")

    def __init__(
        self, headers: list[tuple[bytes, bytes]], host: bytes | None, length: int, tokens: frozenset[bytes]
    ) -> None:
        self.headers = headers
        self.host = host
        self.length = length
        self.tokens = tokens


def _read_fields(block: bytes, max_fields: int, refuse: frozenset[bytes]) -> _Fields | None:
    """One pass over the field lines of a head the regex already checked: (lower-cased name, value
    without OWS) per line, watching the few names that decide framing and routing. None when the head
    is not plain: a name in `refuse`, a second Host or Content-Length, a length that is not digits,
    more than `max_fields` lines."""
    lines = block.split(b"\r\n")
    lines.pop()  # the block ends with CRLF: an empty last piece
    if len(lines) > max_fields:
        return None
    headers = []
    host = None
    length = -1
    tokens = _NO_TOKENS
    for line in lines:
        name, _, value = line.partition(b":")
        name = name.lower()
        value = value.strip(_OWS)
        headers.append((name, value))
        if name in _WATCH:
            if name == _R_LENGTH:
                if length >= 0 or not value.isdigit():
                    return None
                length = int(value)
            elif name == _R_CONNECTION:
                tokens = _tokens(value, tokens)
            elif name == _R_HOST:
                if host is not None:
                    return None
                host = value
            elif name in refuse:
                return None
    return _Fields(headers, host, length, tokens)


def parse_request(buf: bytes, end: int, max_bytes: int, max_fields: int) -> RequestHead | None:
    """The plain request head in `buf`, whose blank line starts at `end` (buf.find(b"\\r\\n\\r\\n")).

    None when the head is not plain (see the module docstring): then h11 reads it instead.
    """
    stop = end + 4
    if stop > max_bytes:
        return None
    m = _REQUEST.match(buf, 0, stop)
    if m is None or m.end() != stop:
        return None
    method, target, minor, block = m.groups()
    if method == b"CONNECT":
        return None
    f = _read_fields(block, max_fields, _REQUEST_REFUSE)
    if f is None or b"upgrade" in f.tokens:
        return None
    version = b"1.1" if minor == b"1" else b"1.0"
    host = f.host
    if host is None:
        if version == b"1.1":
            return None  # RFC 9112 3.2: h11 answers the 400
        host = b""
    return RequestHead(method, target, version, f.headers, host, f.tokens, max(f.length, 0), stop)


def parse_response(buf: bytes, end: int, head_request: bool) -> ResponseHead | None:
    """The plain response head in `buf` (blank line at `end`), or None when h11 must read it."""
    stop = end + 4
    m = _RESPONSE.match(buf, 0, stop)
    if m is None or m.end() != stop:
        return None
    minor, status, reason, block = m.groups()
    # Transfer-Encoding: chunked or close-delimited framing is h11's.
    f = _read_fields(block, _NO_LIMIT, _RESPONSE_REFUSE)
    if f is None:
        return None
    length = f.length
    # RFC 9112 6.3: a response to HEAD, and any 204 or 304, ends with its head, whatever it declares.
    if head_request or status in _BODILESS_STATUS:
        length = 0
    elif length < 0:
        return None  # no length: read to close; h11 handles it
    keepalive = minor == b"1" and b"close" not in f.tokens
    return ResponseHead(
        int(status), b"HTTP/1.1 " + status + reason + b"\r\n", f.headers, f.tokens, length, stop, keepalive
    )


def request_bytes(method: bytes, target: bytes, headers: list[tuple[bytes, bytes]]) -> bytes:
    """The upstream request head: always HTTP/1.1, fields as given (already rewritten and checked)."""
    parts = [method, b" ", target, b" HTTP/1.1\r\n"]
    for name, value in headers:
        parts += (name, b": ", value, b"\r\n")
    parts.append(b"\r\n")
    return b"".join(parts)


def response_bytes(start: bytes, headers: list[tuple[bytes, bytes]]) -> bytes:
    """The client's response head from its status line and (already rewritten) fields."""
    parts = [start]
    for name, value in headers:
        parts += (name, b": ", value, b"\r\n")
    parts.append(b"\r\n")
    return b"".join(parts)
