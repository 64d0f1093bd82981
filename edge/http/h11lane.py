"""The h11 lane: one exchange whose client side h11 reads and writes.

Every request that is not plain (h1.py) comes here from its first byte, and the fast lane hands an
exchange over mid-way (`adopt`) the moment it stops being plain. h11 keeps the state of both HTTP
conversations: `ClientSide.h` (we are the server) and `Upstream.h11` (we are the client).

  read     the request head, as it comes, within head_timeout (408 after it); request.check_request
           refuses what h11 lets through (smuggling).
  plan     route, loop, access, rewrite (plan.py), shared with the fast lane.
  forward  on a pooled or new sandbox connection (upstream.forward_with_retry, shared too), the body
           pumped by pump.py while relay.py relays the answer.
  answer   an EdgeError becomes the page the client sees (pages.render_error) when the connection
           can still take one.
  settle   the exchange's facts are read off h11's state machines, and exchange.py decides whether
           each connection goes on.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import h11
import trio

from edge.errors import EdgeError, RequestTimeout, UpstreamError
from edge.http.client import GONE, ClientSide
from edge.http.deadlines import Expired
from edge.http.exchange import CLOSE, NEXT, Exchange, Outcome, client_may_continue, clock, finish
from edge.http.h1 import RequestHead
from edge.http.headers import connection_tokens
from edge.http.limits import SandboxSlot
from edge.http.pages import render_error
from edge.http.plan import Plan, make_plan
from edge.http.pump import relay_with_body, translate
from edge.http.relay import relay, upstream_expired
from edge.http.request import check_request
from edge.http.upstream import RETRYABLE, STALE, Stale, Upstream, forward_with_retry
from edge.metrics import STATS

if TYPE_CHECKING:
    from edge.http.context import ServerContext


async def h11_exchange(ctx: ServerContext, client: ClientSide) -> Outcome:
    """Serve the request that starts in `client.buffered` (h11 reads the rest as it comes)."""
    client.new_h11(client.buffered)
    client.buffered = b""
    STATS.http_h11_exchanges["request"] += 1
    ex = Exchange(client, clock())
    outcome = NEXT
    try:
        error: EdgeError | None = None
        try:
            request = await _read_request(ctx, client)
            if request is None:
                return CLOSE
            ex.start = clock()
            ex.method = request.method
            headers = ex.headers = list(request.headers)  # h11's Headers iterate slowly: walked once
            check_request(request, headers, ctx.http.max_head_bytes, ctx.http.max_head_fields)
            ex.req_keepalive = request.http_version == b"1.1" and b"close" not in connection_tokens(headers)
            outcome = await _forward(ctx, ex, request)
        except h11.RemoteProtocolError as exc:
            error = translate(exc)
        except EdgeError as exc:
            error = exc
        if error is not None:
            await answer_error(ex, error)
    except GONE:
        return CLOSE  # the client left, or stopped reading for send_timeout
    finally:
        if ex.headers is not None or ex.status:
            finish(ex, ctx.access_log)
    return settle(ex) if outcome is NEXT else outcome


async def _read_request(ctx: ServerContext, client: ClientSide) -> h11.Request | None:
    """The next Request from the bytes given to h11 and what follows; None when the client closed."""
    h = client.h
    assert h is not None
    http = ctx.http
    event = h.next_event()
    if event is h11.NEED_DATA:
        # The rest of the head on the head clock (slowloris).
        deadline = trio.current_time() + http.head_timeout
        try:
            while event is h11.NEED_DATA:
                h.receive_data(await client.io.recv(http.read_size, deadline, "head"))
                event = h.next_event()
        except Expired as exc:
            if exc.kind == "head":
                raise RequestTimeout("The request head was not received in time") from None
            raise
    if type(event) is h11.ConnectionClosed:
        return None
    assert type(event) is h11.Request
    return event


async def _forward(ctx: ServerContext, ex: Exchange, request: h11.Request) -> Outcome:
    headers = ex.headers or []
    host = b""
    for name, value in headers:
        if name == b"host":
            host = value
            break
    plan = make_plan(ctx, ex, request.method, request.target, headers, host)
    if plan.answer is not None:
        await answer_plan(ex, plan)
        return NEXT
    # _parsed=True: every field either came out of h11's parser or was checked when it was made
    # (catalog masks, our own constants), so h11's per-field regexes would only repeat work.
    outgoing = h11.Request(method=request.method, target=plan.target, headers=plan.headers, _parsed=True)
    client_h = ex.client.h
    assert client_h is not None
    # A body-less request is complete already: its EndOfMessage is in h11's buffer.
    first = client_h.next_event()
    body_done = type(first) is h11.EndOfMessage
    sandbox, port = plan.sandbox, plan.port

    async def attempt(up: Upstream) -> Outcome | Stale:
        return await _send_and_relay(ctx, ex, up, outgoing, first, body_done)

    with SandboxSlot(ctx.active, ctx.inflight, ex, sandbox, port):
        return await forward_with_retry(
            ctx.pool, (sandbox.id, sandbox.address, port), ex, body_done and request.method in RETRYABLE, attempt
        )


async def _send_and_relay(
    ctx: ServerContext, ex: Exchange, up: Upstream, outgoing: h11.Request, first: object, body_done: bool
) -> Outcome | Stale:
    conn = up.h11 = h11.Connection(h11.CLIENT)
    data = conn.send(outgoing) or b""
    if body_done:
        data += conn.send(h11.EndOfMessage(headers=first.headers)) or b""  # type: ignore[attr-defined]
    try:
        await up.send(data)
    except OSError as exc:
        if up.reused:  # the pooled connection died while idle: nothing was sent
            return STALE
        raise UpstreamError(ex.sandbox or "", ex.port or 0, f"sending the request: {exc.strerror}") from None
    except Expired as exc:
        raise upstream_expired(ex, exc) from None
    outcome = await (relay(ctx, ex, up) if body_done else relay_with_body(ctx, ex, up, first))
    settle_upstream(ex, up)
    return outcome


def settle_upstream(ex: Exchange, up: Upstream) -> None:
    """The sandbox side's facts, off h11's client state: whole request sent, whole response read, and
    nothing after it in h11's buffer (what is still on the socket, the pool's peek catches)."""
    conn = up.h11
    assert conn is not None
    ex.upstream_done = (
        (ex.spliced_down or conn.their_state is h11.DONE)
        and (ex.spliced_up or conn.our_state is h11.DONE)
        and not conn.trailing_data[0]
    )


def settle(ex: Exchange) -> Outcome:
    """The client side's facts, off h11's server state; NEXT with any pipelined bytes handed back."""
    client = ex.client
    h = client.h
    assert h is not None
    ex.request_done = ex.spliced_up or h.their_state is h11.DONE
    ex.response_done = ex.spliced_down or h.our_state is h11.DONE
    if not client_may_continue(ex):
        return CLOSE
    client.buffered = h.trailing_data[0]
    client.h = None
    return NEXT


async def answer_error(ex: Exchange, exc: EdgeError) -> None:
    status, headers, body = render_error(exc, ex.headers)
    ex.status = status
    ex.error = exc.code
    ex.bytes_out = await ex.client.answer(status, headers, body, exc.closes_connection, ex.method == b"HEAD")


async def answer_plan(ex: Exchange, plan: Plan) -> None:
    """An answer of the edge's own that is no error (plan.py): the 303 that trades ?edge_token= for
    a cookie, the 308 to https, a CORS preflight to a private sandbox, the health check."""
    assert plan.answer is not None
    status, headers, body = plan.answer
    ex.status = status
    ex.bytes_out = await ex.client.answer(status, list(headers), body, False, ex.method == b"HEAD")


def adopt(client: ClientSide, buf: bytes, head: RequestHead, why: str) -> None:
    """Give the client connection to h11 mid-exchange: a state machine that has read this request.

    h1 accepts only heads h11 accepts, so h11 reads the same request from the same bytes; what
    follows it (a pipelined request) stays in h11's buffer, as if h11 had read it all along.
    """
    h = client.new_h11(buf)
    event = h.next_event()
    while type(event) is not h11.EndOfMessage:
        if event is h11.NEED_DATA or type(event) is h11.ConnectionClosed:
            raise RuntimeError(f"h11 read a plain request differently: {event!r}")
        event = h.next_event()
    STATS.http_h11_exchanges[why] += 1
