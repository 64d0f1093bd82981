"""`edge serve`: the catalog watcher and the servers in one nursery, stopped by SIGINT/SIGTERM.

Each server is `serve(config, ..., *, task_status)` and reports the addresses it bound, which are
printed once all are up (tests bind port 0 and read them back).
"""

from __future__ import annotations

import logging
import signal
from functools import partial

import trio

from edge import log as edge_log
from edge.catalog.store import LiveCatalog, open_store, watch
from edge.config import Config
from edge.errors import EdgeError, first_in_group

logger = logging.getLogger("edge")


async def main(config: Config, *, http: bool = True, dns: bool = True, admin: bool = True,
               http_listening: list | None = None) -> None:
    if admin:  # refuse a bad admin setup (no token for a public address) before anything binds
        from edge.admin.auth import server_token

        server_token(config)
    stopping = trio.Event()  # set on SIGINT/SIGTERM: the HTTP server drains, then everything stops
    http_done = trio.Event()
    if not http:
        http_done.set()
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_stop_on_signal, signals, stopping, http_done, nursery.cancel_scope)
            listening: list[tuple[str, tuple]] = list(http_listening or [])  # for the admin API's /v1/status
            from edge.http.loop import OwnListeners

            own = OwnListeners()  # every listener of this edge: the HTTP server refuses loops to them (508)
            if http:
                store = open_store(config.catalog_url)
                live = LiveCatalog()
                await nursery.start(watch, store, live, config.catalog_poll)
                from edge.http.server import serve as serve_http

                async def serve_and_report(task_status=trio.TASK_STATUS_IGNORED) -> None:
                    try:
                        await serve_http(config, live, stop=stopping, own=own, task_status=task_status)
                    finally:
                        http_done.set()

                bound = await nursery.start(serve_and_report)
                for addr in bound:
                    _announce("http", addr)
                listening += [("http", addr) for addr in bound]
            if dns:
                from edge.dns.server import serve as serve_dns

                bound = await nursery.start(serve_dns, config)
                for addr in bound:
                    _announce("dns", addr)
                    own.add(addr[0], addr[1])
                listening += [("dns", addr) for addr in bound]
            if admin:
                from edge.admin.server import serve as serve_admin

                if not http:  # the admin API writes the catalog; the HTTP block did not open it here
                    store, live = open_store(config.catalog_url), LiveCatalog()
                    await nursery.start(watch, store, live, config.catalog_poll)
                bound = await nursery.start(partial(serve_admin, listeners=listening), config, store, live)
                for addr in bound:
                    _announce("admin", addr)
                    own.add(addr[0], addr[1])
            logger.info("edge is up; catalog %s; domains %s", config.catalog_url, ", ".join(config.domains))


def _announce(kind: str, addr: tuple) -> None:
    host, port = addr[0], addr[1]
    shown = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    # A fixed, parseable line: "edge: <kind> listening on <addr>"
    print(f"edge: {kind} listening on {shown}", flush=True)


async def _stop_on_signal(signals, stopping: trio.Event, http_done: trio.Event, scope: trio.CancelScope) -> None:
    """First signal: drain the HTTP server (it bounds that by http.shutdown_grace), then stop.
    A second signal stops at once."""
    async for signum in signals:
        logger.info("stopping on %s", signal.Signals(signum).name)
        stopping.set()
        break
    async with trio.open_nursery() as waiting:
        async def second_signal() -> None:
            async for _ in signals:
                waiting.cancel_scope.cancel()
                return

        waiting.start_soon(second_signal)
        await http_done.wait()
        waiting.cancel_scope.cancel()
    scope.cancel()


def run(config: Config, *, http: bool = True, dns: bool = True, admin: bool = True) -> int:
    edge_log.setup(config.log_format, access=config.access_log)
    if http and config.workers > 1:
        from edge.workers import supervise

        return supervise(config, dns=dns, admin=admin)
    try:
        trio.run(lambda: main(config, http=http, dns=dns, admin=admin))
    except BaseExceptionGroup as group:
        # A server that cannot start (bad zone file, port in use) raises an EdgeError inside the
        # nursery: hand it to the CLI as itself, so the user sees one line and not a traceback.
        first = first_in_group(group, EdgeError)
        if first is None:
            raise
        raise first from None
    return 0
