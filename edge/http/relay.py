"""The h11 lane's sandbox-to-client half: the response head (and 1xx), the body as it comes, a tunnel.

head    1xx answers other than 101 are passed on as they come; the final head within
        response_head_timeout (504 after it). A pooled connection that ends or breaks before any
        byte of an answer is STALE (the caller may retry on a new one).
body    each chunk goes to the client as it arrives (streams and server-sent events are never
        buffered); output is gathered while h11 has events buffered and written just before the next
        read from the sandbox would block, so a small response costs one write. The rest of a large
        Content-Length body moves by splice.move. A body the sandbox breaks after our head went out
        cannot become an error page: the client connection closes unfinished, which every client
        reads as truncation (CLOSE).
tunnel  a 101 to a request that asked for an upgrade turns both connections into a Tunnel, bytes
        already read past either head going first (TUNNELLED).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import h11
import trio

from edge.errors import UpstreamError, UpstreamTimeout
from edge.http.deadlines import Expired
from edge.http.exchange import CLOSE, NEXT, TUNNELLED, Exchange, Outcome
from edge.http.headers import connection_tokens, rewrite_response, unmask_locations
from edge.http.splice import BrokenBody, Tunnel, move
from edge.http.upstream import STALE, Stale, Upstream
from edge.metrics import STATS

if TYPE_CHECKING:
    from edge.http.context import ServerContext

logger = logging.getLogger("edge.http")


def content_length(headers: list) -> int | None:
    """The Content-Length h11 already validated, or None (chunked, close-delimited, absent)."""
    for name, value in headers:
        if name == b"content-length":
            return int(value)
    return None


def upstream_expired(ex: Exchange, exc: Expired) -> Exception:
    """The error a sandbox wait that ran out of time becomes: 504 for the response head or a stalled
    send; anything else (the client left, a revocation) ends the exchange as it is."""
    if exc.kind == "response":
        return UpstreamTimeout(ex.sandbox or "", ex.port or 0, "response")
    if exc.kind == "send":
        return UpstreamTimeout(ex.sandbox or "", ex.port or 0, "sending the request")
    return exc


def log_broken(ex: Exchange, exc: BaseException) -> None:
    logger.info("sandbox %s port %s broke its response body: %s", ex.sandbox, ex.port, exc)


async def response_head(
    ctx: ServerContext, ex: Exchange, up: Upstream
) -> h11.Response | h11.InformationalResponse | Stale:
    """The sandbox's Response (or its 101), forwarding other 1xx answers as they come."""
    answered = False  # any 1xx seen: then a failure is no longer a stale pooled connection
    # A head the fast lane started reading keeps the deadline it started with (no restart on hand-over).
    deadline = ex.head_deadline or trio.current_time() + ctx.http.response_head_timeout
    conn = up.h11
    assert conn is not None and ex.client.h is not None
    read_size = ctx.http.read_size
    while True:
        try:
            event = conn.next_event()
            while event is h11.NEED_DATA:
                conn.receive_data(await up.recv(read_size, deadline, "response"))
                event = conn.next_event()
        except Expired as exc:
            raise upstream_expired(ex, exc) from None
        except (h11.RemoteProtocolError, OSError) as exc:
            # A pooled connection the sandbox closed while idle: nothing was answered.
            if up.reused and not answered:
                return STALE
            raise UpstreamError(ex.sandbox or "", ex.port or 0, str(exc) or type(exc).__name__) from None
        if type(event) is h11.Response:
            return event
        if not isinstance(event, h11.InformationalResponse):  # ConnectionClosed before any answer
            if up.reused and not answered:
                return STALE
            raise UpstreamError(ex.sandbox or "", ex.port or 0, "closed before a response")
        if event.status_code == 101:
            return event
        answered = True
        client_h = ex.client.h
        assert client_h is not None
        await ex.client.io.send(
            client_h.send(
                h11.InformationalResponse(
                    status_code=event.status_code,
                    headers=rewrite_response(list(event.headers), event.status_code),
                    reason=event.reason,
                    _parsed=True,
                )
            )
        )


async def relay(ctx: ServerContext, ex: Exchange, up: Upstream) -> Outcome | Stale:
    """Sandbox response -> client, as it arrives. NEXT once relayed whole (the caller settles reuse)."""
    event = await response_head(ctx, ex, up)
    if isinstance(event, Stale):
        return event
    status = event.status_code
    if isinstance(event, h11.InformationalResponse):  # only a 101 comes back as one
        return await tunnel(ctx, ex, up, event)
    client = ex.client
    h = client.h
    io = client.io
    conn = up.h11
    assert h is not None and conn is not None
    ex.status = status
    response_headers = list(event.headers)  # h11's Headers iterate slowly: walked once
    tokens = connection_tokens(response_headers)
    out_headers = rewrite_response(response_headers, status, tokens)
    if ex.unmask is not None:
        out_headers = unmask_locations(out_headers, *ex.unmask)
    if ctx.draining and status != 101:  # this response is the connection's last: say so
        out_headers.append((b"connection", b"close"))
    pending = [h.send(h11.Response(status_code=status, headers=out_headers, reason=event.reason, _parsed=True))]
    ex.resp_keepalive = event.http_version == b"1.1" and b"close" not in tokens
    http = ctx.http
    read_size = http.read_size
    threshold = http.splice_threshold
    length = content_length(response_headers) if threshold else None
    while True:
        try:
            body_event = conn.next_event()
        except h11.RemoteProtocolError as exc:
            log_broken(ex, exc)
            return CLOSE
        if body_event is h11.NEED_DATA:
            if length is not None and length - ex.bytes_out >= threshold:
                if pending:
                    await io.send(b"".join(pending))
                try:
                    await move(
                        ctx.deadlines,
                        up,
                        io,
                        length - ex.bytes_out,
                        read_timeout=None,
                        read_kind="body",
                        read_size=read_size,
                        count=_counter(ex),
                        splice_min=threshold,
                    )
                except BrokenBody as exc:
                    if exc.source:
                        log_broken(ex, exc)
                    return CLOSE
                ex.spliced_down = True
                return NEXT
            if pending:
                out = pending[0] if len(pending) == 1 else b"".join(pending)
                pending.clear()
                await io.send(out)
            try:
                data = await up.recv(read_size, None, "body")
            except OSError as exc:
                log_broken(ex, exc)
                return CLOSE
            conn.receive_data(data)
            continue
        if isinstance(body_event, h11.Data):
            ex.bytes_out += len(body_event.data)
            pending.append(h.send(body_event))
        else:  # EndOfMessage (h11 yields ConnectionClosed only after it)
            assert isinstance(body_event, h11.EndOfMessage)
            pending.append(h.send(body_event))
            await io.send(b"".join(pending))
            return NEXT


def _counter(ex: Exchange):
    def count(n: int) -> None:
        ex.bytes_out += n

    return count


async def tunnel(ctx: ServerContext, ex: Exchange, up: Upstream, event: h11.InformationalResponse) -> Outcome:
    client = ex.client
    h = client.h
    assert h is not None and up.h11 is not None
    if h.their_state is not h11.MIGHT_SWITCH_PROTOCOL:
        raise UpstreamError(ex.sandbox or "", ex.port or 0, "101 Switching Protocols to a request that did not ask")
    ex.status = 101
    await client.io.send(
        h.send(
            h11.InformationalResponse(
                status_code=101, headers=rewrite_response(list(event.headers), 101), reason=event.reason, _parsed=True
            )
        )
    )
    # Bytes read past either head belong to the new protocol: they go first.
    client_pending = h.trailing_data[0]
    upstream_pending = up.h11.trailing_data[0]
    t = Tunnel()
    STATS.http_active_tunnels += 1
    try:
        await t.run(ctx.deadlines, client.io, up, client_pending, upstream_pending, ctx.http.read_size)
    finally:
        STATS.http_active_tunnels -= 1
        ex.bytes_in += t.bytes_up
        ex.bytes_out += t.bytes_down
    return TUNNELLED
