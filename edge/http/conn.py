"""One client connection: wait for a request, pick its lane, and go on while the outcome says NEXT.

Theory of operation. Each request takes one of two lanes (edge/http/README.md). A plain request,
whole in the bytes at hand (h1.parse_request), takes the fast lane (fastlane.py: no h11 at all).
Any other takes the h11 lane (h11lane.py) from the same bytes. Either returns an Outcome
(exchange.py): NEXT leaves any pipelined bytes in `client.buffered`, and the loop goes on with them;
CLOSE and TUNNELLED end the connection.

Between requests the connection waits here, in the loop's own frame, with no h11 state and no parsed
head: an idle keep-alive connection should cost little memory. Its wait is an "idle" entry in the
deadline table (deadlines.py), head_timeout before a first request and keepalive_timeout after; a
graceful stop ends such waits at once (ServerContext.drain).
"""

from __future__ import annotations

import trio
from trio.lowlevel import checkpoint, wait_readable

from edge.http.client import GONE, ClientSide
from edge.http.context import ServerContext
from edge.http.exchange import NEXT
from edge.http.fastlane import fast_exchange
from edge.http.h1 import parse_request
from edge.http.h11lane import h11_exchange
from edge.metrics import STATS


async def serve_connection(ctx: ServerContext, client: ClientSide) -> None:
    STATS.http_active_connections += 1
    http = ctx.http
    io = client.io
    table = ctx.deadlines.table
    rd = io.rd
    read_size = http.read_size
    max_bytes, max_fields = http.max_head_bytes, http.max_head_fields
    fast_lane = http.fast_lane
    # A new connection gets head_timeout to start its first request; later waits keepalive_timeout.
    # The kinds differ too: a drain (a deploy, a stop) closes connections idle between requests,
    # which a client may retry on a new one, but never one that has yet to send its first request:
    # its client reused nothing, so it would not retry, and the request would be lost.
    wait_for = http.head_timeout
    waiting = "first"
    try:
        while True:
            buf = client.buffered
            if buf:
                client.buffered = b""
                # Pipelined: the next request is already here. Socket I/O does not checkpoint when
                # a socket is ready, so yield once per exchange to keep the other connections fair.
                await checkpoint()
            else:
                if not io.pending():
                    deadline = trio.current_time() + wait_for
                    rd.kind = waiting
                    table[rd] = deadline
                    try:
                        await wait_readable(io.fd)
                    except trio.ClosedResourceError:
                        break  # idle past its time, or the server is stopping
                    finally:
                        table.pop(rd, None)
                    if rd.expired == waiting:
                        rd.expired = None  # the request came in the round its deadline passed: it won
                buf = await io.recv(read_size, trio.current_time() + wait_for, waiting)
                if not buf:  # closed by the client
                    break
                wait_for = http.keepalive_timeout
                waiting = "idle"
            end = buf.find(b"\r\n\r\n")
            head = parse_request(buf, end, max_bytes, max_fields) if fast_lane and end >= 0 else None
            if head is not None and len(buf) >= head.end + head.length:
                outcome = await fast_exchange(ctx, client, head, buf)
            else:
                # h11 takes the bytes from `buffered` and keeps its own copy: holding ours too would
                # make a partial head cost twice its size while the rest is awaited.
                client.buffered = buf
                buf = b""
                outcome = await h11_exchange(ctx, client)
            # Let go of what this request held before waiting for the next one (~500 bytes an idle
            # connection).
            head = None
            buf = b""
            if outcome is not NEXT or ctx.draining:
                break
    except GONE:
        pass  # the client went away; nothing to answer
    finally:
        STATS.http_active_connections -= 1
        await client.close(read_size, trio.current_time())
