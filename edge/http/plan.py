"""Route, access and rewrite for one request head: what to send, and to whom. No I/O.

Both lanes call `make_plan` with the request head they parsed; it returns a `Plan` or raises the
EdgeError the request deserves:

  route    the Host (or an absolute-form target that agrees with it) names port and sandbox
           (route.py); the sandbox comes from the catalog snapshot taken for this request.
  loop     a target that is one of the edge's own listeners, or a request that already passed
           through this edge (its Via token), is refused with 508 (loop.py).
  access   a private sandbox needs its token (access.py); a link with the token becomes a 303 that
           sets a cookie (`Plan.answer`); a CORS preflight is answered by the edge (`preflight`).
  health   `GET /_edge/health` on a Host that is no sandbox: 200 (503 while draining), for load
           balancers.
  rewrite  headers.rewrite_request builds the upstream head.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from edge.catalog.model import Sandbox
from edge.errors import BadHost, EdgeError, LoopDetected, SandboxNotFound
from edge.http.access import authorize
from edge.http.headers import connection_tokens, is_upgrade, masked_host, rewrite_request, via_has
from edge.http.route import split_target

if TYPE_CHECKING:
    from edge.http.context import ServerContext
    from edge.http.exchange import Exchange


_NO_SANDBOX = Sandbox("-", "0.0.0.0")  # the Plan of an answer that never reaches a sandbox


HEALTH_PATH = b"/_edge/health"


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
    #: (status, headers, body): answer this instead of forwarding (a 303 for a token link, a 308 to
    #: https, a CORS preflight to a private sandbox, the health check).
    answer: tuple[int, list[tuple[bytes, bytes]], bytes] | None = None


def make_plan(ctx: ServerContext, ex: Exchange, method: bytes, raw_target: bytes, headers: list, host: bytes) -> Plan:
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
    if target == HEALTH_PATH:
        health = _health(ctx, host)
        if health is not None:
            return health
    port, sandbox_id = ctx.router.route(host)
    ex.port = port
    ex.sandbox = sandbox_id
    listener = ex.client.listener
    if listener.redirect_port is not None:
        # https.redirect_http: a sandbox URL asked over plain HTTP goes to its https twin (308 keeps
        # the method and body). The Host's own port, if any, is replaced by the HTTPS listener's.
        bare = host.rsplit(b":", 1)[0] if host.rfind(b":") > host.rfind(b"]") else host
        location = b"https://" + bare + listener.redirect_port + target
        return Plan(_NO_SANDBOX, port, answer=(308, [(b"location", location), (b"content-length", b"0")], b""))
    sandbox = ctx.live.snapshot.get(sandbox_id)
    if sandbox is None:
        raise SandboxNotFound(sandbox_id, port)
    own = ctx.own
    if port in own.ports and own.targets(sandbox.address, port):
        raise LoopDetected(sandbox_id, port, f"{sandbox.address} port {port} is the edge's own listener")
    plan = Plan(sandbox, port)
    if not sandbox.public:
        if method == b"OPTIONS":
            answer = preflight(headers)
            if answer is not None:
                plan.answer = answer
                return plan
        grant = authorize(sandbox, method, headers, target, port, listener.secure, host)
        if grant.redirect is not None:
            location, cookie = grant.redirect
            plan.answer = (
                303,
                [
                    (b"location", location),
                    (b"set-cookie", cookie),
                    (b"cache-control", b"no-store"),
                    (b"content-length", b"0"),
                ],
                b"",
            )
            return plan
        headers, target = grant.headers, grant.target
    tokens = connection_tokens(headers)
    upgrade = is_upgrade(headers, tokens) if tokens else None
    plan.target = target
    plan.tokens = tokens
    plan.upgrade = upgrade
    upstream_host = host
    if sandbox.mask_request_host:
        upstream_host = masked_host(sandbox.mask_request_host, port)
        ex.unmask = (upstream_host, listener.scheme + b"://" + host)
    out, ex.user_agent, ex.request_id = rewrite_request(
        headers,
        tokens=tokens,
        host=host,
        upstream_host=upstream_host,
        client_ip=ex.client.ip,
        scheme=listener.scheme,
        forwarded_port=listener.port,
        via=ctx.via_entry,
        upgrade=upgrade,
        new_request_id=ctx.new_request_id,
        trusted_peer=ex.client.trusted,
    )
    plan.headers = out
    # The Via sent is the one received plus ours (last); only a received one can name us already.
    if out[-1][1] != ctx.via_entry and via_has(((b"via", out[-1][1][: -len(ctx.via_entry) - 2]),), ctx.via):
        raise LoopDetected(sandbox_id, port, "the request already passed through this edge (Via)")
    return plan


def _health(ctx: ServerContext, host: bytes) -> Plan | None:
    """`GET /_edge/health` on a Host that names no sandbox (a load balancer's check, by IP): 200, or
    503 while the server drains so the balancer stops sending new clients. None for a sandbox Host:
    the path is then the sandbox's own."""
    try:
        ctx.router.route(host)
    except EdgeError:
        status, body = (503, b'{"status": "draining"}\n') if ctx.draining else (200, b'{"status": "ok"}\n')
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", b"%d" % len(body)),
            (b"cache-control", b"no-store"),
        ]
        return Plan(_NO_SANDBOX, 0, answer=(status, headers, body))
    return None


def preflight(headers: list) -> tuple[int, list[tuple[bytes, bytes]], bytes] | None:
    """The edge's answer to a CORS preflight for a private sandbox, or None when it is no preflight.

    A browser's preflight (OPTIONS with Access-Control-Request-Method) never carries the token, so it
    would always get 403 and code on another origin could never send `e2b-traffic-access-token`. The
    edge answers it instead of the sandbox: forwarding it would open an unauthenticated path to a
    private server, while answering costs nothing and gives nothing away. The request that follows
    still needs a valid token, and the sandbox's own CORS headers on that answer still decide what the
    page may read. No Access-Control-Allow-Credentials: the edge's cookie is SameSite=Lax and is not
    sent on cross-site requests anyway."""
    origin = method = asked = None
    for name, value in headers:
        if name == b"access-control-request-method":
            method = value
        elif name == b"origin":
            origin = value
        elif name == b"access-control-request-headers":
            asked = value
    if method is None or origin is None:
        return None
    out = [
        (b"access-control-allow-origin", origin),
        (b"access-control-allow-methods", method),
        (b"access-control-max-age", b"600"),
        (b"vary", b"Origin, Access-Control-Request-Method, Access-Control-Request-Headers"),
        (b"content-length", b"0"),
    ]
    if asked:
        out.append((b"access-control-allow-headers", asked))
    return 204, out, b""
