"""The HTTP server: listeners (listen.py), one ClientConnection per accepted socket, graceful stop.

`serve(config, live, *, task_status)` binds `config.http.listen`, reports the bound addresses through
`task_status.started()`, and serves until cancelled. The upstream pool's reaper runs beside it.
"""

from __future__ import annotations

import logging
from functools import partial

import trio

from edge.accept import accept_loop
from edge.catalog.store import LiveCatalog
from edge.config import Config
from edge.http.conn import ClientConnection, ServerContext
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
        await ClientConnection(ctx, stream, ip.encode()).run()
    except Exception:  # a bug must cost one connection, never the server
        logger.exception("connection handler failed")
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
    ctx = ServerContext(config, live, own)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(ctx.pool.run_reaper)
            nursery.start_soon(ctx.reap_idle)
            async with trio.open_nursery() as handlers:
                accepting = trio.CancelScope()

                async def accept(sock) -> None:
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
                # current exchange), then whatever is left is cancelled.
                accepting.cancel()
                for sock in listeners:
                    trio.lowlevel.notify_closing(sock)
                    sock.close()
                ctx.drain()
                logger.info("http: draining %d connections for up to %.1f s",
                            STATS.http_active_connections, config.http.shutdown_grace)
                handlers.start_soon(_cancel_after, config.http.shutdown_grace, handlers.cancel_scope)
            nursery.cancel_scope.cancel()
    finally:
        ctx.pool.close_all()
        for sock in listeners:
            sock.close()


async def _cancel_after(seconds: float, scope: trio.CancelScope) -> None:
    await trio.sleep(seconds)
    scope.cancel()
