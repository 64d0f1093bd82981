"""Access to private sandboxes. Pure: a request's head and the sandbox record in, a decision out.

A private sandbox (E2B's allowPublicTraffic: false) needs its traffic access token, presented as:
  - the header `e2b-traffic-access-token` (so code written for E2B works unchanged) or
    `x-edge-access-token`;
  - the cookie `edge_access_token` (`__Host-edge_access_token` under TLS), which a browser gets by
    opening the URL once with `?edge_token=...`: edge answers 303 to the same URL without the
    parameter and sets the cookie for exactly that host (no Domain attribute), HttpOnly,
    SameSite=Lax, Secure under TLS. Browsers cannot set headers on a navigation or a WebSocket; a
    cookie they send by themselves.

Any valid credential opens the sandbox; invalid ones beside it are ignored. That matters because a
sibling sandbox can "toss" cookies into the browser (JavaScript may set `edge_access_token=junk;
Domain=<domain>`): the junk value arrives beside the real one and must not lock the browser out.
With no valid one: 403 `invalid_token` when something was presented, `missing_token` otherwise.

Whatever form it came in, the token never reaches the sandbox. Sandboxes run every kind of framework,
and each decodes a request in its own way, so edge strips every spelling one of them would read as
its parameter or cookie (and accepts each as a credential):
  - parameter and cookie names are percent-decoded (either case of hex), `+` is a space, names are
    compared case-insensitively with surrounding spaces gone, and ` `, `.` and `[` count as `_`
    (PHP's mangling of names), and `name[...]` is `name` (PHP's and Rack's arrays): `?EDGE_TOKEN=`,
    `?%65dge_token=`, `?edge.token=`, `?edge_token[]=`, `edge_access_token = T`;
  - `;` separates query parameters as well as `&` (older CGI and some frameworks);
  - path parameters (`/x;edge_token=T/y`, RFC 3986 3.3, as servlet containers read them);
  - `,` separates cookies as well as `;` (RFC 2109 parsers), and a value may be in double quotes.
The link is checked first (a valid one is traded for the cookie), then headers and cookies in their
order; at most MAX_CANDIDATES distinct values each, so a head stuffed with thousands of junk cookies
costs a bounded number of hashes.
Comparison is in constant time, against the stored SHA-256 only.
"""

from __future__ import annotations

import re
from urllib.parse import quote, unquote_to_bytes

from edge.catalog.model import Sandbox
from edge.catalog.ops import token_matches
from edge.errors import AccessDenied

TOKEN_HEADERS = frozenset((b"e2b-traffic-access-token", b"x-edge-access-token"))
COOKIE = b"edge_access_token"
#: The cookie's name under TLS: browsers accept it only with Secure, Path=/ and no Domain, so no other
#: host (a sibling sandbox included) can set or overwrite it.
HOST_COOKIE = b"__Host-" + COOKIE
#: Cookie names edge owns, lower-cased: a sandbox's Set-Cookie naming one is dropped (headers.py).
COOKIE_NAMES = frozenset((COOKIE, HOST_COOKIE.lower()))
PARAM = b"edge_token"
_PARAMS = frozenset((PARAM,))
MAX_CANDIDATES = 64
_REDIRECTABLE = frozenset((b"GET", b"HEAD"))
_QUERY_SEP = re.compile(rb"([&;])")
_PATH_SEP = re.compile(rb"(;)")
_COOKIE_SEP = re.compile(rb"([;,])")
_MANGLE = bytes.maketrans(b" .[", b"___")


class Grant:
    """What the edge does with a request to a private sandbox that may pass."""

    __slots__ = ("headers", "target", "redirect")

    def __init__(self, headers: list[tuple[bytes, bytes]], target: bytes, redirect: tuple[bytes, bytes] | None) -> None:
        self.headers = headers  # without any token header or cookie
        self.target = target  # without the edge_token parameter in any spelling
        self.redirect = redirect  # (Location, Set-Cookie) when the answer is a 303 instead


def normalize_name(name: bytes) -> bytes:
    """A parameter or cookie name as the most liberal framework reads it (see the module docstring)."""
    if b"+" in name:
        name = name.replace(b"+", b" ")
    if b"%" in name:
        name = unquote_to_bytes(name)
    name = name.strip().lower()
    bracket = name.find(b"[")
    if bracket > 0 and name.endswith(b"]"):
        name = name[:bracket]  # PHP and Rack read `edge_token[]=T` as an array named edge_token
    return name.translate(_MANGLE)


def _values(value: bytes, out: list[bytes]) -> None:
    """Add a presented value (and its percent-decoded form, when that differs) to `out`."""
    value = value.strip()
    if len(value) >= 2 and value[:1] == b'"' and value[-1:] == b'"':
        value = value[1:-1]
    if not value:
        return
    out.append(value)
    if b"%" in value or b"+" in value:
        decoded = unquote_to_bytes(value.replace(b"+", b" "))
        if decoded != value:
            out.append(decoded)


def _strip_params(text: bytes, sep: re.Pattern[bytes], names: frozenset[bytes], found: list[bytes]) -> bytes | None:
    """`text` without the `name=value` items (a name in `names`) split by `sep`, their values into `found`;
    None when there was none.

    The other items keep their bytes and the separator that preceded them."""
    pieces = sep.split(text)  # [item, separator, item, separator, item ...]
    kept: list[bytes] = []
    for i in range(0, len(pieces), 2):
        item = pieces[i]
        key, _, value = item.partition(b"=")
        if normalize_name(key) in names:
            _values(value, found)
            continue
        if kept:
            kept.append(pieces[i - 1])
        kept.append(item)
    if len(kept) == len(pieces):
        return None
    return b"".join(kept).lstrip()


def strip_target(target: bytes) -> tuple[list[bytes], bytes]:
    """(tokens from the link in any spelling, the target without them)."""
    found: list[bytes] = []
    q = target.find(b"?")
    path, query = (target, None) if q < 0 else (target[:q], target[q + 1 :])
    changed = False
    if b";" in path:
        segments = path.split(b"/")
        for i, segment in enumerate(segments):
            semi = segment.find(b";")
            if semi >= 0:
                params = _strip_params(segment[semi + 1 :], _PATH_SEP, _PARAMS, found)
                if params is not None:
                    segments[i] = segment[:semi] + (b";" + params if params else b"")
                    changed = True
        if changed:
            path = b"/".join(segments)
    if query:
        rest = _strip_params(query, _QUERY_SEP, _PARAMS, found)
        if rest is not None:
            query = rest
            changed = True
    if not changed:
        return found, target
    return found, path + (b"?" + query if query else b"")


def strip_cookie(value: bytes, found: list[bytes]) -> bytes:
    """A Cookie header's value without edge's cookie in any spelling (its values into `found`)."""
    rest = _strip_params(value, _COOKIE_SEP, COOKIE_NAMES, found)
    return value if rest is None else rest


def _valid(candidates: list[bytes], token_hash: str) -> bytes | None:
    """The first candidate that is the sandbox's token, checking at most MAX_CANDIDATES distinct ones."""
    if not token_hash:
        return None
    seen: set[bytes] = set()
    for candidate in candidates:
        if candidate in seen:
            continue
        if len(seen) == MAX_CANDIDATES:
            return None
        seen.add(candidate)
        if token_matches(candidate, token_hash):
            return candidate
    return None


def authorize(
    sandbox: Sandbox,
    method: bytes,
    headers: list[tuple[bytes, bytes]],
    target: bytes,
    port: int,
    secure: bool,
    host: bytes,
) -> Grant:
    """Decide on a request to a private sandbox: a Grant, or AccessDenied (403, missing or invalid).

    `host` is the Host the request was routed by: a link is redirected to exactly that host."""
    from_link, clean_target = strip_target(target)
    presented: list[bytes] = []
    from_cookies: list[bytes] = []
    kept = []
    for name, value in headers:
        if name in TOKEN_HEADERS:
            _values(value, presented)
            continue
        if name == b"cookie":
            value = strip_cookie(value, from_cookies)
            if not value:
                continue
        kept.append((name, value))
    token_hash = sandbox.token_hash or ""  # a private sandbox always has one; "" matches nothing
    link_token = _valid(from_link, token_hash)
    if link_token is None:
        presented += from_cookies
        if _valid(presented, token_hash) is None:
            raise AccessDenied(sandbox.id, port, missing=not (presented or from_link))
    elif method in _REDIRECTABLE:
        # RFC 9110 10.2.2: the Location is absolute, built from our own scheme, the routed Host and the
        # path, so no `//other.host/` or `/\other.host/` path can send the browser anywhere else.
        location = (b"https://" if secure else b"http://") + host + clean_target
        value = quote(link_token.decode("latin-1"), safe="-_.~").encode()
        if secure:
            cookie = HOST_COOKIE + b"=" + value + b"; Path=/; HttpOnly; SameSite=Lax; Secure"
        else:
            cookie = COOKIE + b"=" + value + b"; Path=/; HttpOnly; SameSite=Lax"
        return Grant(kept, clean_target, (location, cookie))
    return Grant(kept, clean_target, None)
