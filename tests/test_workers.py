"""The supervisor's view of its workers' counters (edge/workers.py WorkerFiles), without processes."""

from __future__ import annotations

import json

from edge.metrics import Stats
from edge.workers import WorkerFiles


def _write(
    files: WorkerFiles, index: int, requests_2xx: int, connections: int, catalog_version: int = 1, generation: int = 1
) -> None:
    snap = Stats()
    snap.http_requests[2] = requests_2xx
    snap.http_active_connections = connections
    snap.sandbox_requests = {"demo": requests_2xx}
    files.path(generation, index).write_text(
        json.dumps({**snap.snapshot(), "catalog_version": catalog_version, "generation": generation})
    )


def _total(files: WorkerFiles) -> Stats:
    total = Stats()
    for snap in files.snapshots():
        total.add(snap)
    return total


def test_a_dead_workers_counts_are_kept_when_it_is_started_again(tmp_path):
    """40 + 10 requests, worker 0 dies and restarts counting 2: the sum is 52, never 12 (a counter going
    back reads as a reset to Prometheus); the dead worker's open connections are gone from the gauge."""
    files = WorkerFiles(tmp_path)
    _write(files, 0, 40, connections=3)
    _write(files, 1, 10, connections=1)
    assert (_total(files).http_requests[2], _total(files).http_active_connections) == (50, 4)
    files.retire(1, 0)
    assert not files.path(1, 0).exists()
    assert _total(files).http_requests[2] == 50  # before the new worker's first snapshot
    _write(files, 0, 2, connections=1)
    total = _total(files)
    assert (total.http_requests[2], total.sandbox_requests["demo"], total.http_active_connections) == (52, 52, 2)
    files.retire(1, 0)  # and again: retired counts add up
    _write(files, 0, 0, connections=0)
    assert _total(files).http_requests[2] == 52


def test_a_worker_that_died_before_its_first_snapshot_retires_nothing(tmp_path):
    files = WorkerFiles(tmp_path)
    files.retire(1, 3)
    assert _total(files).http_requests == [0] * 6


def test_catalog_versions_are_each_workers_latest(tmp_path):
    """What the admin API waits on: the version each running worker serves."""
    files = WorkerFiles(tmp_path)
    _write(files, 0, 0, 0, catalog_version=7)
    _write(files, 1, 0, 0, catalog_version=5)
    assert sorted(files.catalog_versions()) == [5, 7]


def test_a_reader_counts_itself_live_and_not_from_its_file(tmp_path):
    """Worker 0 serves /metrics: its own counters are live, so its file is left out of the sum."""
    files = WorkerFiles(tmp_path)
    _write(files, 0, 40, connections=3)
    _write(files, 1, 10, connections=1)
    assert [s["http_requests"][2] for s in files.snapshots(but=files.path(1, 0))] == [10]
    assert files.catalog_versions(but=files.path(1, 1)) == [1]


def test_the_supervisor_account_lists_old_generations_still_draining(tmp_path):
    """/v1/status: generation 3 serves; generation 2's two workers still hold 5 connections."""
    files = WorkerFiles(tmp_path)
    files.write_supervisor({"pid": 1, "generation": 3})
    _write(files, 0, 0, connections=2, generation=3)
    _write(files, 0, 0, connections=4, generation=2)
    _write(files, 1, 0, connections=1, generation=2)
    doc = files.supervisor(but=files.path(3, 0))
    assert doc is not None
    assert (doc["draining"], doc["draining_connections"]) == ([2], 5)
    files.retire(2, 0)
    files.retire(2, 1)
    doc = files.supervisor(but=files.path(3, 0))
    assert doc is not None
    assert (doc["draining"], doc["draining_connections"]) == ([], 0)
