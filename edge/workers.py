"""`edge serve --workers N`: N processes serving HTTP on one port, one supervisor for the rest.

A trio process runs on one core. To use N cores, the supervisor starts N worker processes; each
runs the HTTP edge with its own SO_REUSEPORT listener on the same address, so the kernel spreads
new connections across them, and its own catalog watcher on the shared catalog. The supervisor keeps
DNS and the admin API (one of each is enough, and the admin API must see one consistent picture),
restarts a worker that dies, and stops them all on SIGINT/SIGTERM.

Metrics: every second, and at once after each catalog change, each worker writes its counters and
the catalog version it serves to a file in a run folder under the state folder; the supervisor's
/metrics and /v1/status add the counters to its own, and its admin API answers a write once every
worker serves it. A worker that died leaves its last counters behind: the supervisor keeps them
(`WorkerFiles.retire`) before starting it again, so a total never goes back (Prometheus would read
a counter going down as a reset).

Port 0 works: the supervisor first binds a SO_REUSEPORT socket to learn a free port (it never
listens, so it receives nothing) and hands the concrete port to the workers.
"""

from __future__ import annotations

import ctypes
import json
import logging
import multiprocessing
import os
import signal
import socket
import tempfile
from collections.abc import Callable
from dataclasses import replace
from functools import partial
from multiprocessing.process import BaseProcess
from multiprocessing.queues import Queue
from pathlib import Path
from typing import Any

import trio

from edge import accesslog, lifecycle, metrics, rlimit
from edge.catalog.store import LiveCatalog
from edge.config import Config, Listen
from edge.errors import ConfigError

logger = logging.getLogger("edge.workers")

_PR_SET_PDEATHSIG = 1
SNAPSHOT_EVERY = 1.0


def _die_with_parent() -> None:
    """Linux: a worker gets SIGTERM when its supervisor dies, however it dies."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


def _worker(config: Config, index: int, run_dir: str, ready: Queue[int]) -> None:
    _die_with_parent()
    accesslog.setup(config)
    rlimit.raise_nofile(quiet=True)
    try:
        trio.run(_worker_main, config, index, Path(run_dir), ready)
    except KeyboardInterrupt:
        pass


async def _worker_main(config: Config, index: int, run_dir: Path, ready: Queue[int]) -> None:
    from edge.catalog.store import LiveCatalog, open_catalog, watch
    from edge.http.server import serve as serve_http

    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            live = LiveCatalog()
            await nursery.start(watch, open_catalog(config), live, config.catalog_poll)
            if config.access_log:  # each worker batches its own lines (O_APPEND keeps them whole)
                from edge.accesslog import ACCESS_LOG

                await nursery.start(ACCESS_LOG.run)
            stop = trio.Event()
            done = trio.Event()
            serving = partial(serve_http, config, live, reuse_port=True, stop=stop)
            await nursery.start(lifecycle.serve_until_done, serving, done)
            nursery.start_soon(_write_snapshots, WorkerFiles.path(run_dir, index), live)
            ready.put(index)
            # Drain like a single-process edge, bounded by http.shutdown_grace, whatever signals follow.
            await lifecycle.stop_on_signal(signals, stop, done, nursery.cancel_scope, second_signal_stops=False)


async def _write_snapshots(path: Path, live: LiveCatalog) -> None:
    """The counters and the catalog version served, every SNAPSHOT_EVERY and right after a swap."""
    tmp = path.with_suffix(".tmp")
    changed = trio.Event()

    def on_change(old: object, new: object) -> None:
        changed.set()

    live.on_change(on_change)
    while True:
        snap = {**metrics.STATS.snapshot(), "catalog_version": live.snapshot.version}
        tmp.write_text(json.dumps(snap))
        os.replace(tmp, path)  # atomic: the supervisor never reads half a file
        with trio.move_on_after(SNAPSHOT_EVERY):
            await changed.wait()
        changed = trio.Event()


class WorkerFiles:
    """The supervisor's side of the run folder: the workers' latest snapshots, plus what workers that
    died had counted (`retired`), so the sums only grow."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.retired = metrics.Stats()

    @staticmethod
    def path(run_dir: Path, index: int) -> Path:
        return run_dir / f"worker-{index}.json"

    def _latest(self) -> list[dict[str, Any]]:
        out = []
        for f in self.run_dir.glob("worker-*.json"):
            try:
                out.append(json.loads(f.read_text()))
            except (OSError, ValueError):
                pass  # a worker restarting: its next snapshot comes within a second
        return out

    def snapshots(self) -> list[dict[str, Any]]:
        """Every running worker's counters, and the retired ones' (metrics.WORKER_SNAPSHOTS reads this)."""
        return [self.retired.snapshot(), *self._latest()]

    def catalog_versions(self) -> list[int]:
        """The catalog version each worker serves (from its latest snapshot)."""
        return [snap.get("catalog_version", 0) for snap in self._latest()]

    def retire(self, index: int) -> None:
        """Worker `index` is dead: keep its last counts (its open connections and tunnels are gone) and
        remove its file, before a new worker `index` starts again from zero."""
        path = self.path(self.run_dir, index)
        try:
            last = json.loads(path.read_text())
        except (OSError, ValueError):
            return  # it died before its first snapshot: nothing counted
        self.retired.add(last)
        self.retired.http_active_connections = 0
        self.retired.http_active_tunnels = 0
        path.unlink(missing_ok=True)


def _on_port(listen: Listen, port: int) -> Listen:
    """`listen` with the port the supervisor reserved, for its first address and any other that
    asked for port 0 (the workers bind them all on that one port)."""
    return Listen(listen.host, port, tuple(Listen(one.host, one.port or port) for one in listen.also))


def _reserve_port(listen: Listen) -> socket.socket:
    family = socket.AF_INET6 if ":" in listen.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((listen.host, listen.port))
    return sock


def supervise(config: Config, *, dns: bool = True, admin: bool = True) -> int:
    """Run `config.workers` HTTP workers and, in this process, DNS and the admin API."""
    accesslog.setup(config)
    rlimit.raise_nofile()
    if dns:  # a domain with no zone file (and none to synthesize) is refused before anything binds
        from edge.dns.zonefile import check_zone_files

        check_zone_files(config)
    try:
        reserved = _reserve_port(config.http.listen)
    except OSError as exc:
        raise ConfigError(f"http: cannot listen on {config.http.listen}: {exc.strerror}") from None
    listen = _on_port(config.http.listen, reserved.getsockname()[1])
    config = replace(config, http=replace(config.http, listen=listen))
    reserved_tls = None
    tls_listen = config.https.listen
    if tls_listen is not None:  # the workers share the HTTPS port the same way
        try:
            reserved_tls = _reserve_port(tls_listen)
        except OSError as exc:
            reserved.close()
            raise ConfigError(f"https: cannot listen on {tls_listen}: {exc.strerror}") from None
        tls_listen = _on_port(tls_listen, reserved_tls.getsockname()[1])
        config = replace(config, https=replace(config.https, listen=tls_listen))
    ctx = multiprocessing.get_context("spawn")
    ready: Queue[int] = ctx.Queue()
    config.state_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="run-", dir=config.state_dir) as run_dir:
        files = WorkerFiles(Path(run_dir))
        metrics.WORKER_SNAPSHOTS.append(files.snapshots)
        procs: list[BaseProcess | None] = [None] * config.workers

        def start(i: int) -> None:
            proc = ctx.Process(target=_worker, args=(config, i, run_dir, ready), name=f"edge-worker-{i}", daemon=True)
            procs[i] = proc
            proc.start()

        try:
            for i in range(config.workers):
                start(i)
            for _ in range(config.workers):
                try:
                    ready.get(timeout=60)
                except Exception:  # noqa: BLE001 - queue.Empty, or a worker that died first
                    raise ConfigError("http workers did not start; see their errors above") from None
            listening = [("http", (one.host, one.port)) for one in listen.all()]
            if tls_listen is not None:
                listening += [("https", (one.host, one.port)) for one in tls_listen.all()]
            for kind, addr in listening:
                lifecycle.announce(kind, addr, config.log_format)
            logger.info("%d http workers up", config.workers)

            async def supervised() -> None:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(_restart_dead, procs, start, files)
                    await lifecycle.serve(
                        config,
                        http=False,
                        dns=dns,
                        admin=admin,
                        http_listening=listening,
                        served_versions=files.catalog_versions,
                    )
                    nursery.cancel_scope.cancel()

            lifecycle.run(supervised)
        finally:
            reserved.close()
            if reserved_tls is not None:
                reserved_tls.close()
            for p in procs:
                if p is not None and p.is_alive():
                    p.terminate()
            for p in procs:
                if p is not None:
                    p.join(timeout=10)
            metrics.WORKER_SNAPSHOTS.clear()
    return 0


async def _restart_dead(procs: list[BaseProcess | None], start: Callable[[int], None], files: WorkerFiles) -> None:
    """A worker that exits on its own is started again (a crash must not shrink the edge for good);
    what it had counted is kept first."""
    while True:
        await trio.sleep(1.0)
        for i, p in enumerate(procs):
            if p is not None and not p.is_alive():
                logger.error("http worker %d (pid %s) exited with %s; starting it again", i, p.pid, p.exitcode)
                files.retire(i)
                start(i)
