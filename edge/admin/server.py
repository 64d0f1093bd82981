"""Serve the admin API on trio with hypercorn, the way the other servers are served.

`serve(config, store, live, *, task_status)` resolves the token (refusing a non-loopback address
without a configured one), binds `admin.listen`, reports the bound addresses (so port 0 works) and
serves until cancelled. hypercorn's own logging goes to the "edge.admin" logger, so its lines come
out in edge's log format.
"""

from __future__ import annotations

import importlib
import logging
import socket
from collections.abc import Callable, Iterable

import trio

from edge.admin.auth import server_token
from edge.catalog.store import LiveCatalog, Store
from edge.config import Config
from edge.errors import ConfigError, first_in_group
from edge.stopping import Stopping

log = logging.getLogger("edge.admin")

#: Seconds open admin requests get to finish when the server stops.
SHUTDOWN_GRACE = 2.0


async def serve(
    config: Config,
    store: Store,
    live: LiveCatalog,
    *,
    listeners: Iterable[tuple[str, tuple]] = (),
    certs=None,
    acme=None,
    served_versions: Callable[[], list[int]] | None = None,
    supervisor: Callable[[], dict | None] | None = None,
    sockets: list[socket.socket] | None = None,
    stop: Stopping | None = None,
    task_status=trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve until cancelled. `listeners`: the other servers' (kind, address) pairs, for /v1/status;
    `certs`: the process's edge.tls.certs.CertStore, `acme`: its edge.tls.acme.Acme task (either may
    be None), for /v1/certs, the certificate renewals and /v1/status; `served_versions`: the catalog
    versions other processes serve (a supervisor's workers): a write is answered once they serve it;
    `supervisor`: what the supervisor says of its generations, for /v1/status. `sockets`: the
    listening sockets bound by the supervisor (edge/sockets.py; else `admin.listen` is bound here).
    When `stop` is set, hypercorn stops accepting and open requests get SHUTDOWN_GRACE seconds."""
    token = server_token(config)
    shown = [(kind, _show(addr)) for kind, addr in listeners]
    # FastAPI, pydantic and hypercorn take about half a second to import: do it in a worker thread so
    # the HTTP edge, already serving in this event loop, does not stall meanwhile.
    api, hypercorn_config, hypercorn_trio = await trio.to_thread.run_sync(
        lambda: [importlib.import_module(m) for m in ("edge.admin.api", "hypercorn.config", "hypercorn.trio")]
    )
    ctx = api.AdminContext(
        store=store,
        live=live,
        token=token.value,
        listeners=lambda: shown,
        max_body=config.admin.max_body_bytes,
        domains=tuple(config.domains),
        certs=certs,
        acme=acme,
        catalog_url=config.catalog_url,
        served_versions=served_versions,
        supervisor=supervisor,
    )
    app = await trio.to_thread.run_sync(api.create_app, ctx)

    hc = hypercorn_config.Config()
    if sockets is not None:  # hypercorn adopts the descriptors as they are
        hc.bind = [f"fd://{sock.fileno()}" for sock in sockets]
        hc.backlog = 1024  # hypercorn listens on them again: keep a deep queue
    else:
        hc.bind = [str(one) for one in config.admin.listen.all()]
    hc.errorlog = log
    hc.accesslog = None
    hc.graceful_timeout = SHUTDOWN_GRACE
    hc.include_server_header = False
    reported = _Reported(task_status, shown)
    log.info("admin token from %s", token.source)
    try:
        await hypercorn_trio.serve(
            app, hc, task_status=reported, mode="asgi", shutdown_trigger=None if stop is None else stop.wait
        )
    except (OSError, BaseExceptionGroup) as exc:
        # hypercorn binds inside its own nurseries: a bind error arrives wrapped in exception groups.
        bind_error = first_in_group(exc, OSError)
        if reported.done or bind_error is None:
            raise
        raise ConfigError(f"admin.listen: cannot listen on {config.admin.listen}: {bind_error.strerror}") from None


class _Reported:
    """Turns hypercorn's bound URLs ("http://127.0.0.1:8081") into the (host, port) tuples we report."""

    def __init__(self, task_status, shown: list[tuple[str, str]]) -> None:
        self.task_status = task_status
        self.shown = shown
        self.done = False

    def started(self, binds: list[str]) -> None:
        bound = [_parse(url) for url in binds]
        self.shown.extend(("admin", _show(addr)) for addr in bound)
        self.done = True
        self.task_status.started(bound)


def _parse(url: str) -> tuple[str, int]:
    hostport = url.split("://", 1)[-1]
    host, _, port = hostport.rpartition(":")
    return host.strip("[]"), int(port)


def _show(addr: tuple) -> str:
    host, port = addr[0], addr[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
