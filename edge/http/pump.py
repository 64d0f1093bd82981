"""The h11 lane's client-to-sandbox half: a request body, pumped while the answer is relayed.

The body goes chunk by chunk in constant memory; the rest of a large Content-Length body moves by
splice.move. A read that makes no progress for body_idle_timeout is a 408. `Expect: 100-continue` is
answered by the edge (the header is not forwarded), as nginx does.

The pump runs in a task of its own beside `relay.relay`, so a sandbox may answer before the upload
ends (the client connection then closes with a lingering close). What stops it is stored on the
exchange (`Exchange.pump_error`), and the relaying task raises it once both are done.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import h11
import trio

from edge.errors import (
    BadRequest,
    EdgeError,
    HeadTooLarge,
    NotImplementedByEdge,
    RequestTimeout,
    UpstreamError,
    UpstreamTimeout,
)
from edge.http.deadlines import Expired
from edge.http.exchange import Exchange, Outcome
from edge.http.relay import content_length, relay, upstream_expired
from edge.http.splice import BrokenBody, move
from edge.http.upstream import Stale, Upstream

if TYPE_CHECKING:
    from edge.http.context import ServerContext


def translate(exc: h11.RemoteProtocolError) -> EdgeError:
    """h11's verdict on the client's bytes, as the error the client gets."""
    hint = exc.error_status_hint
    if hint == 431:
        return HeadTooLarge("The request head is too large")
    if hint == 501:
        return NotImplementedByEdge(str(exc))
    return BadRequest(f"Malformed request: {exc}")


async def relay_with_body(ctx: ServerContext, ex: Exchange, up: Upstream, first: object) -> Outcome | Stale:
    """Pump the request body in a second task while this one relays the response."""
    relay_error: Exception | None = None
    outcome: Outcome | Stale | None = None
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_pump_task, ctx, ex, up, first, nursery.cancel_scope)
        try:
            outcome = await relay(ctx, ex, up)
        except Exception as exc:  # noqa: BLE001 - re-raised below, after the pump stopped
            relay_error = exc
        # Answered before the body ended (or failed): stop pumping. The connection closes after.
        nursery.cancel_scope.cancel()
    if relay_error is not None:
        raise relay_error
    if ex.pump_error is not None:
        raise ex.pump_error
    assert outcome is not None
    return outcome


async def _pump_task(ctx: ServerContext, ex: Exchange, up: Upstream, first: object, scope: trio.CancelScope) -> None:
    try:
        await pump(ctx, ex, up, first)
    except Exception as exc:  # noqa: BLE001 - handed to the relaying task
        ex.pump_error = exc
        scope.cancel()


async def pump(ctx: ServerContext, ex: Exchange, up: Upstream, event: object) -> None:
    """Client body -> sandbox, chunk by chunk. Raises the error the exchange ends with."""
    client = ex.client
    h = client.h
    conn = up.h11
    assert h is not None and conn is not None
    http = ctx.http
    idle = http.body_idle_timeout
    read_size = http.read_size
    threshold = http.splice_threshold
    try:
        if h.they_are_waiting_for_100_continue:
            await client.io.send(h.send(h11.InformationalResponse(status_code=100, headers=[])))
        length = content_length(ex.headers or []) if threshold else None
        while True:
            if event is h11.NEED_DATA:
                if length is not None and length - ex.bytes_in >= threshold:
                    await move(
                        ctx.deadlines,
                        client.io,
                        up,
                        length - ex.bytes_in,
                        read_timeout=idle,
                        read_kind="body",
                        read_size=read_size,
                        count=_counter(ex),
                        splice_min=threshold,
                    )
                    ex.spliced_up = True
                    return
                h.receive_data(await client.io.recv(read_size, trio.current_time() + idle, "body"))
                event = h.next_event()
                continue
            t = type(event)
            if t is h11.Data:
                assert isinstance(event, h11.Data)
                ex.bytes_in += len(event.data)
                await _to_upstream(ex, up, conn.send(event))
            elif t is h11.EndOfMessage:
                assert isinstance(event, h11.EndOfMessage)
                await _to_upstream(ex, up, conn.send(event))
                return
            else:  # ConnectionClosed mid-body
                raise BadRequest("The client closed the connection before the request body ended")
            event = h.next_event()
    except h11.RemoteProtocolError as exc:
        raise translate(exc) from None
    except BrokenBody as exc:
        if exc.source:
            raise BadRequest("The client connection failed before the request body ended") from None
        if exc.timed_out:
            raise UpstreamTimeout(ex.sandbox or "", ex.port or 0, "sending the request body") from None
        raise UpstreamError(ex.sandbox or "", ex.port or 0, f"sending the request body: {exc}") from None
    except Expired as exc:
        if exc.kind == "body":
            raise RequestTimeout("The request body stalled") from None
        raise


async def _to_upstream(ex: Exchange, up: Upstream, data: bytes | None) -> None:
    """A write to the sandbox; its failure is the sandbox's (502/504), never the client's."""
    if not data:
        return
    try:
        await up.send(data)
    except OSError as exc:
        raise UpstreamError(ex.sandbox or "", ex.port or 0, f"sending the request body: {exc.strerror}") from None
    except Expired as exc:
        raise upstream_expired(ex, exc) from None


def _counter(ex: Exchange):
    def count(n: int) -> None:
        ex.bytes_in += n

    return count
