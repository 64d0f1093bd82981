"""The fast lane: one exchange without h11, when both heads are plain (see h1.py for what that means).

Theory of operation. Most exchanges an edge carries look alike: a whole request head in one read, no
body (or a small one that came with it), answered by a head with a Content-Length. For those, h11's
state machines on both sides cost more than everything else the edge does, so this lane reads both
heads with h1.py, builds the upstream head with the same plan as the h11 lane (plan.py), and moves
the response body by its count: in one write with the head when it is all there, by splice.move
when a large part is still to come, read by read otherwise.

The lane gives way to h11 the moment an exchange stops being plain, without losing a byte:

  the request head is not plain  conn.py never enters this lane; h11 reads the same bytes.
  the edge answers itself        (an error, a 303) `h11lane.adopt` builds the client's h11 state as
                                 if h11 had read the request, and the answer goes out as in the h11
                                 lane.
  the response is not plain      (1xx, chunked, close-delimited, a head split across reads) `adopt`
                                 for the client, and an h11 client state that has sent this request
                                 and received what the sandbox sent so far; relay.py takes it from
                                 there.

So every rule the h11 lane keeps (keep-alive only after a clean cycle, a stale pooled connection
retried once for idempotent requests, 502/504 before the response head, a broken body closes the
client connection) holds here too: the same plan, the same SandboxSlot, the same
forward_with_retry, the same reuse rules (exchange.py). The e2e suites run every case through both
lanes (`http.fast_lane = false` is the h11 lane alone).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import h11
import trio

from edge.errors import EdgeError, UpstreamError
from edge.http.client import GONE, ClientSide
from edge.http.deadlines import Expired
from edge.http.exchange import CLOSE, NEXT, Exchange, Outcome, client_may_continue, clock, finish
from edge.http.h1 import RequestHead, ResponseHead, parse_response, request_bytes, response_bytes
from edge.http.h11lane import adopt, answer_error, answer_plan, settle, settle_upstream
from edge.http.headers import rewrite_response, unmask_locations
from edge.http.limits import SandboxSlot
from edge.http.plan import Plan, make_plan
from edge.http.relay import log_broken, relay, upstream_expired
from edge.http.splice import BrokenBody, move
from edge.http.upstream import RETRYABLE, STALE, Stale, Upstream, forward_with_retry

if TYPE_CHECKING:
    from edge.http.context import ServerContext


async def fast_exchange(ctx: ServerContext, client: ClientSide, head: RequestHead, buf: bytes) -> Outcome:
    """Serve the plain request at the start of `buf` (its body, if any, is in `buf` too).

    NEXT leaves what follows it in `buf` (a pipelined request) in `client.buffered`."""
    ex = Exchange(client, clock())
    ex.method = method = head.method
    ex.headers = head.headers
    ex.req_keepalive = head.keepalive
    stop = head.end + head.length
    try:
        try:
            plan = make_plan(ctx, ex, method, head.target, head.headers, head.host)
            if plan.answer is not None:
                adopt(client, buf, head, "answer")
                await answer_plan(ex, plan)
                return settle(ex)
            out = request_bytes(method, plan.target, plan.headers)
            if head.length:
                out += buf[head.end : stop]
                ex.bytes_in = head.length
            sandbox, port = plan.sandbox, plan.port

            async def attempt(up: Upstream) -> Outcome | Stale:
                return await _attempt(ctx, ex, up, plan, out, head, buf)

            with SandboxSlot(ctx.active, ctx.inflight, ex, sandbox, port):
                outcome = await forward_with_retry(
                    ctx.pool, (sandbox.id, sandbox.address, port), ex, not head.length and method in RETRYABLE, attempt
                )
        except EdgeError as exc:
            if client.h is None:
                adopt(client, buf, head, "answer")
            await answer_error(ex, exc)
            return settle(ex)
    except GONE:
        return CLOSE  # the client left, or stopped reading for send_timeout
    finally:
        finish(ex, ctx.access_log)
    if client.h is not None:  # h11 took over mid-exchange
        return settle(ex) if outcome is NEXT else outcome
    if outcome is NEXT and client_may_continue(ex):
        client.buffered = buf[stop:]
        return NEXT
    return CLOSE


async def _attempt(
    ctx: ServerContext, ex: Exchange, up: Upstream, plan: Plan, out: bytes, head: RequestHead, buf: bytes
) -> Outcome | Stale:
    """Send the request and relay the answer (or hand it to h11)."""
    try:
        await up.send(out)
    except OSError as exc:
        if up.reused:  # the pooled connection died while idle: nothing was sent
            return STALE
        raise UpstreamError(ex.sandbox or "", ex.port or 0, f"sending the request: {exc.strerror}") from None
    except Expired as exc:
        raise upstream_expired(ex, exc) from None
    ex.request_done = True
    try:
        ex.head_deadline = trio.current_time() + ctx.http.response_head_timeout
        data = await up.recv(ctx.http.read_size, ex.head_deadline, "response")
    except Expired as exc:
        raise upstream_expired(ex, exc) from None
    except OSError as exc:
        if up.reused:
            return STALE
        raise UpstreamError(ex.sandbox or "", ex.port or 0, exc.strerror or type(exc).__name__) from None
    if not data:
        if up.reused:
            return STALE
        raise UpstreamError(ex.sandbox or "", ex.port or 0, "closed before a response")
    end = data.find(b"\r\n\r\n")
    resp = parse_response(data, end, head.method == b"HEAD") if end >= 0 else None
    if resp is None:
        return await _to_h11_lane(ctx, ex, up, plan, head, buf, data)
    return await _relay(ctx, ex, up, resp, data, head)


async def _relay(
    ctx: ServerContext, ex: Exchange, up: Upstream, resp: ResponseHead, data: bytes, head: RequestHead
) -> Outcome:
    """Head and body to the client, by the body's count."""
    ex.status = resp.status
    ex.resp_keepalive = resp.keepalive
    headers = rewrite_response(resp.headers, resp.status, resp.tokens)
    if ex.unmask is not None:
        headers = unmask_locations(headers, *ex.unmask)
    if not head.keepalive or ctx.draining:  # the connection's last response: say so
        headers.append((b"connection", b"close"))
    out = response_bytes(resp.start, headers)
    length = resp.length
    body_at = resp.end
    have = len(data) - body_at
    io = ex.client.io
    if have >= length:  # the whole answer is here: one write
        if length:
            out += data[body_at : body_at + length] if have > length else data[body_at:]
        ex.bytes_out = length
        # Bytes past the declared length are a sandbox's error: that connection carries no more.
        ex.upstream_done = have == length
        await io.send(out)
        ex.response_done = True
        return NEXT
    # The head goes now, the body follows as it comes.
    if have:
        out += data[body_at:]
    ex.bytes_out = have
    await io.send(out)

    def count(n: int) -> None:
        ex.bytes_out += n

    http = ctx.http
    try:
        await move(
            ctx.deadlines,
            up,
            io,
            length - have,
            read_timeout=None,
            read_kind="body",
            read_size=http.read_size,
            count=count,
            splice_min=http.splice_threshold,
        )
    except BrokenBody as exc:
        # The client has our head: closing without the rest is the honest signal of truncation.
        if exc.source:
            log_broken(ex, exc)
        return CLOSE
    ex.upstream_done = ex.response_done = True
    return NEXT


async def _to_h11_lane(
    ctx: ServerContext, ex: Exchange, up: Upstream, plan: Plan, head: RequestHead, buf: bytes, data: bytes
) -> Outcome | Stale:
    """The answer is not plain: both sides go to h11, which reads it from its first byte."""
    if up.reused and not data.startswith(b"HTTP/"):
        # Not an answer at all on a pooled connection: a connection gone bad while idle. Stale:
        # retried on a new one if it may be.
        return STALE
    adopt(ex.client, buf, head, "response")
    conn = up.h11 = h11.Connection(h11.CLIENT)
    conn.send(h11.Request(method=head.method, target=plan.target, headers=plan.headers, _parsed=True))
    if head.length:
        conn.send(h11.Data(data=buf[head.end : head.end + head.length]))
    conn.send(h11.EndOfMessage())
    conn.receive_data(data)
    up.reused = False  # it answered: whatever is wrong with the answer is the sandbox's, not staleness
    outcome = await relay(ctx, ex, up)
    settle_upstream(ex, up)
    return outcome
