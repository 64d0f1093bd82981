"""A trio instrument that logs a process's long scheduler rounds (bench only).

bench/adversarial.py starts edge with bench/roundhook on PYTHONPATH and BENCH_ROUNDS_LOG set: its
sitecustomize calls `install`, in the supervisor and in each worker it starts.

trio runs every task ready in a round before it looks at the sockets again, so a request that arrives
during a long round waits for all of it: the length of the longest rounds is what a normal client's
tail latency is made of. Each round that took more than `LONG_MS` of this thread's CPU time is
written to LOGFILE as `<time.monotonic()> <cpu ms>`; CPU time, not wall time, so that another process
on the same core (this machine is shared) does not make edge's rounds look long. The probe's
latencies say what a client saw; these say what edge did.
"""

from __future__ import annotations

import gc
import time

import trio

LONG_MS = 1.0


class RoundLog(trio.abc.Instrument):
    def __init__(self, path: str) -> None:
        self.out = open(path, "a", buffering=1)  # noqa: SIM115 - open for the process's life
        self.started = time.thread_time()

    def after_io_wait(self, timeout: float) -> None:
        self.started = time.thread_time()

    def before_io_wait(self, timeout: float) -> None:
        took = (time.thread_time() - self.started) * 1000
        if took > LONG_MS:
            self.out.write(f"{time.monotonic():.4f} {took:.3f}\n")


def install(path: str) -> None:
    """Make every trio.run of this process log its rounds longer than LONG_MS of CPU to `path`, and
    every cyclic garbage collection longer than LONG_MS (`<time> <cpu ms> gc<generation>`)."""
    run = trio.run
    out = open(path, "a", buffering=1)  # noqa: SIM115 - open for the process's life
    began = [0.0]

    def collected(phase: str, info: dict) -> None:
        if phase == "start":
            began[0] = time.thread_time()
            return
        took = (time.thread_time() - began[0]) * 1000
        if took > LONG_MS:
            out.write(f"{time.monotonic():.4f} {took:.3f} gc{info['generation']}\n")

    gc.callbacks.append(collected)

    def instrumented(*args, **kwargs):
        kwargs["instruments"] = [*kwargs.get("instruments", ()), RoundLog(path)]
        return run(*args, **kwargs)

    trio.run = instrumented  # type: ignore[assignment]


def long_rounds(path: str, t0: float, t1: float) -> dict:
    """The rounds logged in [t0, t1): how many took more than 1, 2, 5 and 10 ms of CPU, and the longest;
    the collections longer than 1 ms, and the longest (a collection runs inside a round)."""
    took: list[float] = []
    collections: list[float] = []
    try:
        with open(path) as f:
            for line in f:
                when, ms, *what = line.split()
                if t0 <= float(when) < t1:
                    (collections if what else took).append(float(ms))
    except FileNotFoundError:
        pass
    return {
        **{f"rounds_over_{n}ms": sum(1 for t in took if t > n) for n in (1, 2, 5, 10)},
        "longest_round_ms": round(max(took, default=0.0), 2),
        "long_rounds_cpu_ms": round(sum(took), 1),
        "gc_over_1ms": len(collections),
        "longest_gc_ms": round(max(collections, default=0.0), 2),
    }
