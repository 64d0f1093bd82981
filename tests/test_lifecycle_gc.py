"""lifecycle.run keeps Python's full garbage collections out of the way of the connections."""

from __future__ import annotations

import gc

import pytest

from edge import lifecycle


@pytest.fixture
def restore_gc():
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)


def test_served_process_has_its_imports_frozen_and_rarer_full_collections(restore_gc):
    """Inside run(): what was loaded before is out of the collector's scans (frozen), and a full
    collection waits for GC_FULL_EVERY generation-1 ones; the young generations keep CPython's."""
    young, middle, _ = gc.get_threshold()
    seen: dict = {}

    async def serve() -> None:
        seen["threshold"] = gc.get_threshold()
        seen["frozen"] = gc.get_freeze_count()

    lifecycle.run(serve)
    assert seen["threshold"] == (young, middle, lifecycle.GC_FULL_EVERY)
    assert seen["frozen"] > 10_000  # the modules, classes and functions imported so far
