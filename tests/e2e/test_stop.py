"""Stopping: an edge with nothing in flight stops at once, not after http.shutdown_grace."""

from __future__ import annotations

import signal
import time

import pytest

from tests.proc import EdgeProcess, edge_env


@pytest.mark.parametrize("workers", ["1", "2"])
def test_an_idle_edge_stops_at_once(tmp_path, workers):
    """SIGTERM with no connection open: the process is gone well within the 5 s shutdown grace."""
    proc = EdgeProcess(["serve", "--http", "127.0.0.1:0", "--dns", "127.0.0.1:0", "--workers", workers,
                        "--log-format", "text"], edge_env(tmp_path), timeout=60)
    t0 = time.monotonic()
    proc.proc.send_signal(signal.SIGTERM)
    proc.proc.wait(timeout=10)
    assert time.monotonic() - t0 < 2.0
    assert proc.proc.returncode == 0
