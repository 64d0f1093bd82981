"""Bytes in, values out: what the generator writes and how it reads what comes back. Pure, no I/O.

HTTP/1.1 is parsed by hand rather than with h11: the generator has to outrun the edge it measures, and
h11's parser costs ~30 us per message (bench/README.md, micro). What is read is only what the figures
need: the status, the body's framing (RFC 9112 6.3: Content-Length, chunked, or until close), whether
the connection may be reused, and the edge's own error code.

Error kinds. Every request ends answered or with exactly one kind, a short lower-case word:
the edge's own code (`X-Edge-Error`, else the `error` field of its E2B-shaped JSON body: `sandbox_not_found`,
`port_not_open`, `upstream_timeout`, `missing_token` ...), `sandbox_5xx` / `sandbox_4xx` for an answer
the sandbox itself gave, or one the client saw on the wire (`KINDS` below).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import struct
from dataclasses import dataclass

# --- error kinds the client sees itself -------------------------------------------------------------

CONNECT_REFUSED = "connect_refused"  # nothing listens at the edge's address (RST to the SYN)
CONNECT_TIMEOUT = "connect_timeout"  # no SYN-ACK within --timeout
CONNECT_ERROR = "connect_error"  # any other connect failure (unreachable, no route)
RESET = "reset"  # the peer reset the connection (ECONNRESET, EPIPE)
CLOSED = "closed"  # the peer closed cleanly before the answer was complete
TIMEOUT = "timeout"  # no complete answer within --timeout of the intended send time
TLS_ERROR = "tls_error"  # the TLS handshake failed (certificate, protocol)
BAD_RESPONSE = "bad_response"  # not HTTP/1.1, a wrong body, a wrong echo, a missing 101
SANDBOX_5XX = "sandbox_5xx"  # a 5xx the sandbox answered (no edge error code on it)
SANDBOX_4XX = "sandbox_4xx"
BACKLOG = "client_backlog"  # open-loop: the request waited --timeout for a free connection of this client
NOT_ROUTABLE = "not_routable"  # churn: a new sandbox never answered within --timeout of its registration
ADMIN_ERROR = "admin_error"  # churn: the admin API refused a registration or a removal
DNS_TIMEOUT = "dns_timeout"
DNS_NO_ANSWER = "dns_no_answer"  # NOERROR with no answer record
DNS_TRUNCATED = "dns_truncated"  # TC set and no answer: a rate limiter's slip (retry over TCP)
DNS_BAD_REPLY = "dns_bad_reply"

KINDS = (
    CONNECT_REFUSED,
    CONNECT_TIMEOUT,
    CONNECT_ERROR,
    RESET,
    CLOSED,
    TIMEOUT,
    TLS_ERROR,
    BAD_RESPONSE,
    SANDBOX_5XX,
    SANDBOX_4XX,
    BACKLOG,
    NOT_ROUTABLE,
    ADMIN_ERROR,
    DNS_TIMEOUT,
    DNS_NO_ANSWER,
    DNS_TRUNCATED,
    DNS_BAD_REPLY,
)

_CODE = re.compile(rb"^[a-z][a-z0-9_]{0,47}$")


def edge_code(raw: bytes | str | None) -> str | None:
    """An edge error code, if `raw` looks like one (so a hostile or broken header cannot invent kinds)."""
    if raw is None:
        return None
    if isinstance(raw, str):
        raw = raw.encode("ascii", "replace")
    raw = raw.strip().lower()
    return raw.decode() if _CODE.match(raw) else None


def edge_code_in_body(body: bytes) -> str | None:
    """The `error` of an edge error body (E2B's shape: `message`, `code` and `error` together), else None.

    For an edge older than the X-Edge-Error header. A sandbox's own JSON with an `error` field does not
    pass: it would need E2B's `code` and `message` beside it."""
    if not body.startswith(b"{") or len(body) > 4096:
        return None
    try:
        doc = json.loads(body)
    except ValueError:
        return None
    if isinstance(doc, dict) and {"error", "code", "message"} <= doc.keys() and isinstance(doc["error"], str):
        return edge_code(doc["error"])
    return None


def classify(status: int, edge_error: str | None, body: bytes = b"") -> str | None:
    """The error kind of an answer, or None when it counts as answered (1xx, 2xx, 3xx)."""
    if edge_error:
        return edge_error
    if status < 400:
        return None
    return edge_code_in_body(body) or (SANDBOX_5XX if status >= 500 else SANDBOX_4XX)


# --- requests ----------------------------------------------------------------------------------------


def host_for(port: int, sandbox_id: str, domain: str, suffix: str = "") -> str:
    """`<port>-<id>.<domain>` plus `:<edge port>` when the listener is not on the scheme's default port."""
    return f"{port}-{sandbox_id}.{domain}{suffix}"


def request_head(
    method: str, target: str, host: str, headers: list[tuple[str, str]] = (), length: int | None = None
) -> bytes:
    lines = [f"{method} {target} HTTP/1.1", f"host: {host}"]
    lines += [f"{name}: {value}" for name, value in headers]
    if length is not None:
        lines.append(f"content-length: {length}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


# --- response heads ----------------------------------------------------------------------------------


@dataclass(slots=True)
class Head:
    status: int
    length: int  # Content-Length, -1 when absent
    chunked: bool
    close: bool  # the server will close after this answer (Connection: close, or HTTP/1.0 without keep-alive)
    edge_error: str | None  # X-Edge-Error
    accept: bytes  # Sec-WebSocket-Accept
    content_type: bytes

    def has_body(self, method: str = "GET") -> bool:
        """RFC 9112 6.3: no body on HEAD, 1xx, 204, 304."""
        return not (method == "HEAD" or self.status < 200 or self.status in (204, 304))


def _field(low: bytes, raw: bytes, name: bytes) -> bytes | None:
    """The value of the first header field `name` (given as b"\r\nname:"), from the lower-cased head."""
    i = low.find(name)
    if i < 0:
        return None
    i += len(name)
    j = low.find(b"\r\n", i)
    return raw[i : j if j >= 0 else len(raw)].strip()


def parse_head(raw: bytes) -> Head:
    """A response head without its final CRLF CRLF. ValueError when it is not an HTTP/1.x response.

    Each field the generator needs is found with one bytes.find over the lower-cased head (C speed):
    a head of 8 fields parses in ~2 us where a Python loop over its lines takes ~8."""
    if not raw.startswith(b"HTTP/1.") or len(raw) < 12 or raw[12:13] not in (b"", b" ", b"\r"):
        raise ValueError(f"not an HTTP/1.x status line: {raw[:40]!r}")
    status = int(raw[9:12])
    low = raw.lower()
    length = -1
    chunked = False
    close = raw[7:8] == b"0"
    if b"\r\n" in low:
        value = _field(low, raw, b"\r\ncontent-length:")
        if value is not None:
            length = int(value)
        value = _field(low, low, b"\r\ntransfer-encoding:")
        if value is not None:
            chunked = value.endswith(b"chunked")
            if chunked:
                length = -1  # RFC 9112 6.3: Transfer-Encoding overrides Content-Length
        value = _field(low, low, b"\r\nconnection:")
        if value is not None:
            if b"close" in value:
                close = True
            elif b"keep-alive" in value:
                close = False
        error = _field(low, raw, b"\r\nx-edge-error:")
        accept = _field(low, raw, b"\r\nsec-websocket-accept:")
        ctype = _field(low, low, b"\r\ncontent-type:")
    else:
        error = accept = ctype = None
    return Head(status, length, chunked, close, edge_code(error), accept or b"", ctype or b"")


class Chunked:
    """An incremental chunked-body decoder (RFC 9112 7.1): feed() bytes, get body bytes; `done` at the end.

    `rest` holds what arrived after the last chunk's trailer (nothing, unless the peer pipelines)."""

    def __init__(self) -> None:
        self.buf = bytearray()
        self.left = 0
        self.state = "size"
        self.done = False
        self.rest = b""

    def feed(self, data: bytes) -> bytes:
        if self.done:
            self.rest += data
            return b""
        self.buf += data
        out = bytearray()
        while not self.done:
            if self.state == "size":
                i = self.buf.find(b"\r\n")
                if i < 0:
                    if len(self.buf) > 1024:
                        raise ValueError("chunk size line too long")
                    break
                size = int(bytes(self.buf[:i]).split(b";")[0].strip(), 16)
                del self.buf[: i + 2]
                self.left, self.state = size, ("data" if size else "trailer")
            elif self.state == "data":
                take = min(self.left, len(self.buf))
                if not take:
                    break
                out += self.buf[:take]
                del self.buf[:take]
                self.left -= take
                if not self.left:
                    self.state = "crlf"
            elif self.state == "crlf":
                if len(self.buf) < 2:
                    break
                if self.buf[:2] != b"\r\n":
                    raise ValueError("no CRLF after chunk data")
                del self.buf[:2]
                self.state = "size"
            else:  # trailer fields, then an empty line
                i = self.buf.find(b"\r\n")
                if i < 0:
                    break
                line = self.buf[:i]
                del self.buf[: i + 2]
                if not line:
                    self.done = True
                    self.rest = bytes(self.buf)
        return bytes(out)


# --- WebSocket (RFC 6455) ----------------------------------------------------------------------------

WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x1, 0x2, 0x8, 0x9, 0xA


def ws_key() -> str:
    return base64.b64encode(os.urandom(16)).decode()


def ws_accept(key: bytes | str) -> bytes:
    """Sec-WebSocket-Accept for a key (RFC 6455 4.2.2 item 5.4)."""
    if isinstance(key, str):
        key = key.encode()
    return base64.b64encode(hashlib.sha1(key.strip() + WS_GUID).digest())


def _xor(payload: bytes, mask: bytes) -> bytes:
    n = len(payload)
    if not n:
        return b""
    key = int.from_bytes((mask * (n // 4 + 1))[:n], "big")
    return (int.from_bytes(payload, "big") ^ key).to_bytes(n, "big")


def ws_frame(opcode: int, payload: bytes, mask: bytes | None = None) -> bytes:
    """One final frame; a client masks (RFC 6455 5.3), a server does not."""
    n = len(payload)
    first = bytes([0x80 | opcode])
    bit = 0x80 if mask is not None else 0
    if n < 126:
        length = bytes([bit | n])
    elif n < 1 << 16:
        length = bytes([bit | 126]) + struct.pack("!H", n)
    else:
        length = bytes([bit | 127]) + struct.pack("!Q", n)
    if mask is None:
        return first + length + payload
    return first + length + mask + _xor(payload, mask)


def ws_parse(buf: bytes | bytearray) -> tuple[int, bytes, int] | None:
    """(opcode, payload unmasked, bytes consumed) of the first whole frame in buf, or None if incomplete.

    Fragmented messages are not produced by either side here (sandboxd and the generator send whole
    frames); a continuation frame is returned as it is, opcode 0."""
    if len(buf) < 2:
        return None
    opcode = buf[0] & 0x0F
    masked = buf[1] & 0x80
    n = buf[1] & 0x7F
    at = 2
    if n == 126:
        if len(buf) < 4:
            return None
        n = struct.unpack_from("!H", buf, 2)[0]
        at = 4
    elif n == 127:
        if len(buf) < 10:
            return None
        n = struct.unpack_from("!Q", buf, 2)[0]
        at = 10
    mask = b""
    if masked:
        if len(buf) < at + 4:
            return None
        mask = bytes(buf[at : at + 4])
        at += 4
    if len(buf) < at + n:
        return None
    payload = bytes(buf[at : at + n])
    return opcode, (_xor(payload, mask) if masked else payload), at + n


# --- DNS (RFC 1035 4.1) ------------------------------------------------------------------------------

RCODES = {0: "noerror", 1: "formerr", 2: "servfail", 3: "nxdomain", 4: "notimp", 5: "refused"}


def dns_query(qid: int, name: str, qtype: int = 1) -> bytes:
    """A standard query (RD set) for one name, class IN."""
    header = struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0)
    labels = b"".join(bytes([len(p)]) + p.encode("ascii") for p in name.rstrip(".").split("."))
    return header + labels + b"\x00" + struct.pack("!HH", qtype, 1)


def dns_reply(data: bytes) -> tuple[int, int, int, bool]:
    """(id, rcode, answer count, truncated) of a reply. ValueError for anything that is not a DNS response."""
    if len(data) < 12:
        raise ValueError("shorter than a DNS header")
    qid, flags, _qd, an, _ns, _ar = struct.unpack_from("!HHHHHH", data)
    if not flags & 0x8000:
        raise ValueError("QR not set: not a response")
    return qid, flags & 0x000F, an, bool(flags & 0x0200)


def dns_error(rcode: int, answers: int, truncated: bool = False) -> str | None:
    """The error kind of a DNS reply, None when it answered. A truncated reply without an answer is what a
    rate limiter's "slip" sends (BIND's response rate limiting, edge's dns.rrl_slip): `dns_truncated`, told
    apart from `dns_no_answer`."""
    if rcode:
        return "dns_" + RCODES.get(rcode, f"rcode{rcode}")
    if answers:
        return None
    return DNS_TRUNCATED if truncated else DNS_NO_ANSWER
