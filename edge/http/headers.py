"""Header rewriting, both ways. Pure: header lists in, header lists out.

Request (client -> sandbox):
  - hop-by-hop fields go (RFC 9110 7.6.1): Connection and every field it names, Keep-Alive,
    Proxy-*, TE, Trailer, and Upgrade unless this is an upgrade, which keeps `Upgrade` and gets a
    fresh `Connection: upgrade`. Transfer-Encoding and Content-Length stay: h11 re-frames the body
    from them.
  - Host stays, unless the sandbox has a mask: then Host is the mask with ${PORT} filled in.
  - X-Forwarded-For is the peer address, X-Forwarded-Proto the edge's scheme, X-Forwarded-Host the
    host the client asked for. A client's own values of these (and Forwarded, X-Real-IP) are dropped:
    the sandbox must be able to trust them.
Response (sandbox -> client): the same hop-by-hop set goes, except on a 101.
"""

from __future__ import annotations

from collections.abc import Sequence

_HOP = frozenset(
    (
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"te",
        b"trailer",
        b"upgrade",
    )
)
_FORWARDED = frozenset((b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host", b"forwarded", b"x-real-ip"))
# Expect: 100-continue is answered by the edge itself when it starts reading the body (as nginx does),
# so the sandbox never waits on an expectation the client already saw met.
_DROP_REQUEST = _HOP | _FORWARDED | {b"host", b"expect"}
_UPGRADE_HEADERS = (b"connection", b"upgrade")

Headers = Sequence[tuple[bytes, bytes]]


def connection_tokens(headers: Headers) -> frozenset[bytes]:
    """The lower-cased tokens of every Connection field."""
    tokens: set[bytes] = set()
    for name, value in headers:
        if name == b"connection":
            tokens.update(t.strip().lower() for t in value.split(b","))
    return frozenset(tokens)


def is_upgrade(headers: Headers, tokens: frozenset[bytes]) -> bytes | None:
    """The Upgrade value when the request asks to switch protocols (Connection: upgrade + Upgrade)."""
    if b"upgrade" not in tokens:
        return None
    for name, value in headers:
        if name == b"upgrade":
            return value
    return None


def rewrite_request(
    headers: Headers,
    *,
    tokens: frozenset[bytes],
    host: bytes,
    upstream_host: bytes,
    client_ip: bytes,
    scheme: bytes,
    upgrade: bytes | None,
) -> list[tuple[bytes, bytes]]:
    """The header list to send to the sandbox. `host` is the client's Host; `upstream_host` what to send;
    `tokens` the request's `connection_tokens` (the caller has them already)."""
    out = [(b"host", upstream_host)]
    for name, value in headers:
        if name in _DROP_REQUEST or name.startswith(b"proxy-") or name in tokens:
            continue
        out.append((name, value))
    if upgrade is not None:
        out.append((b"connection", b"upgrade"))
        out.append((b"upgrade", upgrade))
    out.append((b"x-forwarded-for", client_ip))
    out.append((b"x-forwarded-host", host))
    out.append((b"x-forwarded-proto", scheme))
    return out


def rewrite_response(headers: Headers, status: int, tokens: frozenset[bytes] | None = None) -> list[tuple[bytes, bytes]]:
    """The sandbox's response headers as the client gets them (`tokens`: its connection_tokens, if known)."""
    if tokens is None:
        tokens = connection_tokens(headers)
    if status == 101:
        keep = _UPGRADE_HEADERS
        return [(n, v) for n, v in headers if n in keep or not (n in _HOP or n in tokens)]
    # h11 re-frames: it writes Transfer-Encoding itself when the body length is unknown.
    return [
        (n, v)
        for n, v in headers
        if not (n in _HOP or n in tokens or n == b"transfer-encoding" or n.startswith(b"proxy-"))
    ]


def masked_host(mask: str, port: int) -> bytes:
    return mask.replace("${PORT}", str(port)).encode("ascii")
