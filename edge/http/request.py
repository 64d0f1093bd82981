"""Checks on a parsed request head that h11 leaves to us. Pure.

h11 accepts several things a proxy must not pass on, because a backend may read them differently
(request smuggling). Each check below names the rule it enforces. They run on every request, so they
work on h11's already-lowercased header names and do no allocation unless something is wrong.
"""

from __future__ import annotations

import h11

from edge.errors import BadRequest, HeadTooLarge, VersionNotSupported

_OK_VERSIONS = frozenset((b"1.0", b"1.1"))


def check_request(request: h11.Request, headers: list, max_head_bytes: int, max_head_fields: int) -> None:
    """Raise the EdgeError this request head deserves, or return None when it may be forwarded.

    `headers` is `list(request.headers)`: h11's (lower-cased name, value) pairs, walked once.
    """
    if request.http_version not in _OK_VERSIONS:
        raise VersionNotSupported("Only HTTP/1.0 and HTTP/1.1 are supported")
    if len(headers) > max_head_fields:
        raise HeadTooLarge(f"The request has more than {max_head_fields} header fields")
    # h11 enforces its size limit only while a head is incomplete, so a large head that arrives in one
    # read passes it (h11 issue 182). Recount from what was parsed: request line plus each field line.
    size = len(request.method) + len(request.target) + 12
    has_cl = has_te = False
    for name, value in headers:
        size += len(name) + len(value) + 4
        if name == b"content-length":
            has_cl = True
        elif name == b"transfer-encoding":
            has_te = True
        elif b"_" in name:
            # nginx and others map '_' and '-' to the same CGI variable: two names, one meaning.
            raise BadRequest("Header names with '_' are not accepted")
    if size > max_head_bytes:
        raise HeadTooLarge(f"The request head is larger than {max_head_bytes} bytes")
    # RFC 9112 6.1: "A server MAY reject a request that contains both Content-Length and
    # Transfer-Encoding ... Such a message might indicate an attempt to perform request smuggling."
    if has_cl and has_te:
        raise BadRequest("Content-Length and Transfer-Encoding together are not accepted")
    # RFC 9112 6.1: Transfer-Encoding was added in HTTP/1.1; a 1.0 message carrying it is suspect.
    if has_te and request.http_version == b"1.0":
        raise BadRequest("Transfer-Encoding is not accepted on HTTP/1.0")
    if request.method == b"CONNECT":
        raise BadRequest("CONNECT is not supported: this edge is not a forward proxy")
