"""An edge process's life: its servers in one nursery, a line per listener, a stop on SIGINT/SIGTERM.

Both ways to run edge use this module, and neither imports the other: `edge serve` in one process
(edge.app) runs `serve()` with every server; `edge serve --workers N` (edge.workers) runs it in the
supervisor without HTTP, and each worker runs its own HTTP server with `serve_until_done` and
`stop_on_signal` from here.

Stopping has one shape everywhere: the first signal sets `stop`, the HTTP server drains (bounded by
http.shutdown_grace) and sets `drained`, then the nursery is cancelled. Each server is
`serve(config, ..., *, task_status)` and reports the addresses it bound; `announce()` prints them
(tests bind port 0 and read them back). `run()` starts trio and hands a server that could not start
(bad zone file, port in use) to the CLI as its own EdgeError, not as the exception groups around it.
"""

from __future__ import annotations

import json
import logging
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import partial
from typing import Any

import trio

from edge.catalog.fleet import join as join_fleet
from edge.catalog.store import LiveCatalog, open_catalog, watch
from edge.config import Config
from edge.errors import EdgeError, first_in_group

logger = logging.getLogger("edge")

#: A listener as the servers report it: (kind, socket address), kind "http", "https", "dns", "admin" or "egress".
Listener = tuple[str, tuple[Any, ...]]


async def serve(
    config: Config,
    *,
    http: bool = True,
    dns: bool = True,
    admin: bool = True,
    http_listening: list[Listener] | None = None,
    served_versions: Callable[[], list[int]] | None = None,
) -> None:
    """The catalog watcher and the chosen servers in one nursery, until a signal stops them.

    `http_listening`: HTTP listeners served elsewhere (a supervisor's workers), for /v1/status;
    `served_versions`: the catalog versions those processes serve (the admin API waits for them)."""
    if admin:  # refuse a bad admin setup (no token for a public address) before anything binds
        from edge.admin.auth import server_token

        server_token(config)
    if dns:  # refuse a domain with no zone file (and none to synthesize) before anything binds
        from edge.dns.zonefile import check_zone_files

        check_zone_files(config)
    stopping = trio.Event()  # set on SIGINT/SIGTERM: the HTTP server drains, then everything stops
    http_done = trio.Event()
    if not http:
        http_done.set()
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            before_stop: list[Callable[[], Awaitable[None]]] = []  # awaited on SIGTERM/SIGINT before stopping
            stop = partial(stop_on_signal, before_stop=before_stop)
            nursery.start_soon(stop, signals, stopping, http_done, nursery.cancel_scope)
            if http and config.access_log:  # the batch writer of the access log (edge/accesslog.py)
                from edge.accesslog import ACCESS_LOG

                await nursery.start(ACCESS_LOG.run)
            listening: list[Listener] = list(http_listening or [])  # for the admin API's /v1/status
            from edge.http.loop import OwnListeners

            own = OwnListeners()  # every listener of this edge: the HTTP server refuses loops to them (508)
            # The catalog: sandboxes for HTTP, ACME challenge values for DNS, the admin API's writes.
            store = open_catalog(config)
            live = LiveCatalog()
            await nursery.start(watch, store, live, config.catalog_poll)
            fleet = await join_fleet(config, store, live, nursery) if dns else None  # Redis: heartbeat, DNS
            if fleet is not None:  # leave the fleet's DNS answers before accepting stops
                before_stop.append(fleet.drain)
            certs = None  # one CertStore per process: the HTTPS listener, the ACME task, the admin API, metrics
            if config.https.listen or config.https.certs or config.acme.directory:
                from edge import metrics
                from edge.tls.certs import CertStore

                certs = CertStore(config)
                metrics.watch_certificates(certs.info)
            if http:
                from edge.http.server import serve as serve_http

                serving = partial(serve_http, config, live, stop=stopping, own=own, certs=certs)
                bound = await nursery.start(serve_until_done, serving, http_done)
                for kind, addr in bound:  # "http", and "https" when configured
                    announce(kind, addr, config.log_format)
                listening += bound
            if dns:
                from edge.dns.server import serve as serve_dns

                bound = await nursery.start(serve_dns, config, live)
                for addr in bound:
                    announce("dns", addr, config.log_format)
                    own.add(addr[0], addr[1])
                listening += [("dns", addr) for addr in bound]
            if config.egress.listen is not None:  # sandboxes' outbound TCP (edge/egress): never in an HTTP worker
                from edge.egress.server import serve as serve_egress

                _egress_metrics()
                bound = await nursery.start(partial(serve_egress, config.egress, live, stop=stopping))
                for kind, addr in bound:
                    announce(kind, addr, config.log_format)
                    own.add(addr[0], addr[1])
                listening += bound
            acme = None
            if admin and config.acme.directory:  # ACME runs beside the admin API: once per edge, not per worker
                from edge.tls.acme import Acme

                assert certs is not None
                acme = Acme(config, certs, store, live if dns else None)
            if admin:
                from edge.admin.server import serve as serve_admin

                serving_admin = partial(
                    serve_admin, listeners=listening, certs=certs, acme=acme, served_versions=served_versions
                )
                bound = await nursery.start(serving_admin, config, store, live)
                for addr in bound:
                    announce("admin", addr, config.log_format)
                    own.add(addr[0], addr[1])
            if acme is not None:  # after DNS is up: the first order may start at once
                await nursery.start(acme.run)
            logger.info("edge is up; catalog %s; domains %s", config.catalog_url, ", ".join(config.domains))


_egress_registered = False


def _egress_metrics() -> None:
    """The egress counters on /metrics: once per process (a registry refuses the same families twice)."""
    global _egress_registered
    if not _egress_registered:
        from edge import metrics
        from edge.egress import stats

        stats.register(metrics.REGISTRY)
        _egress_registered = True


def announce(kind: str, addr: tuple[Any, ...], log_format: str = "text") -> None:
    """One line per listener, in the log's format: stdout stays one JSON object per line in json mode.

    text: `edge: <kind> listening on <addr>`; json: `{"time", "level", "logger", "message", "event":
    "listening", "kind", "address"}`, the message being the same words as the text line."""
    host, port = addr[0], addr[1]
    shown = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    if log_format == "json":
        now = time.time()
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1000):03d}Z"
        doc = {
            "time": stamp,
            "level": "info",
            "logger": "edge",
            "message": f"{kind} listening on {shown}",
            "event": "listening",
            "kind": kind,
            "address": shown,
        }
        _say(json.dumps(doc, separators=(",", ":")))
        return
    # A fixed, parseable line: "edge: <kind> listening on <addr>"
    _say(f"edge: {kind} listening on {shown}")


def _say(line: str) -> None:
    """A line on stdout, through the access log's writer while it owns stdout (edge/accesslog.py):
    a print() beside its batch writes could land in the middle of one and break both lines."""
    from edge.accesslog import ACCESS_LOG

    if ACCESS_LOG.path != "-" or not ACCESS_LOG.append((line + "\n").encode()):
        print(line, flush=True)


async def serve_until_done(
    serving: Callable[..., Awaitable[None]], done: trio.Event, *, task_status: Any = trio.TASK_STATUS_IGNORED
) -> None:
    """Run `serving(task_status=...)` (an HTTP server that drains when its stop event is set), and
    set `done` however it ends: `stop_on_signal` waits for that before it cancels everything."""
    try:
        await serving(task_status=task_status)
    finally:
        done.set()


async def stop_on_signal(
    signals: AsyncIterator[int],
    stopping: trio.Event,
    drained: trio.Event,
    scope: trio.CancelScope,
    *,
    second_signal_stops: bool = True,
    before_stop: list[Callable[[], Awaitable[None]]] | None = None,
) -> None:
    """First signal: set `stopping` (the HTTP server drains, bounded by http.shutdown_grace), wait
    for `drained`, then cancel `scope`. A second signal stops at once, unless `second_signal_stops`
    is False (a worker: Ctrl-C reaches it with its supervisor, whose SIGTERM then comes second)."""
    async for signum in signals:
        logger.info("stopping on %s", signal.Signals(signum).name)
        while before_stop:  # a fleet edge marks itself draining and waits first (edge/catalog/fleet.py)
            await before_stop.pop()()
        stopping.set()
        break
    if not second_signal_stops:
        await drained.wait()
        scope.cancel()
        return
    async with trio.open_nursery() as waiting:

        async def second_signal() -> None:
            async for _ in signals:
                waiting.cancel_scope.cancel()
                return

        waiting.start_soon(second_signal)
        await drained.wait()
        waiting.cancel_scope.cancel()
    scope.cancel()


def run(async_fn: Callable[[], Awaitable[object]]) -> None:
    """trio.run(async_fn); a server that cannot start (bad zone file, port in use) raises an EdgeError
    inside a nursery: it is raised as itself, so the user sees one line and not a traceback."""
    try:
        trio.run(async_fn)
    except BaseExceptionGroup as group:
        first = first_in_group(group, EdgeError)
        if first is None:
            raise
        raise first from None
