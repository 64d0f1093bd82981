"""An edge process's servers in one nursery, on sockets bound for them, until its signals stop it.

`edge serve` is a supervisor (edge/supervisor.py) that binds every listener (edge/sockets.py) and
runs worker processes (edge/workers.py): each runs `serve()` here on those sockets, HTTP in every
worker, and DNS, the admin API, egress and ACME in worker 0 only. `edge dns` runs `serve()` in its
one process (edge/app.py).

Its signals: SIGTERM or SIGINT stop (the servers stop accepting; connections in flight get
http.shutdown_grace); SIGQUIT, from the supervisor during a reload or an upgrade, drains (they get
http.drain_timeout: tunnels and streams run on). Either way a `Stopping` (edge/stopping.py) carries
the deadline, the HTTP server drains and returns, and then everything else is cancelled.
`serve()` reports the addresses it serves through task_status; `announce()` prints them (tests bind
port 0 and read them back). `run()` starts trio and hands a server that could not start (bad zone
file, port in use) to the CLI as its own EdgeError, not as the exception groups around it.
"""

from __future__ import annotations

import gc
import json
import logging
import signal
import time
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import trio

from edge.catalog.fleet import join as join_fleet
from edge.catalog.store import LiveCatalog, open_catalog, watch
from edge.config import Config
from edge.errors import EdgeError, first_in_group
from edge.sockets import Sockets
from edge.stopping import Stopping

logger = logging.getLogger("edge")

#: A listener as the servers report it: (kind, socket address), kind "http", "https", "dns", "admin" or "egress".
Listener = tuple[str, tuple[Any, ...]]


def check(config: Config, *, dns: bool = True, admin: bool = True) -> None:
    """Refuse what would fail after binding: no admin token for a public admin address, a domain with
    no zone file (and none to synthesize). Raises the EdgeError that says why."""
    if admin:
        from edge.admin.auth import server_token

        server_token(config)
    if dns:
        from edge.dns.zonefile import check_zone_files

        check_zone_files(config)


async def serve(
    config: Config,
    sockets: Sockets,
    *,
    live: LiveCatalog | None = None,
    served_versions: Callable[[], list[int]] | None = None,
    supervisor: Callable[[], dict | None] | None = None,
    listening: list[Listener] | None = None,
    task_status: Any = trio.TASK_STATUS_IGNORED,
) -> None:
    """The catalog watcher and the servers `sockets` has listeners for, in one nursery, until a signal
    stops them; reports what it serves, [(kind, address)], once every server is up. Egress and ACME
    run beside DNS and the admin API (once per edge: in worker 0, whose sockets include them).

    `live`: the catalog snapshot to keep current (made here if not given); `served_versions`: the
    catalog versions the edge's other processes serve (the admin API waits for them);
    `supervisor`: its generations, for /v1/status; `listening`: every listener of the edge, for
    /v1/status (default: the ones served here)."""
    http, dns, admin = bool(sockets.http or sockets.https), bool(sockets.dns), bool(sockets.admin)
    check(config, dns=dns, admin=admin)
    stopping = Stopping()
    http_done = trio.Event()
    if not http:
        http_done.set()
    served: list[Listener] = []
    shown: list[Listener] = list(listening) if listening is not None else served  # for /v1/status
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM, signal.SIGQUIT) as signals:
        async with trio.open_nursery() as nursery:
            before_stop: list[Callable[[], Awaitable[None]]] = []  # awaited on SIGTERM/SIGINT before stopping
            on_deploy: list[Callable[[], None]] = []  # called on SIGQUIT: the next generation takes over
            nursery.start_soon(_on_signals, signals, stopping, config, before_stop, on_deploy)
            if http and config.access_log:  # the batch writer of the access log (edge/accesslog.py)
                from edge.accesslog import ACCESS_LOG

                await nursery.start(ACCESS_LOG.run)
            from edge.http.loop import OwnListeners

            own = OwnListeners()  # every listener of this edge: the HTTP server refuses loops to them (508)
            for _, addr in sockets.listening():
                own.add(addr[0], addr[1])
            # The catalog: sandboxes for HTTP, ACME challenge values for DNS, the admin API's writes.
            store = open_catalog(config)
            live = live if live is not None else LiveCatalog()
            await nursery.start(watch, store, live, config.catalog_poll)
            fleet = await join_fleet(config, store, live, nursery) if dns else None  # Redis: heartbeat, DNS
            if fleet is not None:  # leave the fleet's DNS answers before accepting stops
                before_stop.append(fleet.drain)
                on_deploy.append(fleet.hand_over)
            certs = None  # one CertStore per process: the HTTPS listener, the ACME task, the admin API, metrics
            if config.https.listen or config.https.certs or config.acme.directory:
                from edge import metrics
                from edge.tls.certs import CertStore

                certs = CertStore(config)
                metrics.watch_certificates(certs.info)
            if http:
                from edge.http.server import serve as serve_http

                serving = partial(
                    serve_http,
                    config,
                    live,
                    sockets=(sockets.http, sockets.https),
                    stop=stopping,
                    own=own,
                    certs=certs,
                )
                served += await nursery.start(serve_until_done, serving, http_done)
            if dns:
                from edge.dns.server import serve as serve_dns

                bound = await nursery.start(partial(serve_dns, config, live, sockets=sockets.dns, stop=stopping))
                served += [("dns", addr) for addr in bound]
            if sockets.egress:  # sandboxes' outbound TCP (edge/egress): beside DNS, once per edge
                from edge.egress.server import serve as serve_egress

                _egress_metrics()
                egress = partial(serve_egress, config.egress, live, sockets=sockets.egress, stop=stopping)
                served += await nursery.start(egress)
            acme = None
            if admin and config.acme.directory:  # ACME beside the admin API: once per edge
                from edge.tls.acme import Acme

                assert certs is not None
                acme = Acme(config, certs, store, live if dns else None)
            if admin:
                from edge.admin.server import serve as serve_admin

                serving_admin = partial(
                    serve_admin,
                    listeners=[one for one in shown if one[0] != "admin"],  # it adds its own
                    certs=certs,
                    acme=acme,
                    served_versions=served_versions,
                    supervisor=supervisor,
                    sockets=sockets.admin,
                    stop=stopping,
                )
                bound = await nursery.start(serving_admin, config, store, live)
                served += [("admin", addr) for addr in bound]
            if acme is not None:  # after DNS is up: the first order may start at once
                nursery.start_soon(_until_stopped, acme.run, stopping)
            # What the servers loaded as they started (the admin API imports FastAPI, pydantic and
            # hypercorn in a thread, after run() froze the rest) lives as long as the process: out
            # of the full collections' scans with it (a 229 ms collection was measured without).
            gc.collect()
            gc.freeze()
            task_status.started(served)
            await stopping.wait()
            await http_done.wait()
            nursery.cancel_scope.cancel()


async def _on_signals(
    signals: Any,
    stopping: Stopping,
    config: Config,
    before_stop: list[Callable[[], Awaitable[None]]],
    on_deploy: list[Callable[[], None]],
) -> None:
    """SIGQUIT drains (a deploy: http.drain_timeout), SIGTERM and SIGINT stop (http.shutdown_grace);
    a later signal can only bring the deadline nearer (edge/stopping.py)."""
    async for signum in signals:
        if signum == signal.SIGQUIT:
            grace, why = config.http.drain_timeout, "a new generation took over"
            while on_deploy:
                on_deploy.pop()()
        else:
            grace, why = config.http.shutdown_grace, f"stopping on {signal.Signals(signum).name}"
            while before_stop:  # a fleet edge marks itself draining and waits first (edge/catalog/fleet.py)
                await before_stop.pop()()
        if stopping.stop(grace, why):
            logger.info("%s; connections get up to %.0f s", why, grace)


async def _until_stopped(run: Callable[..., Awaitable[object]], stopping: Stopping) -> None:
    """`run()` until the process stops or drains: a task that must run once per edge (ACME) does
    not go on in an old generation beside the new one."""
    async with trio.open_nursery() as nursery:
        nursery.start_soon(run)
        await stopping.wait()
        nursery.cancel_scope.cancel()


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
    set `done` however it ends: `serve()` waits for that before it cancels everything else."""
    try:
        await serving(task_status=task_status)
    finally:
        done.set()


def say_up(config: Config, listening: list[Listener]) -> None:
    """The listening lines, then "edge is up": what people and tests read to know it serves."""
    for kind, addr in listening:
        announce(kind, addr, config.log_format)
    logger.info("edge is up; catalog %s; domains %s", config.catalog_url, ", ".join(config.domains))


#: Full (generation 2) collections run only after this many generation-1 ones (CPython's default: 10).
GC_FULL_EVERY = 100


def run(async_fn: Callable[[], Awaitable[object]]) -> None:
    """trio.run(async_fn); a server that cannot start (bad zone file, port in use) raises an EdgeError
    inside a nursery: it is raised as itself, so the user sees one line and not a traceback.

    A full garbage collection stops every connection while it scans every object: with 1,000
    connections open, 60-200 ms (bench/results/adversarial-ab.md). What was imported is frozen out of
    the scans, and full collections are ten times rarer; the young generations are as CPython has them."""
    gc.collect()
    gc.freeze()
    young, middle, _ = gc.get_threshold()
    gc.set_threshold(young, middle, GC_FULL_EVERY)
    try:
        trio.run(async_fn)
    except BaseExceptionGroup as group:
        first = first_in_group(group, EdgeError)
        if first is None:
            raise
        raise first from None
