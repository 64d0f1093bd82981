"""The HTTP listener: accept connections and hand each to a ClientConnection.

`serve(config, live, *, task_status)` binds `config.http.listen`, reports the bound addresses through
`task_status.started()`, and serves until cancelled. The upstream pool's reaper runs beside it.
"""

from __future__ import annotations

import logging
from functools import partial

import trio

from edge.catalog.store import LiveCatalog
from edge.config import Config
from edge.http.conn import ClientConnection, ServerContext
from edge.metrics import STATS

logger = logging.getLogger("edge.http")


async def _handle(ctx: ServerContext, stream: trio.SocketStream) -> None:
    try:
        await ClientConnection(ctx, stream).run()
    except Exception:  # a bug must cost one connection, never the server
        logger.exception("connection handler failed")


async def _reuse_port_listener(listen) -> trio.SocketListener:
    """A listener that shares its port with the other workers' (SO_REUSEPORT): the kernel spreads
    new connections across them. Only `edge serve --workers N` asks for it: on by accident, two
    unrelated edges could split one port's traffic without a word."""
    family = trio.socket.AF_INET6 if ":" in listen.host else trio.socket.AF_INET
    sock = trio.socket.socket(family, trio.socket.SOCK_STREAM)
    try:
        sock.setsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_REUSEADDR, 1)
        sock.setsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_REUSEPORT, 1)
        await sock.bind((listen.host, listen.port))
        sock.listen(4096)
    except BaseException:
        sock.close()
        raise
    return trio.SocketListener(sock)


async def serve(config: Config, live: LiveCatalog, *, reuse_port: bool = False, stop: trio.Event | None = None,
                task_status=trio.TASK_STATUS_IGNORED) -> None:
    """Serve until cancelled, or until `stop` is set: then drain gracefully and return."""
    listen = config.http.listen
    try:
        if reuse_port:
            listeners = [await _reuse_port_listener(listen)]
        else:
            listeners = await trio.open_tcp_listeners(listen.port, host=listen.host, backlog=4096)
    except OSError as exc:
        from edge.errors import ConfigError

        raise ConfigError(f"http: cannot listen on {listen}: {exc.strerror}") from None
    ctx = ServerContext(config, live)
    bound = [tuple(ln.socket.getsockname()[:2]) for ln in listeners]
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(ctx.pool.run_reaper)
            nursery.start_soon(ctx.reap_idle)
            async with trio.open_nursery() as handlers:
                accepting = trio.CancelScope()

                async def accept(task_status=trio.TASK_STATUS_IGNORED) -> None:
                    with accepting:
                        await trio.serve_listeners(partial(_handle, ctx), listeners, handler_nursery=handlers,
                                                   task_status=task_status)

                await handlers.start(accept)
                task_status.started(bound)
                if stop is None:
                    await trio.sleep_forever()
                await stop.wait()
                # Graceful stop: no new connections; idle keep-alive connections close now; requests in
                # flight get shutdown_grace seconds to finish (each connection closes after its
                # current exchange), then whatever is left is cancelled.
                accepting.cancel()
                for listener in listeners:
                    await listener.aclose()
                ctx.drain()
                logger.info("http: draining %d connections for up to %.1f s",
                            STATS.http_active_connections, config.http.shutdown_grace)
                handlers.start_soon(_cancel_after, config.http.shutdown_grace, handlers.cancel_scope)
            nursery.cancel_scope.cancel()
    finally:
        ctx.pool.close_all()


async def _cancel_after(seconds: float, scope: trio.CancelScope) -> None:
    await trio.sleep(seconds)
    scope.cancel()
