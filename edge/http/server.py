"""The HTTP server: listeners, admission, one connection task per accepted socket, graceful stop.

`serve(config, live, *, task_status)` binds `config.http.listen`, reports the bound addresses through
`task_status.started()`, and serves until cancelled or until `stop` is set. Beside the connections run
the deadline sweep (deadlines.py) and the pool's reaper.

Admission: a new connection past `http.max_connections`, or past `max_connections_per_ip` from its
address, is closed at once and counted (ServerContext.admit). Each admitted socket becomes a
`ClientSide` over a `SocketTransport` (client.py), and conn.serve_connection takes it from there.
"""

from __future__ import annotations

import logging
import socket
from functools import partial

import trio

from edge.accept import accept_loop
from edge.catalog.store import LiveCatalog
from edge.config import Config
from edge.http.client import ClientSide, SocketTransport
from edge.http.conn import serve_connection
from edge.http.context import ServerContext
from edge.http.listen import open_listeners
from edge.http.loop import OwnListeners
from edge.metrics import STATS

logger = logging.getLogger("edge.http")


async def _handle(ctx: ServerContext, stream: trio.SocketStream) -> None:
    sock = stream.socket
    try:
        ip = sock.getpeername()[0]
    except OSError:  # reset before we got to it
        sock.close()
        return
    if not ctx.admit(ip):  # over http.max_connections or max_connections_per_ip: closed at once
        sock.close()
        return
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        client = ClientSide(SocketTransport(sock, ctx.deadlines), ip.encode(), ctx.http.max_head_bytes)
        await serve_connection(ctx, client)
    except Exception:  # a bug must cost one connection, never the server
        logger.exception("connection handler failed")
        sock.close()
    finally:
        ctx.leave(ip)


async def serve(config: Config, live: LiveCatalog, *, reuse_port: bool = False, stop: trio.Event | None = None,
                own: OwnListeners | None = None, task_status=trio.TASK_STATUS_IGNORED) -> None:
    """Serve until cancelled, or until `stop` is set: then drain gracefully and return.

    `own` collects the edge's listening addresses (a request to one of them is a loop: 508); the
    caller adds the admin and DNS listeners it binds later. Without it, the configured ones count."""
    listeners = open_listeners(config.http.listen, reuse_port=reuse_port)
    if own is None:
        own = OwnListeners()
    for listen in (config.dns.listen, config.admin.listen):
        own.add(listen.host, listen.port)
    bound = [tuple(sock.getsockname()[:2]) for sock in listeners]
    for host, port in bound:
        own.add(host, port)
    ctx = ServerContext(config, live, own, bound[0][1])
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(ctx.pool.run_reaper)
            nursery.start_soon(ctx.deadlines.run)
            async with trio.open_nursery() as handlers:
                accepting = trio.CancelScope()

                async def accept(sock: socket.socket) -> None:
                    with accepting:
                        try:
                            await accept_loop(sock, handlers, partial(_handle, ctx))
                        except trio.ClosedResourceError:
                            pass  # the listener was closed: a graceful stop

                for sock in listeners:
                    handlers.start_soon(accept, sock)
                task_status.started(bound)
                if stop is None:
                    await trio.sleep_forever()
                await stop.wait()
                # Graceful stop: no new connections; idle keep-alive connections close now; requests in
                # flight get shutdown_grace seconds to finish (each connection closes after its
                # current exchange), then whatever is left is cancelled. With nothing in flight the
                # handlers' nursery ends at once.
                accepting.cancel()
                for sock in listeners:
                    trio.lowlevel.notify_closing(sock)
                    sock.close()
                ctx.drain()
                logger.info("http: draining %d connections for up to %.1f s",
                            STATS.http_active_connections, config.http.shutdown_grace)
                handlers.cancel_scope.deadline = trio.current_time() + config.http.shutdown_grace
            nursery.cancel_scope.cancel()
    finally:
        ctx.pool.close_all()
        for sock in listeners:
            sock.close()
