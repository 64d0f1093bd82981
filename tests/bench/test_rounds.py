"""bench/rounds.py: edge's long scheduler rounds and garbage collections, logged and summed."""

from __future__ import annotations

import gc
import time

import trio

from bench import rounds


def test_long_rounds_counts_the_window_and_keeps_collections_apart(tmp_path):
    """Only lines inside [t0, t1) count; a `gc<n>` line is a collection, not a round."""
    log = tmp_path / "rounds.log"
    log.write_text("9.0 50.0\n10.0 1.5\n10.5 3.0 gc2\n11.0 12.0\n12.0 6.0\n20.0 99.0\n")
    got = rounds.long_rounds(str(log), 10.0, 20.0)
    assert got == {
        "rounds_over_1ms": 3,
        "rounds_over_2ms": 2,
        "rounds_over_5ms": 2,
        "rounds_over_10ms": 1,
        "longest_round_ms": 12.0,
        "long_rounds_cpu_ms": 19.5,
        "gc_over_1ms": 1,
        "longest_gc_ms": 3.0,
    }
    assert rounds.long_rounds(str(tmp_path / "none.log"), 0, 1)["longest_round_ms"] == 0.0


def test_a_round_that_burns_cpu_is_logged(tmp_path, monkeypatch):
    """With install(), a task that spins 5 ms of CPU between two checkpoints shows as one long round."""
    log = tmp_path / "rounds.log"
    monkeypatch.setattr(trio, "run", trio.run)  # install() replaces it: undone after the test
    callbacks = list(gc.callbacks)
    try:
        rounds.install(str(log))

        async def spin() -> None:
            await trio.sleep(0)
            until = time.thread_time() + 0.005
            while time.thread_time() < until:
                pass
            await trio.sleep(0)

        trio.run(spin)
    finally:
        gc.callbacks[:] = callbacks
    took = [float(line.split()[1]) for line in log.read_text().splitlines() if len(line.split()) == 2]
    assert any(t >= 5.0 for t in took)
