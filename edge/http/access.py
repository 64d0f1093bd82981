"""Access to private sandboxes. Pure: a request's head and the sandbox record in, a decision out.

A private sandbox (E2B's allowPublicTraffic: false) needs its traffic access token, presented as:
  - the header `e2b-traffic-access-token` (so code written for E2B works unchanged) or
    `x-edge-access-token`;
  - the cookie `edge_access_token`, which a browser gets by opening the URL once with
    `?edge_token=...`: edge answers 303 to the same URL without the parameter and sets the cookie for
    exactly that host (no Domain attribute), HttpOnly, SameSite=Lax, Secure under TLS. Browsers cannot
    set headers on a navigation or a WebSocket; a cookie they send by themselves.
Whatever form it came in, the token never reaches the sandbox: header, cookie and parameter are
removed before forwarding. Comparison is in constant time, against the stored SHA-256 only.
"""

from __future__ import annotations

from urllib.parse import quote

from edge.catalog.model import Sandbox
from edge.catalog.ops import token_matches
from edge.errors import AccessDenied

TOKEN_HEADERS = frozenset((b"e2b-traffic-access-token", b"x-edge-access-token"))
COOKIE = b"edge_access_token"
PARAM = b"edge_token"
_REDIRECTABLE = frozenset((b"GET", b"HEAD"))


class Grant:
    """What the edge does with a request to a private sandbox that may pass."""

    __slots__ = ("headers", "target", "redirect")

    def __init__(self, headers, target: bytes, redirect: tuple[bytes, bytes] | None) -> None:
        self.headers = headers  # without any token header or cookie
        self.target = target  # without the edge_token parameter
        self.redirect = redirect  # (Location, Set-Cookie) when the answer is a 303 instead


def _split_query(target: bytes) -> tuple[bytes | None, bytes]:
    """(token from ?edge_token=, target without that parameter)."""
    q = target.find(b"?")
    if q < 0 or PARAM not in target:
        return None, target
    path, query = target[:q], target[q + 1 :]
    token = None
    kept = []
    for part in query.split(b"&"):
        name, _, value = part.partition(b"=")
        if name == PARAM:
            token = value
        else:
            kept.append(part)
    return token, path + (b"?" + b"&".join(kept) if kept else b"")


def _cookie_token(value: bytes) -> tuple[bytes | None, bytes]:
    """(our token, the Cookie value without our cookie)."""
    token = None
    kept = []
    for pair in value.split(b";"):
        name, _, v = pair.strip().partition(b"=")
        if name == COOKIE:
            token = v
        elif pair.strip():
            kept.append(pair.strip())
    return token, b"; ".join(kept)


def authorize(sandbox: Sandbox, method: bytes, headers, target: bytes, port: int, secure: bool) -> Grant:
    """Decide on a request to a private sandbox: a Grant, or AccessDenied (403, missing or invalid)."""
    param_token, clean_target = _split_query(target)
    header_token = cookie_token = None
    kept = []
    for name, value in headers:
        if name in TOKEN_HEADERS:
            header_token = value
            continue
        if name == b"cookie":
            found, rest = _cookie_token(value)
            if found is not None:
                cookie_token = found
                if rest:
                    kept.append((name, rest))
                continue
        kept.append((name, value))
    token = param_token if param_token is not None else header_token if header_token is not None else cookie_token
    if not token:
        raise AccessDenied(sandbox.id, port, missing=True)
    if not sandbox.token_hash or not token_matches(token, sandbox.token_hash):
        raise AccessDenied(sandbox.id, port, missing=False)
    redirect = None
    if param_token is not None and method in _REDIRECTABLE:
        cookie = COOKIE + b"=" + quote(param_token.decode("latin-1"), safe="-_.~").encode()
        cookie += b"; Path=/; HttpOnly; SameSite=Lax"
        if secure:
            cookie += b"; Secure"
        redirect = (clean_target, cookie)
    return Grant(kept, clean_target, redirect)
