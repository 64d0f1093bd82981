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


async def test_what_the_servers_load_as_they_start_is_frozen_too(tmp_path, restore_gc, nursery):
    """The admin API's imports come after run() froze the rest: serve() freezes again once every
    server is up, so a full collection never scans them (one took 229 ms with 1,000 connections)."""
    from dataclasses import replace

    from edge import sockets
    from edge.config import Config, Listen

    config = Config(state_dir=tmp_path)
    config = replace(config, dns=replace(config.dns, listen=Listen("127.0.0.1", 0)))
    listeners, _ = sockets.bind(config, ("dns",))
    try:
        gc.freeze()
        before = gc.get_freeze_count()
        loaded = [[i] for i in range(50_000)]  # what starting loads
        await nursery.start(
            lambda task_status: lifecycle.serve(config, listeners.for_worker(0, 1), task_status=task_status)
        )
        assert gc.get_freeze_count() >= before + 50_000
        del loaded
    finally:
        nursery.cancel_scope.cancel()
