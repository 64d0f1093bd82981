"""`edge serve`: a supervisor that owns every listening socket and runs generations of workers.

The supervisor binds every listener once (edge/sockets.py; or takes systemd's), starts
`config.workers` worker processes on them (edge/workers.py), and then only watches: it serves no
traffic itself, so nothing it does stalls a request. A generation is one set of workers started
from one config and one program. Deploys start a new generation on the same sockets:

- **reload** (SIGHUP, `edge reload`): the config is read again (and with it the zone files and
  certificates); if it is bad, the reason is logged and reported, and nothing changes. Else a new
  generation starts with it; listeners whose address changed are bound anew (the old ones close
  once no worker holds them).
- **upgrade** (SIGUSR2, `edge upgrade`): the same, but the new workers are the program now on disk,
  and once they serve, the supervisor re-executes itself (same PID, what systemd watches) with its
  state in EDGE_SUPERVISOR and its sockets in EDGE_SOCKETS: the new image adopts the sockets and
  every worker.

Either way the old generation is told to drain (SIGQUIT) only once every new worker has said
"ready": it stops accepting (the shared sockets keep their queues: the new workers take them),
finishes its requests, closes keep-alive connections after their current response, and closes
tunnels and streams at http.drain_timeout. If the new generation fails to start, its workers are
stopped, the failure is logged and reported, and the old one serves on.

The supervisor's account (generation, start times, the last deploy's outcome) is
`supervisor.json` in the run folder, which worker 0's admin API serves in /v1/status; `edge
reload` and `edge upgrade` send the signal and wait for that account to show the outcome.
SIGTERM or SIGINT stop every worker (http.shutdown_grace) and then the supervisor. Under
systemd (Type=notify) it says READY=1, RELOADING=1 and STOPPING=1 on $NOTIFY_SOCKET.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import trio

from edge import accesslog, lifecycle, rlimit, sockets
from edge.config import Config
from edge.errors import EdgeError
from edge.workers import WorkerFiles, WorkerSpec

logger = logging.getLogger("edge.supervisor")

#: Seconds a new generation's workers get to say they are ready.
READY_TIMEOUT = 60.0
#: How often the supervisor looks for workers that ended.
REAP_EVERY = 0.2
#: Every kind of listener is the supervisor's: workers 1..N use the HTTP ones, worker 0 all of them.
KINDS = sockets.KINDS


@dataclass
class Worker:
    pid: int
    generation: int
    index: int
    started: float = field(default_factory=time.monotonic)
    ready: bool = False  # said ready: it may hold connections, so it is drained, never killed
    draining: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"pid": self.pid, "generation": self.generation, "index": self.index, "draining": self.draining}


@dataclass
class Deploy:
    """The outcome of the last reload or upgrade, as /v1/status shows it."""

    kind: str
    ok: bool
    error: str | None
    generation: int
    at: float


class Supervisor:
    """The sockets, the workers of every generation alive, and the deploys (one at a time)."""

    def __init__(self, config: Config, load: Callable[[], Config], argv: Sequence[str]) -> None:
        self.config = config
        self.load = load  # the config read again, as the CLI reads it: for a reload
        self.argv = list(argv)  # `serve ...`: how a worker and a re-executed supervisor are started
        self.sockets = sockets.Listeners()
        self.workers: list[Worker] = []
        self.generation = 0
        self.started = time.time()
        self.generation_started = self.started
        self.last_deploy: Deploy | None = None
        self.run_dir = Path()
        self.files = WorkerFiles(self.run_dir)
        self.to_close: list[tuple[int, socket.socket]] = []  # (last generation using it, socket)
        self.deploy_lock = trio.Lock()
        self.stopping = False

    # --- start, from scratch or after an upgrade's exec ---------------------------------------------

    def bind(self) -> None:
        config = self.config
        lifecycle.check(config)
        given = sockets.activated(config)
        self.sockets, _ = sockets.bind(config, KINDS, workers=config.workers, given=given)
        config.state_dir.mkdir(parents=True, exist_ok=True)
        self.run_dir = Path(tempfile.mkdtemp(prefix="run-", dir=config.state_dir))
        self.files = WorkerFiles(self.run_dir)

    def adopt(self, state: dict[str, Any], described: str) -> list[Worker]:
        """The state an upgrading supervisor handed to this image; returns the workers to drain."""
        self.sockets = sockets.Listeners.adopt(described)
        for sock in self.sockets.all():
            os.set_inheritable(sock.fileno(), False)
        self.generation = state["generation"]
        self.started = state["started"]
        self.generation_started = state["generation_started"]
        self.run_dir = Path(state["run_dir"])
        self.files = WorkerFiles(self.run_dir)
        self.workers = [Worker(w["pid"], w["generation"], w["index"], draining=w["draining"]) for w in state["workers"]]
        drain = [w for w in self.workers if w.generation < self.generation and not w.draining]
        if state.get("last_deploy"):
            self.last_deploy = Deploy(**state["last_deploy"])
        return drain

    # --- the workers --------------------------------------------------------------------------------

    def spawn(self, generation: int, index: int, workers: int) -> tuple[Worker, int]:
        """Start worker `index` of `workers` on its share of the listeners; returns it and the
        descriptor on which it says ready (or why not)."""
        read_fd, write_fd = os.pipe()
        spec = WorkerSpec(generation, index, str(self.run_dir), write_fd)
        mine = self.sockets.for_worker(index, workers)
        env = dict(os.environ, EDGE_WORKER=spec.to_env(), EDGE_SOCKETS=mine.describe())
        env.pop("NOTIFY_SOCKET", None)  # systemd hears from the supervisor only
        try:
            proc = subprocess.Popen(
                [sys.executable, "-m", "edge", *self.argv], env=env, pass_fds=[*mine.fds(), write_fd]
            )
        finally:
            os.close(write_fd)
        worker = Worker(proc.pid, generation, index)
        self.workers.append(worker)
        return worker, read_fd

    async def start_generation(self, config: Config, generation: int) -> list[Worker]:
        """Start `config.workers` workers and wait until each says ready. On a failure, stop the ones
        started (draining those that began serving) and raise EdgeError with the reason."""
        started: list[tuple[Worker, int]] = []
        failures: list[str] = []
        try:
            for index in range(config.workers):
                started.append(self.spawn(generation, index, config.workers))
            with trio.move_on_after(READY_TIMEOUT) as waited:
                async with trio.open_nursery() as nursery:
                    for worker, fd in started:
                        nursery.start_soon(self._await_ready, worker, fd, failures, nursery.cancel_scope)
            if waited.cancelled_caught:
                failures.append(f"the workers were not ready within {READY_TIMEOUT:.0f} s")
            if failures:
                raise EdgeError(failures[0])
        except BaseException:
            for worker, _ in started:
                self._signal(worker, signal.SIGQUIT if worker.ready else signal.SIGKILL)
                worker.draining = True
            raise
        finally:
            for _, fd in started:
                try:
                    os.close(fd)
                except OSError:
                    pass
        return [worker for worker, _ in started]

    async def _await_ready(self, worker: Worker, fd: int, failures: list[str], scope: trio.CancelScope) -> None:
        text = b""
        stream = trio.lowlevel.FdStream(os.dup(fd))
        try:
            while not text.endswith(b"\n"):
                chunk = await stream.receive_some(4096)
                if not chunk:
                    break
                text += chunk
        finally:
            await stream.aclose()
        line = text.decode(errors="replace").strip()
        if line == "ready":
            worker.ready = True
            return
        reason = line[len("error ") :] if line.startswith("error ") else ""
        code = await self._exit_code(worker)
        failures.append(
            reason
            or f"worker {worker.index} of generation {worker.generation} (pid {worker.pid}) ended"
            f"{'' if code is None else f' with status {code}'} before it was ready; its log says why"
        )
        scope.cancel()

    async def _exit_code(self, worker: Worker, wait: float = 1.0) -> int | None:
        """Its exit status, if it ends within `wait` (it is reaped here, then; else by reap())."""
        with trio.move_on_after(wait):
            while True:
                try:
                    pid, status = os.waitpid(worker.pid, os.WNOHANG)
                except ChildProcessError:
                    return None
                if pid:
                    return os.waitstatus_to_exitcode(status)
                await trio.sleep(0.01)
        return None

    def _signal(self, worker: Worker, signum: int) -> None:
        try:
            os.kill(worker.pid, signum)
        except ProcessLookupError:
            pass

    def drain(self, workers: list[Worker]) -> None:
        for worker in workers:
            worker.draining = True
            self._signal(worker, signal.SIGQUIT)

    async def reap(self) -> None:
        """Workers that ended: their counters are kept; one of the serving generation that ended on
        its own is started again (a crash must not shrink the edge for good)."""
        while True:
            await trio.sleep(REAP_EVERY)
            for worker in list(self.workers):
                try:
                    pid, status = os.waitpid(worker.pid, os.WNOHANG)
                except ChildProcessError:
                    pid, status = worker.pid, 0
                if not pid:
                    continue
                self.workers.remove(worker)
                self.files.retire(worker.generation, worker.index)
                # Only a serving generation's worker is started again: a new generation's worker that
                # died before it was ready is the deploy's failure (reported there), not a crash.
                if worker.draining or self.stopping or worker.generation != self.generation:
                    logger.info(
                        "worker %d of generation %d (pid %d) drained", worker.index, worker.generation, worker.pid
                    )
                    self._close_unused()
                    self.write_status()
                    continue
                code = os.waitstatus_to_exitcode(status)
                logger.error("worker %d (pid %d) exited with %s; starting it again", worker.index, worker.pid, code)
                if time.monotonic() - worker.started < 1.0:
                    await trio.sleep(1.0)  # a worker that dies at once: do not spin
                _, fd = self.spawn(worker.generation, worker.index, self.config.workers)
                os.close(fd)

    def _close_unused(self) -> None:
        alive = {w.generation for w in self.workers}
        keep = []
        for last_gen, sock in self.to_close:
            if any(g <= last_gen for g in alive):
                keep.append((last_gen, sock))
            else:
                sock.close()
        self.to_close = keep

    # --- deploys ------------------------------------------------------------------------------------

    async def deploy(self, kind: str) -> None:
        """A reload or an upgrade, one at a time; the outcome is logged and kept for /v1/status."""
        async with self.deploy_lock:
            if self.stopping:
                return
            notify(f"RELOADING=1\nSTATUS={kind} in progress\nMONOTONIC_USEC={time.monotonic_ns() // 1000}")
            error = None
            try:
                await self._deploy(kind)
            except EdgeError as exc:
                error = exc.message
            except OSError as exc:
                error = f"{exc.strerror or exc}"
            if error is not None:
                logger.error("%s %s: %s; generation %d keeps serving", kind, _failed(kind), error, self.generation)
                self.last_deploy = Deploy(kind, False, error, self.generation, time.time())
                self.write_status()
            notify(f"READY=1\nSTATUS=generation {self.generation} serving")

    async def _deploy(self, kind: str) -> None:
        try:
            config = self.load()
            lifecycle.check(config)
        except EdgeError as exc:
            raise EdgeError(f"the config is not valid: {exc.message}") from None
        old_config, old_sockets = self.config, self.sockets
        new_sockets, unused = sockets.bind(config, KINDS, workers=config.workers, keep=(old_config, old_sockets))
        generation = self.generation + 1
        self.sockets = new_sockets
        try:
            new = await self.start_generation(config, generation)
        except BaseException:
            self.sockets = old_sockets
            fresh = {s.fileno() for s in old_sockets.all()}
            for sock in new_sockets.all():
                if sock.fileno() not in fresh:
                    sock.close()
            raise
        old = [w for w in self.workers if w not in new and not w.draining]
        self.to_close += [(self.generation, sock) for sock in unused]
        self.config = config
        self.generation = generation
        self.generation_started = time.time()
        self.last_deploy = Deploy(kind, True, None, generation, time.time())
        if kind == "upgrade":
            self.exec_self(drain=old)  # returns only if the exec failed
            self.last_deploy = Deploy(
                kind,
                True,
                "the workers run the new program; the supervisor could not re-execute",
                generation,
                time.time(),
            )
        self.drain(old)
        self.write_status()
        logger.info(
            "%s: generation %d serving (%d workers); generation %d draining",
            kind,
            generation,
            len(new),
            generation - 1,
        )

    def exec_self(self, drain: list[Worker]) -> None:
        """Become the program on disk, same PID, keeping the sockets and the workers (their pids are
        this process's children either way)."""
        for worker in drain:
            worker.draining = False  # the new image tells them (it is the one that reaps them)
        state = {
            "generation": self.generation,
            "started": self.started,
            "generation_started": self.generation_started,
            "run_dir": str(self.run_dir),
            "workers": [w.to_json() for w in self.workers],
            "last_deploy": asdict(self.last_deploy) if self.last_deploy else None,
        }
        sockets.inheritable(self.sockets)
        for _, sock in self.to_close:
            sock.close()
        self.to_close = []
        env = dict(os.environ, EDGE_SUPERVISOR=json.dumps(state), EDGE_SOCKETS=self.sockets.describe())
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        try:
            os.execve(sys.executable, [sys.executable, "-m", "edge", *self.argv], env)
        except OSError as exc:
            logger.error("upgrade: cannot re-execute %s: %s", sys.executable, exc.strerror)
            for sock in self.sockets.all():
                os.set_inheritable(sock.fileno(), False)

    def write_status(self) -> None:
        self.files.write_supervisor(
            {
                "pid": os.getpid(),
                "started": self.started,
                "generation": self.generation,
                "generation_started": self.generation_started,
                "workers": sum(1 for w in self.workers if w.generation == self.generation),
                "last_deploy": asdict(self.last_deploy) if self.last_deploy else None,
            }
        )

    # --- stop ---------------------------------------------------------------------------------------

    async def stop(self, signals: Any) -> None:
        """Stop every worker (each drains for http.shutdown_grace); a second signal, or the grace
        and a margin passing, kills what is left."""
        self.stopping = True
        notify("STOPPING=1")
        for worker in self.workers:
            self._signal(worker, signal.SIGTERM)
        # A stop is no deploy: no generation follows, so the listeners close as soon as the workers
        # let go of them too, and new connections are refused (not queued and then reset).
        self.sockets.close()
        for _, sock in self.to_close:
            sock.close()
        self.to_close = []
        with trio.move_on_after(self.config.http.shutdown_grace + 5.0):
            async with trio.open_nursery() as nursery:

                async def second_signal() -> None:
                    async for _ in signals:
                        nursery.cancel_scope.cancel()
                        return

                async def all_gone() -> None:
                    while self.workers:
                        await trio.sleep(REAP_EVERY / 2)
                    nursery.cancel_scope.cancel()

                nursery.start_soon(second_signal)
                nursery.start_soon(all_gone)
        for worker in self.workers:
            self._signal(worker, signal.SIGKILL)

    # --- the supervisor's life ----------------------------------------------------------------------

    async def main(self, adopted: list[Worker] | None) -> None:
        watched = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGUSR2, signal.SIGUSR1)
        with trio.open_signal_receiver(*watched) as signals:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self.reap)
                if adopted is None:
                    self.generation = 1
                    await self.start_generation(self.config, 1)
                    self.write_status()
                    lifecycle.say_up(self.config, self.sockets.listening())
                    logger.info(
                        "generation 1 serving: %d workers (supervisor pid %d)", self.config.workers, os.getpid()
                    )
                else:
                    self.drain(adopted)
                    self.write_status()
                    logger.info(
                        "upgrade: generation %d serving, program %s (supervisor pid %d)",
                        self.generation,
                        sys.executable,
                        os.getpid(),
                    )
                notify(f"READY=1\nMAINPID={os.getpid()}\nSTATUS=generation {self.generation} serving")
                async for signum in signals:
                    if signum == signal.SIGHUP:
                        nursery.start_soon(self.deploy, "reload")
                    elif signum == signal.SIGUSR2:
                        nursery.start_soon(self.deploy, "upgrade")
                    elif signum == signal.SIGUSR1:  # reopen the access log: each worker writes its own
                        for worker in self.workers:
                            self._signal(worker, signal.SIGUSR1)
                    else:
                        logger.info("stopping on %s", signal.Signals(signum).name)
                        await self.stop(signals)
                        nursery.cancel_scope.cancel()
                        return


def _failed(kind: str) -> str:
    return "refused" if kind == "reload" else "failed"


def notify(message: str) -> None:
    """sd_notify(3): a datagram to $NOTIFY_SOCKET when systemd runs us as Type=notify; else nothing."""
    path = os.environ.get("NOTIFY_SOCKET")
    if not path:
        return
    address = "\0" + path[1:] if path.startswith("@") else path
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.sendto(message.encode(), address)
    except OSError as exc:
        logger.warning("cannot notify systemd on %s: %s", path, exc.strerror)


def supervise(config: Config, load: Callable[[], Config], argv: Sequence[str]) -> int:
    """Run `edge serve` until stopped: from scratch, or, after an upgrade's exec, from the state the
    previous image left in EDGE_SUPERVISOR."""
    accesslog.setup(config)
    rlimit.raise_nofile()
    sup = Supervisor(config, load, argv)
    state = os.environ.pop("EDGE_SUPERVISOR", None)
    described = os.environ.pop("EDGE_SOCKETS", "")
    adopted = None
    if state is None:
        sup.bind()
    else:
        adopted = sup.adopt(json.loads(state), described)
    try:
        lifecycle.run(lambda: sup.main(adopted))
    finally:
        sup.sockets.close()
        for _, sock in sup.to_close:
            sock.close()
        if sup.run_dir != Path():
            shutil.rmtree(sup.run_dir, ignore_errors=True)
    return 0
