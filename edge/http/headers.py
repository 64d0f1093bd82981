"""Header rewriting, both ways. Pure: header lists in, header lists out.

Request (client -> sandbox):
  - hop-by-hop fields go (RFC 9110 7.6.1): Connection and every field it names, Keep-Alive,
    Proxy-*, TE, Trailer, and Upgrade unless this is an upgrade, which keeps `Upgrade` and gets a
    fresh `Connection: upgrade`. Transfer-Encoding and Content-Length stay: h11 re-frames the body
    from them.
  - Host stays, unless the sandbox has a mask: then Host is the mask with ${PORT} filled in.
  - X-Forwarded-For is the peer address, X-Forwarded-Proto the edge's scheme, X-Forwarded-Host the
    host the client asked for, X-Forwarded-Port the port of the edge's listener. The sandbox must be
    able to trust what it is told about the client, so every header a common framework or proxy
    reads for the client's address, scheme, host, port or original path (_SPOOFABLE: Werkzeug's
    ProxyFix, Express's trust proxy, Spring's ForwardedHeaderFilter, Rails and Rack, Symfony, Tomcat's
    RemoteIpValve, django-ipware, CDNs' client-IP headers) is dropped when a client sends it.
  - Via gets the edge's own entry (RFC 9110 7.6.3: "a proxy MUST send an appropriate Via header
    field ... in each message that it forwards"), after any the request already had; `via_has`
    tells whether a request already passed through this edge (a loop: the caller answers 508).
Response (sandbox -> client): the same hop-by-hop set goes, except on a 101. A Set-Cookie naming
edge's own access cookie (access.COOKIE_NAMES, any case) is dropped too: no sandbox may overwrite or
shadow the cookie that opens private sandboxes.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import NamedTuple

from edge.http.access import COOKIE_NAMES

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
# What a client may not tell the sandbox about itself: set by the edge, or by nobody.
_SPOOFABLE = frozenset(
    (
        b"forwarded",  # RFC 7239
        b"x-forwarded-for",
        b"x-forwarded-proto",
        b"x-forwarded-host",
        b"x-forwarded-port",
        b"x-forwarded-prefix",
        b"x-forwarded-server",
        b"x-forwarded-scheme",
        b"x-forwarded-ssl",
        b"x-forwarded-protocol",
        b"x-forwarded-by",
        b"x-forwarded-uri",
        b"x-forwarded-path",
        b"x-forwarded",
        b"forwarded-for",
        b"x-original-forwarded-for",
        b"x-real-ip",
        b"x-client-ip",
        b"client-ip",
        b"true-client-ip",
        b"cf-connecting-ip",
        b"fastly-client-ip",
        b"x-cluster-client-ip",
        b"x-original-url",
        b"x-original-uri",
        b"x-rewrite-url",
        b"x-original-host",
        b"x-host",
        b"x-url-scheme",
        b"front-end-https",
    )
)
# Expect: 100-continue is answered by the edge itself when it starts reading the body (as nginx does),
# so the sandbox never waits on an expectation the client already saw met. Via is taken out to be
# sent again with the edge's entry appended.
_DROP_REQUEST = _HOP | _SPOOFABLE | {b"host", b"expect", b"via"}
_DROP_RESPONSE = _HOP | {b"transfer-encoding"}
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


class Rewritten(NamedTuple):
    """What rewrite_request made, and what it saw on the way (for the access log)."""

    headers: list[tuple[bytes, bytes]]
    user_agent: bytes
    request_id: bytes


def rewrite_request(
    headers: Headers,
    *,
    tokens: frozenset[bytes],
    host: bytes,
    upstream_host: bytes,
    client_ip: bytes,
    scheme: bytes,
    forwarded_port: bytes,
    via: bytes,
    upgrade: bytes | None,
    new_request_id: Callable[[], bytes],
    trusted_peer: bool = False,
) -> Rewritten:
    """The header list to send to the sandbox. `host` is the client's Host; `upstream_host` what to send;
    `tokens` the request's `connection_tokens` (the caller has them already); `forwarded_port` the
    edge listener's port and `via` the edge's whole Via entry, e.g. b"1.1 edge-1a2b3c4d" (both made
    once per server, not per request).

    X-Request-Id: a client's (visible ASCII, at most 200 characters) is kept, else `new_request_id()`
    makes one; either way the sandbox gets it and the access log names it. X-Forwarded-For is the
    peer, or, when the peer is a trusted proxy (`trusted_peer`), the X-Forwarded-For it sent with the
    peer appended (a load balancer in front of the edge)."""
    out = [(b"host", upstream_host)]
    received = forwarded = None
    user_agent = request_id = b""
    action = _ACTION.get
    for name, value in headers:
        what = action(name)
        if what is None:  # the common case: an end-to-end field, one dict miss
            if name in tokens or name.startswith(b"proxy-"):
                continue
        elif what == _DROP:
            continue
        elif what == _USER_AGENT:
            user_agent = value
        elif what == _REQUEST_ID:
            if request_id or not _REQUEST_ID_OK(value):
                continue  # a second or malformed id is not passed on: ours replaces it
            request_id = value
        elif what == _VIA:
            received = value if received is None else received + b", " + value
            continue
        else:  # X-Forwarded-For: kept only to be extended, from a trusted proxy
            if trusted_peer:
                forwarded = value if forwarded is None else forwarded + b", " + value
            continue
        out.append((name, value))
    if not request_id:
        request_id = new_request_id()
        out.append((b"x-request-id", request_id))
    if upgrade is not None:
        out.append((b"connection", b"upgrade"))
        out.append((b"upgrade", upgrade))
    out.append((b"x-forwarded-for", client_ip if forwarded is None else forwarded + b", " + client_ip))
    out.append((b"x-forwarded-host", host))
    out.append((b"x-forwarded-proto", scheme))
    out.append((b"x-forwarded-port", forwarded_port))
    # RFC 9110 7.6.3: each proxy appends its entry to the Via it received (one field; a list may be
    # split over several lines, which are joined here in order).
    out.append((b"via", via if received is None else received + b", " + via))
    return Rewritten(out, user_agent, request_id)


_DROP, _USER_AGENT, _REQUEST_ID, _VIA, _FORWARDED_FOR = range(5)
# One dict lookup per field decides what happens to it.
_ACTION = {name: _DROP for name in _DROP_REQUEST}
_ACTION.update(
    {b"user-agent": _USER_AGENT, b"x-request-id": _REQUEST_ID, b"via": _VIA, b"x-forwarded-for": _FORWARDED_FOR}
)
_REQUEST_ID_OK = re.compile(rb"[\x21-\x7e]{1,200}\Z").match


def via_has(headers: Headers, token: bytes) -> bool:
    """Whether the request's Via names `token` as a received-by (it already passed through this edge).

    RFC 9110 7.6.3: Via = #( received-protocol RWS received-by [ RWS comment ] ); the token is
    compared case-insensitively, as a host name would be."""
    token = token.lower()
    for name, value in headers:
        if name == b"via" and token in value.lower():
            for entry in value.lower().split(b","):
                parts = entry.split()
                if len(parts) >= 2 and parts[1] == token:
                    return True
    return False


def _sets_edge_cookie(value: bytes) -> bool:
    """Whether a Set-Cookie value names edge's own cookie (RFC 6265 5.2: the name ends at the first `=`,
    trimmed); any case, since frameworks differ."""
    return value.partition(b"=")[0].partition(b";")[0].strip().lower() in COOKIE_NAMES


def rewrite_response(
    headers: Headers, status: int, tokens: frozenset[bytes] | None = None
) -> list[tuple[bytes, bytes]]:
    """The sandbox's response headers as the client gets them (`tokens`: its connection_tokens, if known)."""
    if tokens is None:
        tokens = connection_tokens(headers)
    if status == 101:
        keep = _UPGRADE_HEADERS
        return [
            (n, v)
            for n, v in headers
            if n in keep or not (n in _HOP or n in tokens or (n == b"set-cookie" and _sets_edge_cookie(v)))
        ]
    # h11 re-frames: it writes Transfer-Encoding itself when the body length is unknown.
    return [
        (n, v)
        for n, v in headers
        if not (
            n in _DROP_RESPONSE
            or n in tokens
            or n.startswith(b"proxy-")
            or (n == b"set-cookie" and _sets_edge_cookie(v))
        )
    ]


def masked_host(mask: str, port: int) -> bytes:
    return mask.replace("${PORT}", str(port)).encode("ascii")


_LOCATION_FIELDS = frozenset((b"location", b"content-location", b"refresh"))


def unmask_locations(headers: list[tuple[bytes, bytes]], masked: bytes, public: bytes) -> list[tuple[bytes, bytes]]:
    """Point a masked sandbox's own URLs back at its public host, as nginx's `proxy_redirect default`.

    With a Host mask the sandbox believes it is `masked` (e.g. `localhost:4000`), so its redirects say
    `http://localhost:4000/elsewhere`. In Location, Content-Location and Refresh (`5; url=...`), an
    absolute URL on `masked` (http or https, host in any case) becomes `public` (scheme and public
    host, e.g. `https://4000-demo.example.com`) plus the rest. Other URLs are left alone."""
    out = headers
    for i, (name, value) in enumerate(headers):
        if name in _LOCATION_FIELDS:
            new = _unmask(value, masked, public)
            if new is not value:
                if out is headers:
                    out = list(headers)
                out[i] = (name, new)
    return out


def _unmask(value: bytes, masked: bytes, public: bytes) -> bytes:
    start = 0
    if value[:1].isdigit():  # Refresh: "<seconds>; url=<URL>"
        at = value.lower().find(b"url=")
        if at < 0:
            return value
        start = at + 4
    url = value[start:]
    lower = url.lower()
    for scheme in (b"http://", b"https://"):
        if lower.startswith(scheme):
            rest = url[len(scheme) :]
            host = rest[: len(masked)]
            after = rest[len(masked) :]
            if host.lower() == masked.lower() and (not after or after[:1] in b"/?#"):
                return value[:start] + public + after
    return value
