"""The PROXY protocol (v1 text and v2 binary, HAProxy's spec): the client address a TCP load balancer
passes in front of the stream. Pure: bytes in, a result out.

With `proxy_protocol = true` on a listener, every connection must start with a PROXY header; the
address in it becomes the client's (logs, X-Forwarded-For, per-address limits). `LOCAL` (v2) and
`UNKNOWN` (v1) headers, which balancers send for their own health checks, keep the peer address.
"""

from __future__ import annotations

import ipaddress
import struct

from edge.errors import BadRequest

V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
V1_MAX = 107  # the longest v1 line, CRLF included
#: How many bytes to look at before deciding: a v1 line, or a v2 header with its addresses.
PEEK = 232 + 16


def parse(data: bytes) -> tuple[int, str | None] | None:
    """(header length, client address or None to keep the peer's), or None when more bytes are needed.

    Raises BadRequest for anything that is not a PROXY header."""
    if data.startswith(V2_SIGNATURE[: len(data)]) and len(data) < 16:
        return None
    if data.startswith(V2_SIGNATURE):
        return _v2(data)
    if data.startswith(b"PROXY "[: len(data)]) and b"\r\n" not in data:
        if len(data) >= V1_MAX:
            raise BadRequest("PROXY header: a v1 line longer than 107 bytes")
        return None
    if data.startswith(b"PROXY "):
        return _v1(data)
    raise BadRequest("PROXY header expected (http.proxy_protocol is on)")


def _v1(data: bytes) -> tuple[int, str | None]:
    end = data.index(b"\r\n")
    if end + 2 > V1_MAX:
        raise BadRequest("PROXY header: a v1 line longer than 107 bytes")
    parts = data[:end].split(b" ")
    if len(parts) >= 2 and parts[1] == b"UNKNOWN":
        return end + 2, None
    if len(parts) != 6 or parts[1] not in (b"TCP4", b"TCP6"):
        raise BadRequest("PROXY header: a malformed v1 line")
    try:
        src = ipaddress.ip_address(parts[2].decode("ascii"))
        ipaddress.ip_address(parts[3].decode("ascii"))
        ports = [int(p) for p in parts[4:6]]
    except (ValueError, UnicodeDecodeError):
        raise BadRequest("PROXY header: a malformed v1 address or port") from None
    if (src.version == 4) != (parts[1] == b"TCP4") or not all(0 <= p <= 65535 for p in ports):
        raise BadRequest("PROXY header: a malformed v1 address or port")
    return end + 2, str(src)


def _v2(data: bytes) -> tuple[int, str | None] | None:
    ver_cmd, family, length = data[12], data[13], struct.unpack("!H", data[14:16])[0]
    if ver_cmd >> 4 != 2:
        raise BadRequest("PROXY header: version 2 expected")
    total = 16 + length
    if len(data) < total:
        return None
    command = ver_cmd & 0x0F
    if command == 0:  # LOCAL: the balancer's own connection
        return total, None
    if command != 1:
        raise BadRequest("PROXY header: an unknown v2 command")
    proto = family & 0x0F
    if proto != 1:  # not STREAM (TCP): keep the peer's address
        return total, None
    af = family >> 4
    body = data[16:total]
    if af == 1 and length >= 12:
        return total, str(ipaddress.IPv4Address(body[:4]))
    if af == 2 and length >= 36:
        return total, str(ipaddress.IPv6Address(body[:16]))
    if af in (0, 3):  # UNSPEC, UNIX
        return total, None
    raise BadRequest("PROXY header: a v2 address block too short for its family")
