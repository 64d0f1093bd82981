"""Route, access and rewrite for one request head: what to send, and to whom. No I/O.

Both lanes call `make_plan` with the request head they parsed; it returns a `Plan` or raises the
EdgeError the request deserves:

  route    the Host (or an absolute-form target that agrees with it) names port and sandbox
           (route.py); the sandbox comes from the catalog snapshot taken for this request.
  loop     a target that is one of the edge's own listeners, or a request that already passed
           through this edge (its Via token), is refused with 508 (loop.py).
  access   a private sandbox needs its token (access.py); a link with the token becomes a 303 that
           sets a cookie (`Plan.redirect`).
  rewrite  headers.rewrite_request builds the upstream head.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from edge.catalog.model import Sandbox
from edge.errors import BadHost, LoopDetected, SandboxNotFound
from edge.http.access import authorize
from edge.http.headers import connection_tokens, is_upgrade, masked_host, rewrite_request, via_has
from edge.http.route import split_target

if TYPE_CHECKING:
    from edge.http.context import ServerContext
    from edge.http.exchange import Exchange


_NO_SANDBOX = Sandbox("-", "0.0.0.0")  # the Plan of a redirect that never reaches a sandbox


@dataclass(slots=True)
class Plan:
    """Where a request goes and what it carries there."""

    sandbox: Sandbox
    port: int
    target: bytes = b""
    headers: list = field(default_factory=list)
    #: The request's Connection tokens (computed once, for the rewrite and for keep-alive).
    tokens: frozenset[bytes] = frozenset()
    #: The Upgrade protocol when the request asks for one.
    upgrade: bytes | None = None
    #: (status, headers): answer this redirect instead of forwarding (303 for a token link, 308 to https).
    redirect: tuple[int, list[tuple[bytes, bytes]]] | None = None


def make_plan(ctx: ServerContext, ex: Exchange, method: bytes, raw_target: bytes, headers: list,
              host: bytes) -> Plan:
    """The Plan for one request head; records host, path, port and sandbox on `ex` as it learns them."""
    authority, target = split_target(raw_target)
    if authority is not None:
        # RFC 9112 3.2.2: with an absolute-form target the server uses its authority; a Host
        # that says something else is a confused (or smuggling) client.
        if host and authority.lower() != host.lower():
            raise BadHost("The request target and the Host header name different hosts")
        host = authority
    ex.host = host
    q = target.find(b"?")
    ex.path = target if q < 0 else target[:q]
    port, sandbox_id = ctx.router.route(host)
    ex.port = port
    ex.sandbox = sandbox_id
    listener = ex.client.listener
    if listener.redirect_port is not None:
        # https.redirect_http: a sandbox URL asked over plain HTTP goes to its https twin (308 keeps
        # the method and body). The Host's own port, if any, is replaced by the HTTPS listener's.
        bare = host.rsplit(b":", 1)[0] if host.rfind(b":") > host.rfind(b"]") else host
        location = b"https://" + bare + listener.redirect_port + target
        return Plan(_NO_SANDBOX, port, redirect=(308, [(b"location", location), (b"content-length", b"0")]))
    sandbox = ctx.live.snapshot.get(sandbox_id)
    if sandbox is None:
        raise SandboxNotFound(sandbox_id, port)
    own = ctx.own
    if port in own.ports and own.targets(sandbox.address, port):
        raise LoopDetected(sandbox_id, port, f"{sandbox.address} port {port} is the edge's own listener")
    plan = Plan(sandbox, port)
    if not sandbox.public:
        grant = authorize(sandbox, method, headers, target, port, listener.secure, host)
        if grant.redirect is not None:
            location, cookie = grant.redirect
            plan.redirect = (303, [(b"location", location), (b"set-cookie", cookie), (b"cache-control", b"no-store"),
                                   (b"content-length", b"0")])
            return plan
        headers, target = grant.headers, grant.target
    tokens = connection_tokens(headers)
    upgrade = is_upgrade(headers, tokens) if tokens else None
    plan.target = target
    plan.tokens = tokens
    plan.upgrade = upgrade
    out = plan.headers = rewrite_request(
        headers,
        tokens=tokens,
        host=host,
        upstream_host=masked_host(sandbox.mask_request_host, port) if sandbox.mask_request_host else host,
        client_ip=ex.client.ip,
        scheme=listener.scheme,
        forwarded_port=listener.port,
        via=ctx.via,
        upgrade=upgrade,
    )
    # The Via sent is the one received plus ours (last); only a received one can name us already.
    if out[-1][1] != ctx.via_entry and via_has(((b"via", out[-1][1][: -len(ctx.via_entry) - 2]),), ctx.via):
        raise LoopDetected(sandbox_id, port, "the request already passed through this edge (Via)")
    return plan
