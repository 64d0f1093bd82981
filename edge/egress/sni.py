"""The server name a TLS client asks for, read from its ClientHello without terminating TLS. Pure.

Theory of operation. The caller keeps every byte the client sent so far and calls `read_hello()`
after each read; it answers `NEED_MORE` until the whole ClientHello is there, then a `Hello` (the
name, or None when the client sent no server_name). Nothing is consumed: the same bytes go to the
destination unchanged once the connection is allowed.

The ClientHello may arrive in any number of reads and records. RFC 8446 section 5.1: "Handshake
messages MAY be coalesced into a single TLSPlaintext record or fragmented across several records",
so the handshake bytes are the concatenation of the fragments of consecutive handshake records
(content type 22); the ClientHello is the first handshake message, type 1, with a 3-byte length.

    record:    type(1)=22  legacy_version(2)  length(2)  fragment
    handshake: msg_type(1)=1  length(3)  ClientHello
    ClientHello: legacy_version(2) random(32) session_id<0..32> cipher_suites<2..2^16-2>
                 compression_methods<1..2^8-1> extensions<8..2^16-1> (absent before TLS 1.2: no SNI)
    server_name (RFC 6066 section 3, extension 0): server_name_list<1..2^16-1> of
                 name_type(1)=0 host_name<1..2^16-1>

Unknown extensions (GREASE values 0x?A?A among them, RFC 8701) are skipped by their length. An
extension type twice is malformed (RFC 8446 section 4.2: "There MUST NOT be more than one extension of
the same type"), and so is a second host_name (RFC 6066: "MUST NOT contain more than one name of the
same name_type"): a filter that read the first name while the server used the last would be fooled.

What is not a ClientHello (another record type, SSLv2's hello, a byte in the wrong place) is
`NotTls(reason)`: the caller then decides without a name.
"""

from __future__ import annotations

from dataclasses import dataclass

from edge.catalog.model import normalize_hostname

HANDSHAKE = 22
CLIENT_HELLO = 1
SERVER_NAME = 0
HOST_NAME = 0
#: TLSPlaintext.length: "MUST NOT exceed 2^14 bytes" (RFC 8446 section 5.1).
MAX_FRAGMENT = 1 << 14


class NeedMore:
    __slots__ = ()

    def __repr__(self) -> str:
        return "NEED_MORE"


NEED_MORE = NeedMore()


@dataclass(frozen=True, slots=True)
class Hello:
    """A whole ClientHello: its server name (lower case, no trailing dot) or None, and its
    legacy_version (0x0303 from TLS 1.2 and 1.3 clients), which the refusal's alert record echoes."""

    name: str | None
    version: int
    #: The host_name was present but is no host name (an IP literal, bad characters): kept for the log.
    raw_name: str | None = None


@dataclass(frozen=True, slots=True)
class NotTls:
    reason: str


Result = NeedMore | Hello | NotTls


def read_hello(data: bytes | bytearray | memoryview, max_bytes: int = 65536) -> Result:
    """The ClientHello in `data` (all bytes received so far), NEED_MORE, or NotTls."""
    data = bytes(data)
    handshake = bytearray()
    pos = 0
    while True:
        if len(data) - pos < 5:
            return _more(data, max_bytes)
        ctype, major, minor = data[pos], data[pos + 1], data[pos + 2]
        length = int.from_bytes(data[pos + 3 : pos + 5], "big")
        if ctype != HANDSHAKE:
            return NotTls("not a handshake record" if pos == 0 else f"record type {ctype} inside the ClientHello")
        if major != 3 or minor > 4:
            return NotTls(f"record version {major}.{minor}")
        if length == 0 or length > MAX_FRAGMENT:
            return NotTls(f"record length {length}")
        if len(data) - pos - 5 < length:
            return _more(data, max_bytes)
        handshake += data[pos + 5 : pos + 5 + length]
        pos += 5 + length
        if handshake[0] != CLIENT_HELLO:
            return NotTls(f"handshake message {handshake[0]} first")
        if len(handshake) < 4:
            continue
        size = int.from_bytes(handshake[1:4], "big")
        if 4 + size > max_bytes:
            return NotTls(f"a ClientHello of {size} bytes")
        if len(handshake) >= 4 + size:
            return _parse(memoryview(handshake)[4 : 4 + size])


def _more(data: bytes, max_bytes: int) -> Result:
    return NotTls(f"no ClientHello in {len(data)} bytes") if len(data) >= max_bytes else NEED_MORE


class _Malformed(Exception):
    pass


class _Reader:
    __slots__ = ("buf", "pos")

    def __init__(self, buf: memoryview) -> None:
        self.buf = buf
        self.pos = 0

    def take(self, n: int) -> memoryview:
        if self.pos + n > len(self.buf):
            raise _Malformed("truncated")
        out = self.buf[self.pos : self.pos + n]
        self.pos += n
        return out

    def number(self, n: int) -> int:
        return int.from_bytes(self.take(n), "big")

    def vector(self, length_bytes: int) -> _Reader:
        return _Reader(self.take(self.number(length_bytes)))

    @property
    def left(self) -> int:
        return len(self.buf) - self.pos


def _parse(body: memoryview) -> Hello | NotTls:
    try:
        r = _Reader(body)
        version = r.number(2)
        r.take(32)  # random
        if r.vector(1).left > 32:
            raise _Malformed("session_id over 32 bytes")
        suites = r.vector(2)
        if suites.left < 2 or suites.left % 2:
            raise _Malformed("cipher_suites")
        if r.vector(1).left < 1:
            raise _Malformed("compression_methods")
        if not r.left:
            return Hello(None, version)  # no extensions at all (SSL 3.0 / TLS 1.0 style)
        extensions = r.vector(2)
        if r.left:
            raise _Malformed("bytes after the extensions")
        seen: set[int] = set()
        raw: str | None = None
        while extensions.left:
            ext_type = extensions.number(2)
            ext = extensions.vector(2)
            if ext_type in seen:
                raise _Malformed(f"extension {ext_type} twice")
            seen.add(ext_type)
            if ext_type == SERVER_NAME:
                raw = _server_name(ext)
        if raw is None:
            return Hello(None, version)
        name = normalize_hostname(raw)
        return Hello(name, version, None if name is not None else raw)
    except _Malformed as exc:
        return NotTls(f"malformed ClientHello: {exc}")


def _server_name(ext: _Reader) -> str | None:
    if not ext.left:
        return None  # an empty server_name (what servers send back) carries no name
    names = ext.vector(2)
    if ext.left or not names.left:
        raise _Malformed("server_name")
    found: str | None = None
    while names.left:
        name_type = names.number(1)
        value = bytes(names.vector(2).buf)
        if name_type != HOST_NAME:
            continue
        if found is not None:
            raise _Malformed("two host_names")
        if not value:
            raise _Malformed("empty host_name")
        found = value.decode("latin-1")
    return found
