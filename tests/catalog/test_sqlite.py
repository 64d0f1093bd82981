"""The SQLite catalog: records, change counter, snapshots, several connections, file modes."""

import dataclasses
import logging
import os
import sqlite3
import stat
import threading

import pytest
import trio

from edge.catalog import ops
from edge.catalog.model import Sandbox
from edge.catalog.sqlite import SqliteStore
from edge.catalog.store import LiveCatalog, open_store, watch
from edge.errors import ValidationError


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


# --- file modes: the catalog holds token hashes --------------------------------------------------------


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture
def umask_022():
    old = os.umask(0o022)  # the usual umask, under which files are created 0644
    yield
    os.umask(old)


def test_a_new_catalog_and_its_wal_files_are_0600(tmp_path, umask_022):
    """A catalog created by the store is 0600, and so are the -wal and -shm files SQLite makes."""
    store = SqliteStore(tmp_path / "state" / "c.db")
    store.put(Sandbox("a1", "127.0.0.2", public=False, token_hash="0" * 64))
    try:
        files = [tmp_path / "state" / name for name in ("c.db", "c.db-wal", "c.db-shm")]
        assert {f.name: _mode(f) for f in files} == {f.name: 0o600 for f in files}
        assert _mode(tmp_path / "state") == 0o700
    finally:
        store.close()


def test_a_wider_existing_catalog_is_narrowed_with_a_warning(tmp_path, umask_022, caplog):
    """A 0644 catalog (and its -wal and -shm) from before is made 0600 on open, saying so once per file."""
    path = tmp_path / "c.db"
    old = sqlite3.connect(path)  # an older edge's catalog, with its WAL files still there
    old.execute("PRAGMA journal_mode=WAL")
    old.execute("CREATE TABLE t (x)")
    old.execute("INSERT INTO t VALUES (1)")
    old.commit()
    files = [path, tmp_path / "c.db-wal", tmp_path / "c.db-shm"]
    try:
        assert [_mode(f) for f in files] == [0o644] * 3
        with caplog.at_level(logging.WARNING, logger="edge.catalog"):
            SqliteStore(path).close()
        assert [_mode(f) for f in files] == [0o600] * 3
        warned = [r.getMessage() for r in caplog.records if r.name == "edge.catalog"]
        assert len(warned) == 3 and all("was mode 0644, readable by others; now 0600" in w for w in warned)
    finally:
        old.close()


# --- reading is lenient, writing is not ----------------------------------------------------------------


async def test_records_with_addresses_refused_today_still_load(tmp_path, nursery):
    """A catalog holding 0.0.0.0 or 169.254.169.254 (written before the rule) loads; the watcher serves it."""
    store = SqliteStore(tmp_path / "c.db")
    for sid, address in (("old1", "0.0.0.0"), ("old2", "169.254.169.254"), ("old3", "fe80::1%eth0")):
        store.put(Sandbox(sid, address))
    assert sorted(store.snapshot().by_id) == ["old1", "old2", "old3"]
    live = LiveCatalog()
    await nursery.start(watch, store, live, 0.05)
    assert live.snapshot.get("old2").address == "169.254.169.254"


def test_an_update_must_replace_a_refused_stored_address(tmp_path):
    """Updating another field of such a record is refused; updating its address too is accepted."""
    store = SqliteStore(tmp_path / "c.db")
    store.put(Sandbox("old1", "0.0.0.0"))
    with pytest.raises(ValidationError) as info:
        ops.update_sandbox(store, "old1", {"max_connections": 4})
    assert info.value.field == "address" and store.get("old1").max_connections is None
    record, _ = ops.update_sandbox(store, "old1", {"max_connections": 4, "address": "127.0.0.2"})
    assert (record.address, record.max_connections) == ("127.0.0.2", 4)


# --- read-modify-write is one transaction ---------------------------------------------------------------


def test_two_concurrent_modifies_never_lose_a_field(tmp_path):
    """While one writer is between its read and its write, another waits, then builds on its result."""
    first = SqliteStore(tmp_path / "c.db")
    second = SqliteStore(tmp_path / "c.db")  # another connection, as another process has
    first.put(Sandbox("x1", "127.0.0.2"))
    other = threading.Thread(target=ops.update_sandbox, args=(second, "x1", {"max_connections": 7}), daemon=True)

    def slow_change(old: Sandbox | None) -> Sandbox:
        other.start()
        other.join(0.3)  # with the write lock held, the other update cannot finish meanwhile
        return dataclasses.replace(old, address="127.0.0.3")

    first.modify("x1", slow_change)
    other.join(10)
    assert not other.is_alive()
    stored = first.get("x1")
    assert (stored.address, stored.max_connections) == ("127.0.0.3", 7)
    first.close()
    second.close()


def test_a_catalog_from_before_the_outbound_policy_gets_its_columns_allowing_everything(tmp_path):
    """A file made before internet_access, allow_out and deny_out existed: its rows read as allowing
    everything, and a policy written now is stored and read back."""
    path = tmp_path / "old.db"
    db = sqlite3.connect(path)
    db.execute(
        "CREATE TABLE sandboxes (id TEXT PRIMARY KEY, address TEXT NOT NULL, public INTEGER NOT NULL DEFAULT 1,"
        " mask_request_host TEXT, created_at REAL NOT NULL, updated_at REAL NOT NULL)"
    )
    db.execute("INSERT INTO sandboxes VALUES ('old', '10.1.0.2', 1, NULL, 1.0, 1.0)")
    db.commit()
    db.close()
    store = SqliteStore(path)
    try:
        old = store.get("old")
        assert old is not None and (old.internet_access, old.allow_out, old.deny_out) == (True, (), ())
        ops.update_sandbox(store, "old", {"internet_access": False, "allow_out": ["*.Example.com"]})
        new = store.get("old")
        assert new is not None and (new.internet_access, new.allow_out, new.deny_out) == (False, ("*.example.com",), ())
    finally:
        store.close()
