"""The SQLite catalog: records, change counter, snapshots, several connections."""

import trio

from edge.catalog.model import Sandbox
from edge.catalog.sqlite import SqliteStore
from edge.catalog.store import LiveCatalog, open_store, watch


def test_put_get_list_delete_round_trip(tmp_path):
    """A record comes back as stored; delete says whether it existed."""
    store = SqliteStore(tmp_path / "c.db")
    stored = store.put(Sandbox("a1", "127.0.0.2", mask_request_host="localhost:${PORT}"))
    assert store.get("a1") == stored and stored.mask_request_host == "localhost:${PORT}"
    assert [s.id for s in store.list()] == ["a1"]
    assert store.delete("a1") is True and store.delete("a1") is False and store.get("a1") is None


def test_every_change_moves_the_version(tmp_path):
    """Insert, update and delete each bump the version another process reads."""
    writer = SqliteStore(tmp_path / "c.db")
    reader = open_store(f"sqlite:///{tmp_path}/c.db")
    versions = [reader.version()]
    writer.put(Sandbox("a1", "127.0.0.2"))
    versions.append(reader.version())
    writer.put(Sandbox("a1", "127.0.0.3"))
    versions.append(reader.version())
    writer.delete("a1")
    versions.append(reader.version())
    assert versions == sorted(set(versions)) and len(versions) == 4


def test_snapshot_is_consistent_with_its_version(tmp_path):
    """A snapshot holds the rows of exactly the version it reports."""
    store = SqliteStore(tmp_path / "c.db")
    store.put(Sandbox("a1", "127.0.0.2"))
    snap = store.snapshot()
    assert snap.version == store.version() and snap.get("a1").address == "127.0.0.2" and len(snap) == 1


async def test_watch_swaps_the_snapshot_after_a_change(tmp_path, nursery):
    """The watcher picks up a change made through another connection within a poll or two."""
    store = SqliteStore(tmp_path / "c.db")
    live = LiveCatalog()
    await nursery.start(watch, store, live, 0.05)
    assert live.snapshot.get("w1") is None
    SqliteStore(tmp_path / "c.db").put(Sandbox("w1", "127.0.0.2"))
    with trio.fail_after(2):
        while live.snapshot.get("w1") is None:
            await trio.sleep(0.01)
