"""A worker process of `edge serve`: the servers of one generation, on its supervisor's sockets.

The supervisor (edge/supervisor.py) starts each worker as `python -m edge serve ARGS` with
EDGE_WORKER (its generation, index, run folder and the descriptor on which it says "ready") and
EDGE_SOCKETS (the listening sockets it inherits, edge/sockets.py). The worker reads the config from
the same arguments with the program on disk, serves (edge.lifecycle: HTTP in every worker; DNS, the
admin API, egress and ACME in worker 0), writes "ready" once every server is up, and drains on
SIGQUIT or stops on SIGTERM.

Metrics: every second, and at once after each catalog change, each worker writes its counters, the
catalog version it serves and whether it drains to a file in the run folder; worker 0's /metrics
and /v1/status add the others' to its own, and its admin API answers a write once every worker
serves it. A worker that ended leaves its last counters behind: the supervisor folds them into
`retired.json` (`WorkerFiles.retire`), so a total never goes back (Prometheus would read a counter
going down as a reset), across restarts, reloads and upgrades alike.
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import signal
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

import trio

from edge import accesslog, lifecycle, metrics, rlimit
from edge.catalog.store import LiveCatalog
from edge.config import Config
from edge.errors import EdgeError
from edge.sockets import Sockets

logger = logging.getLogger("edge.workers")

_PR_SET_PDEATHSIG = 1
SNAPSHOT_EVERY = 1.0


@dataclass(frozen=True)
class WorkerSpec:
    """What a worker is told by its supervisor, in EDGE_WORKER (JSON)."""

    generation: int
    index: int
    run_dir: str
    ready_fd: int

    def to_env(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_env(cls, text: str) -> WorkerSpec:
        doc = json.loads(text)
        return cls(int(doc["generation"]), int(doc["index"]), str(doc["run_dir"]), int(doc["ready_fd"]))


def _die_with_parent() -> None:
    """Linux: a worker gets SIGTERM when its supervisor dies, however it dies (an exec is no death:
    the process lives on)."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


def run_worker(config: Config, spec: WorkerSpec, sockets: Sockets) -> int:
    """Serve until stopped or drained; a start-up error is written to the ready pipe for the
    supervisor to report, and raised."""
    _die_with_parent()
    accesslog.setup(config)
    rlimit.raise_nofile(quiet=True)
    try:
        lifecycle.run(partial(_worker_main, config, spec, sockets))
    except EdgeError as exc:
        _tell(spec, f"error {exc.message}")
        raise
    except KeyboardInterrupt:
        pass
    return 0


def _tell(spec: WorkerSpec, line: str) -> None:
    try:
        os.write(spec.ready_fd, (line + "\n").encode())
        os.close(spec.ready_fd)
    except OSError:
        pass  # told already, or the supervisor stopped listening


async def _worker_main(config: Config, spec: WorkerSpec, sockets: Sockets) -> None:
    run_dir = Path(spec.run_dir)
    files = WorkerFiles(run_dir)
    mine = files.path(spec.generation, spec.index)
    if spec.index == 0:  # /metrics and /v1/status add the other workers' counters to this one's
        metrics.WORKER_SNAPSHOTS[:] = [partial(files.snapshots, but=mine)]
    live = LiveCatalog()
    async with trio.open_nursery() as nursery:

        async def serving(*, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
            await lifecycle.serve(
                config,
                sockets,  # worker 0's hold DNS, admin and egress too: it serves them
                live=live,
                served_versions=partial(files.catalog_versions, but=mine),
                supervisor=partial(files.supervisor, but=mine),
                listening=sockets.listening(),
                task_status=task_status,
            )
            nursery.cancel_scope.cancel()

        await nursery.start(serving)
        nursery.start_soon(_write_snapshots, mine, live, spec)
        _tell(spec, "ready")
        logger.debug("worker %d of generation %d serving", spec.index, spec.generation)


async def _write_snapshots(path: Path, live: LiveCatalog, spec: WorkerSpec) -> None:
    """The counters and the catalog version served, every SNAPSHOT_EVERY, right after a swap, and a
    last time as the worker ends."""
    changed = trio.Event()

    def on_change(old: object, new: object) -> None:
        changed.set()

    live.on_change(on_change)
    try:
        while True:
            _write_snapshot(path, live, spec)
            with trio.move_on_after(SNAPSHOT_EVERY):
                await changed.wait()
            changed = trio.Event()
    finally:
        _write_snapshot(path, live, spec)


def _write_snapshot(path: Path, live: LiveCatalog, spec: WorkerSpec) -> None:
    snap = {
        **metrics.STATS.snapshot(),
        "catalog_version": live.snapshot.version,
        "generation": spec.generation,
        "index": spec.index,
        "pid": os.getpid(),
    }
    tmp = path.with_suffix(".tmp")
    try:
        tmp.write_text(json.dumps(snap))
        os.replace(tmp, path)  # atomic: a reader never sees half a file
    except OSError as exc:  # out of descriptors, a full disk: the next one, a second later, may do
        logger.debug("worker snapshot not written: %s", exc)


class WorkerFiles:
    """The run folder: each worker's latest snapshot (`worker-GEN-INDEX.json`), what ended workers had
    counted (`retired.json`), and the supervisor's own account (`supervisor.json`)."""

    RETIRED = "retired.json"
    SUPERVISOR = "supervisor.json"

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir

    @staticmethod
    def path_in(run_dir: Path, generation: int, index: int) -> Path:
        return run_dir / f"worker-{generation}-{index}.json"

    def path(self, generation: int, index: int) -> Path:
        return self.path_in(self.run_dir, generation, index)

    def _read(self, path: Path) -> dict[str, Any] | None:
        try:
            doc = json.loads(path.read_text())
        except (OSError, ValueError):
            return None  # a worker starting, or the file being replaced: the next read has it
        return doc if isinstance(doc, dict) else None

    def _latest(self, but: Path | None = None) -> list[dict[str, Any]]:
        out = []
        for f in sorted(self.run_dir.glob("worker-*.json")):
            if f != but:
                doc = self._read(f)
                if doc is not None:
                    out.append(doc)
        return out

    def snapshots(self, but: Path | None = None) -> list[dict[str, Any]]:
        """Every running worker's counters but `but`'s (the reader's own, counted live), and the
        retired ones' (metrics.WORKER_SNAPSHOTS reads this)."""
        retired = self._read(self.run_dir / self.RETIRED)
        return [*([retired] if retired else []), *self._latest(but)]

    def catalog_versions(self, but: Path | None = None) -> list[int]:
        """The catalog version each worker serves (from its latest snapshot)."""
        return [snap.get("catalog_version", 0) for snap in self._latest(but)]

    def supervisor(self, but: Path | None = None) -> dict[str, Any] | None:
        """The supervisor's account, with the draining generations and their open connections."""
        doc = self._read(self.run_dir / self.SUPERVISOR)
        if doc is None:
            return None
        current = doc.get("generation", 0)
        own = self._read(but) if but is not None else None
        old = [s for s in [*self._latest(but), *([own] if own else [])] if s.get("generation", current) < current]
        doc["draining"] = sorted({s["generation"] for s in old})
        doc["draining_connections"] = sum(s.get("http_active_connections", 0) for s in old)
        return doc

    def retire(self, generation: int, index: int) -> None:
        """Worker `index` of `generation` ended: add its last counts to the retired ones (its open
        connections and tunnels are gone) and remove its file. Only the supervisor calls this."""
        path = self.path(generation, index)
        last = self._read(path)
        path.unlink(missing_ok=True)
        if last is None:
            return  # it ended before its first snapshot: nothing counted
        retired = metrics.Stats()
        before = self._read(self.run_dir / self.RETIRED)
        if before:
            retired.add(before)
        retired.add(last)
        retired.http_active_connections = 0
        retired.http_active_tunnels = 0
        tmp = self.run_dir / (self.RETIRED + ".tmp")
        tmp.write_text(json.dumps(retired.snapshot()))
        os.replace(tmp, self.run_dir / self.RETIRED)

    def write_supervisor(self, doc: dict[str, Any]) -> None:
        tmp = self.run_dir / (self.SUPERVISOR + ".tmp")
        tmp.write_text(json.dumps(doc))
        os.replace(tmp, self.run_dir / self.SUPERVISOR)
