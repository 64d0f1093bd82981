"""The name an HTTP request on port 80 is for, read from its head without changing a byte. Pure.

The caller keeps every byte received so far and calls `read_head()` after each read: `NEED_MORE`
until the head has ended (an empty line), then a `Head`. The head goes to the destination unchanged.

Which name: RFC 9112 section 3.2.2, "When an origin server receives a request with an absolute-form
of request-target, the origin server MUST ignore the received Host header field ... and instead use
the host information of the request-target": so the target's authority when the target is absolute
(`GET http://example.com/ HTTP/1.1`), else the Host field. The decision must read the name the
destination server will use, or a sandbox could show one name and be served another. For the same
reason a head with two Host fields, or a Host with whitespace before the colon (RFC 9112 section
5.1: "MUST" be rejected), has no usable name: it is `Head(name=None, malformed=...)`, decided by CIDR.

The port in Host is not used: edge dials the port the sandbox dialled (80). An IP literal is no name.

Only the first request of a connection is read: edge then moves bytes without looking. A second
request on the same connection reaches the same server edge dialled for the first (see the README's
limits: the same as a second name inside one TLS connection).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from edge.catalog.model import normalize_hostname
from edge.egress.sni import NEED_MORE, NeedMore

_REQUEST_LINE = re.compile(rb"([!#$%&'*+.^_`|~0-9A-Za-z-]+) (\S+) HTTP/(\d)\.(\d)\Z")
_FIELD = re.compile(rb"([!#$%&'*+.^_`|~0-9A-Za-z-]+):[ \t]*(.*?)[ \t]*\Z")
_AUTHORITY = re.compile(r"(?:[^@/?#]*@)?(\[[0-9a-fA-F:.]+\]|[^:/?#\[\]]*)(?::(\d*))?\Z")
#: The request fields the refusal page reads (render_error: HTML or JSON, and CORS).
_KEPT = frozenset((b"accept", b"sec-fetch-mode", b"x-requested-with", b"origin"))


@dataclass(frozen=True, slots=True)
class Head:
    #: The host name the request is for (lower case, no trailing dot), None without a usable one.
    name: str | None
    #: The request's fields the refusal page needs, names in lower case.
    headers: tuple[tuple[bytes, bytes], ...] = ()
    #: Why there is no name although a head was read ("" when fine): for the log.
    malformed: str = ""
    #: The Host as sent, when it was no name (an IP literal): for the log.
    raw_host: str | None = None


@dataclass(frozen=True, slots=True)
class NotHttp:
    reason: str


Result = NeedMore | Head | NotHttp


def read_head(data: bytes | bytearray, max_bytes: int = 65536) -> Result:
    """The request head in `data` (all bytes received so far), NEED_MORE, or NotHttp."""
    data = bytes(data)
    end = data.find(b"\r\n\r\n")
    if end < 0:
        lf = data.find(b"\n\n")  # bare LF line ends: tolerated by servers, so read the same way
        end = lf
    if end < 0:
        if len(data) >= max_bytes:
            return NotHttp(f"no end of head in {len(data)} bytes")
        first = data.split(b"\n", 1)[0]
        if b"\n" in data or len(first) > 8192:
            if not _REQUEST_LINE.match(first.rstrip(b"\r")):
                return NotHttp("not an HTTP request line")
        return NEED_MORE
    lines = data[:end].replace(b"\r\n", b"\n").split(b"\n")
    m = _REQUEST_LINE.match(lines[0])
    if m is None:
        return NotHttp("not an HTTP request line")
    target = m.group(2)
    hosts: list[bytes] = []
    kept: list[tuple[bytes, bytes]] = []
    malformed = ""
    for line in lines[1:]:
        if line[:1] in (b" ", b"\t"):
            malformed = malformed or "obsolete line folding"
            continue
        f = _FIELD.match(line)
        if f is None:
            malformed = malformed or "a malformed header field"
            continue
        field_name = f.group(1).lower()
        if field_name == b"host":
            hosts.append(f.group(2))
        elif field_name in _KEPT:
            kept.append((field_name, f.group(2)))
    headers = tuple(kept)
    if malformed:
        return Head(None, headers, malformed)
    if len(hosts) > 1:
        return Head(None, headers, "two Host fields")
    if target[:7].lower() == b"http://" or target[:8].lower() == b"https://":
        authority = target.split(b"://", 1)[1].split(b"/", 1)[0].split(b"?", 1)[0]
        return _named(authority, headers)
    if hosts:
        return _named(hosts[0], headers)
    return Head(None, headers, "no Host")


def _named(authority: bytes, headers: tuple[tuple[bytes, bytes], ...]) -> Head:
    text = authority.decode("latin-1")
    m = _AUTHORITY.match(text)
    if m is None or (m.group(2) is not None and m.group(2) and not m.group(2).isdigit()):
        return Head(None, headers, "a malformed Host", text)
    host = m.group(1)
    if host.startswith("["):
        return Head(None, headers, "", text)  # an IPv6 literal
    name = normalize_hostname(host)
    if name is None:
        return Head(None, headers, "" if _is_ipv4(host) else "a malformed Host", text)
    return Head(name, headers)


def _is_ipv4(text: str) -> bool:
    parts = text.split(".")
    return len(parts) == 4 and all(p.isdigit() for p in parts)
