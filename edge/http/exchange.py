"""One exchange (a request and its answer): its facts, the two reuse rules, and its accounting.

Everything that is true of one exchange lives on its `Exchange`, set by whichever lane carries it,
and nothing about it lives anywhere else: a new exchange starts from a new object, so nothing is
reset by hand. The two questions every exchange ends with are answered here and only here, from
those facts, the way h11 keeps every state rule in one file:

  may the client connection carry another request?   `client_may_continue`
  may the sandbox connection go back to the pool?     `upstream_may_return`

A lane's work ends in an `Outcome`: NEXT (read the next request), CLOSE, or TUNNELLED (the
connection became a tunnel, which has ended by the time the outcome is returned).
"""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from edge.accesslog import ACCESS_LOG
from edge.metrics import STATS

if TYPE_CHECKING:
    from edge.http.client import ClientSide
    from edge.http.upstream import Upstream

# Durations for logs and metrics: a plain monotonic clock (deadlines use trio's).
clock = time.perf_counter


class Outcome(enum.Enum):
    NEXT = "next"
    CLOSE = "close"
    TUNNELLED = "tunnelled"


NEXT, CLOSE, TUNNELLED = Outcome.NEXT, Outcome.CLOSE, Outcome.TUNNELLED


@dataclass(slots=True, eq=False)
class Exchange:
    client: ClientSide
    start: float
    # --- for the access log and metrics
    method: bytes = b"-"
    host: bytes = b"-"
    path: bytes = b"-"
    sandbox: str | None = None
    port: int | None = None
    status: int = 0  # 0: no answer reached the client (logged as 499)
    bytes_in: int = 0
    bytes_out: int = 0
    connect_ms: float | None = None
    #: The request's (name, value) fields, once read (both lanes; also for the error page's format).
    headers: list | None = None
    # --- what decides reuse
    #: The request allows keep-alive (HTTP/1.1 without `close`).
    req_keepalive: bool = False
    #: The response allows keep-alive.
    resp_keepalive: bool = False
    #: The whole request was read from the client (its body to the end).
    request_done: bool = False
    #: The whole answer was written to the client.
    response_done: bool = False
    #: The sandbox got the whole request and sent exactly one whole response: nothing is known to follow.
    upstream_done: bool = False
    #: Which bodies moved by splice (h11 never saw them).
    spliced_up: bool = False
    spliced_down: bool = False
    #: The sandbox connection in use, while there is one (for revocation).
    upstream: Upstream | None = None
    #: A catalog change withdrew what this exchange was allowed: it ends, and nothing is retried.
    revoked: bool = False
    #: What stopped the request-body pump (pump.py), raised by the relaying task once both are done.
    pump_error: Exception | None = None
    #: For a masked sandbox: (the masked host, the public scheme and host) for its redirects (plan.py).
    unmask: tuple[bytes, bytes] | None = None
    #: When the sandbox's response head is due (trio time; 0 until the request was sent), kept across
    #: the fast lane's hand-over to h11.
    head_deadline: float = 0.0
    #: For the access log: the client's User-Agent, the request id (the client's X-Request-Id, or
    #: one the edge made and forwarded), and the error code when the edge answered itself.
    user_agent: bytes = b""
    request_id: bytes = b""
    error: str | None = None


def client_may_continue(ex: Exchange) -> bool:
    """The client connection may read another request: both messages ended cleanly and keep-alive holds."""
    return ex.req_keepalive and ex.request_done and ex.response_done and not ex.revoked


def upstream_may_return(ex: Exchange) -> bool:
    """The sandbox connection may carry another request: it ended cleanly with nothing after the
    response, and the sandbox allows keep-alive. (The pool peeks the socket once more before reuse.)"""
    return ex.resp_keepalive and ex.upstream_done and not ex.revoked


def finish(ex: Exchange, access_log: bool) -> None:
    """Count the exchange and write its access line."""
    status = ex.status or 499  # nginx's "client closed request": the client left before an answer
    duration = clock() - ex.start
    stats = STATS
    stats.http_requests[status // 100 if status < 600 else 0] += 1
    stats.http_bytes_in += ex.bytes_in
    stats.http_bytes_out += ex.bytes_out
    stats.http_duration.observe(duration)
    if ex.connect_ms is not None:
        stats.upstream_connect.observe(ex.connect_ms / 1000)
        sandbox = ex.sandbox or "-"  # always set once a sandbox connection was asked for
        stats.sandbox_requests[sandbox] = stats.sandbox_requests.get(sandbox, 0) + 1
    if access_log:
        ACCESS_LOG.line(
            ex.client.ip,
            ex.host,
            ex.sandbox,
            ex.port,
            ex.method,
            ex.path,
            status,
            ex.bytes_in,
            ex.bytes_out,
            duration * 1000,
            ex.connect_ms,
            ex.user_agent,
            ex.request_id,
            ex.error,
        )
