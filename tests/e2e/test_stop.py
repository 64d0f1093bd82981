"""Stopping: an edge with nothing in flight stops at once, not after http.shutdown_grace."""

from __future__ import annotations

import signal
import time

import pytest

from tests.proc import EdgeProcess, edge_env


@pytest.mark.parametrize("workers", ["1", "2"])
def test_an_idle_edge_stops_at_once(tmp_path, workers):
    """SIGTERM with no connection open: the process is gone well within the 5 s shutdown grace."""
    proc = EdgeProcess(
        ["serve", "--http", "127.0.0.1:0", "--dns", "127.0.0.1:0", "--workers", workers, "--log-format", "text"],
        edge_env(tmp_path),
        timeout=60,
    )
    t0 = time.monotonic()
    proc.proc.send_signal(signal.SIGTERM)
    proc.proc.wait(timeout=10)
    assert time.monotonic() - t0 < 2.0
    assert proc.proc.returncode == 0


def test_workers_refuse_a_domain_without_a_zone_before_anything_listens(tmp_path):
    """--workers 2 and a public domain with no zone file: a clear error, and no listener announced."""
    import subprocess
    import sys

    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "edge",
            "serve",
            "--workers",
            "2",
            "--domain",
            "nozone.example",
            "--http",
            "127.0.0.1:0",
            "--dns",
            "127.0.0.1:0",
            "--log-format",
            "text",
        ],
        env=edge_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode != 0
    assert "nozone.example" in res.stderr + res.stdout
    assert "listening on" not in res.stdout
