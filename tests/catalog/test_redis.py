"""The Redis catalog on a real redis-server: records, versions, the change stream, the follower,
Redis going away and coming back, and the snapshot on disk."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import stat
import threading
import time

import pytest
import trio

from edge.catalog import follow as follow_mod
from edge.catalog import ops
from edge.catalog.model import Challenge, Sandbox
from edge.catalog.redis import STREAM, RedisStore, redis_location
from edge.catalog.store import LiveCatalog, catalog_location, open_store, reload, watch
from edge.errors import CatalogError, ConfigError, SandboxExists
from tests.redis_server import RedisServer, redis_server  # noqa: F401 (a fixture)


@pytest.fixture
def store(redis_server):  # noqa: F811
    s = RedisStore(redis_server.url)
    yield s
    s.close()


async def _until(predicate, timeout: float = 3.0) -> None:
    with trio.fail_after(timeout):
        while not predicate():
            await trio.sleep(0.005)


# --- URLs --------------------------------------------------------------------------------------------

LOCATIONS = [
    ("plain", "redis://127.0.0.1:6390/2", "redis://127.0.0.1:6390/2"),
    ("password left out", "redis://:s3cret@127.0.0.1:6390/0", "redis://127.0.0.1:6390/0"),
    ("default port and db", "redis://127.0.0.1", "redis://127.0.0.1:6379/0"),
    ("tls", "rediss://cache.example:6380/1", "rediss://cache.example:6380/1"),
]


@pytest.mark.parametrize("label, url, want", LOCATIONS, ids=[x[0] for x in LOCATIONS])
def test_catalog_location_names_server_and_database_never_the_password(label, url, want):
    """Two processes compare locations: the same server and database, whatever the password."""
    assert catalog_location(url) == want, label


def test_a_bad_redis_url_is_a_config_error_without_the_password():
    """A database that is not a number is refused, and the message masks the password."""
    with pytest.raises(ConfigError) as err:
        redis_location("redis://:hunter2@127.0.0.1:6379/x")
    assert "hunter2" not in err.value.message and "***" in err.value.message


def test_open_store_gives_a_redis_store_for_redis_urls(redis_server):  # noqa: F811
    """`--catalog redis://...` opens the Redis store; its snapshot file lives in the state folder."""
    s = open_store(redis_server.url, state_dir=redis_server.folder)
    assert isinstance(s, RedisStore) and s.snapshot_file == redis_server.folder / "catalog-snapshot.json"
    s.close()


# --- records and versions ----------------------------------------------------------------------------


def test_put_get_list_delete_round_trip(store):
    """A record comes back as stored; delete says whether it existed."""
    stored = store.put(Sandbox("a1", "127.0.0.2", mask_request_host="localhost:${PORT}", allow_out=("1.2.3.4",)))
    assert store.get("a1") == stored and stored.allow_out == ("1.2.3.4",)
    assert [s.id for s in store.list()] == ["a1"]
    assert store.delete("a1") is True and store.delete("a1") is False and store.get("a1") is None


def test_every_write_moves_the_version_by_one_and_appends_one_change(store):
    """put, delete and challenges each add one stream entry carrying the next version."""
    store.put(Sandbox("a1", "127.0.0.2"))
    first = store.version()
    store.put(Sandbox("a1", "127.0.0.3"))
    store.delete("a1")
    store.add_challenge(Challenge("_acme-challenge.sandbox.localhost", "v1", 4e9))
    assert store.version() == first + 3
    entries = store.client.xrange(STREAM)
    assert [(int(f["v"]), f["op"]) for _, f in entries] == [
        (first, "put"),
        (first + 1, "put"),
        (first + 2, "del"),
        (first + 3, "chal"),
    ]


def test_a_new_catalog_starts_its_version_at_the_clock_so_a_restart_never_goes_back(store):
    """The first version is the server's time in microseconds: above any count of writes before a
    restart that lost the data."""
    store.put(Sandbox("a1", "127.0.0.2"))
    assert store.version() > 1_600_000_000 * 1_000_000


def test_two_concurrent_modifies_never_lose_a_field(store, redis_server):  # noqa: F811
    """A writer whose record changed between its read and its write reads again and builds on the other's."""
    second = RedisStore(redis_server.url)
    store.put(Sandbox("x1", "127.0.0.2"))
    calls = []

    def slow_change(old: Sandbox | None) -> Sandbox:
        calls.append(old)
        if len(calls) == 1:  # the other writer lands between this read and this write
            other = threading.Thread(target=ops.update_sandbox, args=(second, "x1", {"max_connections": 7}))
            other.start()
            other.join(5)
        assert old is not None
        return dataclasses.replace(old, address="127.0.0.3")

    store.modify("x1", slow_change)
    stored = store.get("x1")
    assert (stored.address, stored.max_connections) == ("127.0.0.3", 7)
    assert len(calls) == 2  # the compare-and-set refused the first attempt
    second.close()


def test_a_write_retried_after_its_answer_was_lost_is_not_done_twice(store):
    """The same nonce twice: the second run returns the first one's version and changes nothing."""
    keys = ["edge:catalog:sandboxes", "edge:catalog:version", STREAM, "edge:catalog:done:fixed"]
    args = [100, "d1", "", json.dumps({"id": "d1", "address": "127.0.0.2"})]
    first = store._cas(keys=keys, args=args)
    again = store._cas(keys=keys, args=args)  # the record is not "" any more: without the nonce, a conflict
    assert first == again and store.client.xlen(STREAM) == 1


def test_add_refuses_an_existing_id(store):
    """The same rules as SQLite: ops.add_sandbox on an existing ID is SandboxExists."""
    ops.add_sandbox(store, "s1", address="127.0.0.2")
    with pytest.raises(SandboxExists):
        ops.add_sandbox(store, "s1", address="127.0.0.3")
    assert store.get("s1").address == "127.0.0.2"


def test_challenges_expire_and_are_removed(store):
    """Challenge values: served until removed or expired; an add drops the expired ones."""
    store.add_challenge(Challenge("_acme-challenge.a.sandbox.localhost", "old", 1.0))  # expired
    store.add_challenge(Challenge("_acme-challenge.a.sandbox.localhost", "new", 4e9))
    assert [c.value for c in store.challenges()] == ["new"]
    assert store.client.hlen("edge:catalog:challenges") == 1
    assert store.remove_challenge("_acme-challenge.a.sandbox.localhost", "new") is True
    assert store.remove_challenge("_acme-challenge.a.sandbox.localhost", "new") is False


def test_writes_to_an_unreachable_redis_fail_fast_and_clearly(redis_server):  # noqa: F811
    """Redis down: a write is a CatalogError naming the server within about a second (bounded retries)."""
    s = RedisStore(redis_server.url)
    redis_server.kill()
    with _Timer() as t:
        with pytest.raises(CatalogError) as err:
            ops.add_sandbox(s, "s1", address="127.0.0.2")
    assert "unreachable" in err.value.message and redis_location(redis_server.url) in err.value.message
    assert t.seconds < 2.0
    s.close()


class _Timer:
    def __enter__(self):
        self._start = time.monotonic()
        return self

    def __exit__(self, *exc):
        self.seconds = time.monotonic() - self._start


# --- the follower ------------------------------------------------------------------------------------


async def test_watch_follows_the_stream_within_milliseconds(store, redis_server, nursery):  # noqa: F811
    """A write by another client reaches the watcher's snapshot without polling: well under 100 ms."""
    live = LiveCatalog()
    await nursery.start(watch, store, live, 10.0)  # a poll of 10 s: only the stream can be this fast
    writer = RedisStore(redis_server.url)
    for i in range(5):
        start = trio.current_time()
        name = f"f{i}"
        await trio.to_thread.run_sync(lambda: ops.add_sandbox(writer, name, address="127.0.0.2"))  # noqa: B023
        await _until(lambda: live.snapshot.get(name) is not None, 1.0)  # noqa: B023
        assert trio.current_time() - start < 0.1
    await trio.to_thread.run_sync(writer.delete, "f0")
    await _until(lambda: live.snapshot.get("f0") is None)
    assert live.snapshot.version == writer.version()
    writer.close()


async def test_a_rotated_token_reaches_the_snapshot(store, nursery):
    """Token rotations travel the stream like any write: the new hash replaces the old."""
    live = LiveCatalog()
    await nursery.start(watch, store, live, 10.0)
    record, _ = await trio.to_thread.run_sync(lambda: ops.add_sandbox(store, "p1", address="127.0.0.2", public=False))
    rotated, _ = await trio.to_thread.run_sync(ops.rotate_token, store, "p1")
    await _until(
        lambda: live.snapshot.get("p1") is not None and live.snapshot.get("p1").token_hash == rotated.token_hash
    )
    assert rotated.token_hash != record.token_hash


async def test_challenges_reach_the_snapshot(store, nursery):
    """An ACME value presented through the store is in every follower's snapshot."""
    live = LiveCatalog()
    await nursery.start(watch, store, live, 10.0)
    await trio.to_thread.run_sync(
        lambda: ops.present_challenge(store, ["sandbox.localhost"], "_acme-challenge.sandbox.localhost", "abc")
    )
    await _until(lambda: [c.value for c in live.snapshot.challenges] == ["abc"])


async def test_reload_waits_for_the_follower_instead_of_reading_everything(store, nursery, monkeypatch):
    """The admin API's reload() on a Redis catalog is served by the follower: no full read."""
    live = LiveCatalog()
    await nursery.start(watch, store, live, 10.0)
    full_reads = []
    monkeypatch.setattr(store, "snapshot", lambda: full_reads.append(1))
    await trio.to_thread.run_sync(lambda: ops.add_sandbox(store, "r1", address="127.0.0.2"))
    assert await reload(store, live) is True
    assert live.snapshot.get("r1") is not None and full_reads == []


async def test_a_trimmed_stream_makes_the_follower_read_everything(store, redis_server, nursery):  # noqa: F811
    """Entries lost before the follower read them (a gap in the versions): it reads the whole catalog."""
    live = LiveCatalog()
    await nursery.start(watch, store, live, 10.0)
    writer = RedisStore(redis_server.url)
    await trio.to_thread.run_sync(writer.put, Sandbox("t1", "127.0.0.2"))
    await _until(lambda: live.snapshot.get("t1") is not None)
    pipe = writer.client.pipeline(transaction=True)
    # Two writes whose entries vanish, as if trimmed while this follower was away.
    pipe.hset("edge:catalog:sandboxes", "t2", json.dumps(dataclasses.asdict(Sandbox("t2", "127.0.0.3"))))
    pipe.incrby("edge:catalog:version", 2)
    pipe.execute()
    await trio.to_thread.run_sync(writer.put, Sandbox("t3", "127.0.0.4"))
    await _until(lambda: live.snapshot.get("t2") is not None and live.snapshot.get("t3") is not None)
    assert live.snapshot.version == writer.version()
    writer.close()


async def test_redis_away_keeps_the_snapshot_and_reports_stale(redis_server, tmp_path, nursery):  # noqa: F811
    """Redis killed: the snapshot keeps serving, the catalog says why and for how long; back: healthy."""
    store = RedisStore(redis_server.url, snapshot_file=tmp_path / "snap.json")
    live = LiveCatalog()
    await nursery.start(watch, store, live, 10.0)
    await trio.to_thread.run_sync(store.put, Sandbox("k1", "127.0.0.2"))
    await _until(lambda: live.snapshot.get("k1") is not None)
    redis_server.kill()
    await _until(lambda: live.problem is not None, 5.0)
    await trio.sleep(0.3)
    assert live.snapshot.get("k1") is not None and live.stale_seconds() > 0.2
    assert "unreachable" in live.problem
    redis_server.start()  # empty: restarted without persistence
    await _until(lambda: live.problem is None, 5.0)
    await _until(lambda: live.snapshot.get("k1") is None, 5.0)  # converged on what Redis holds now
    await trio.to_thread.run_sync(store.put, Sandbox("k2", "127.0.0.2"))
    await _until(lambda: live.snapshot.get("k2") is not None)
    assert live.stale_seconds() == 0


async def test_a_restart_with_its_data_converges_too(tmp_path, nursery):
    """Redis restarted with its append-only file: the follower reads it again (new run_id) and serves it."""
    server = RedisServer(tmp_path / "redis", persist=True).start()
    try:
        store = RedisStore(server.url)
        live = LiveCatalog()
        await nursery.start(watch, store, live, 10.0)
        await trio.to_thread.run_sync(store.put, Sandbox("d1", "127.0.0.2"))
        await _until(lambda: live.snapshot.get("d1") is not None)
        server.kill()
        await _until(lambda: live.problem is not None, 5.0)
        server.start()
        await trio.to_thread.run_sync(store.put, Sandbox("d2", "127.0.0.2"))
        await _until(lambda: live.snapshot.get("d2") is not None and live.problem is None, 5.0)
        assert live.snapshot.get("d1") is not None and live.snapshot.version == store.version()
    finally:
        server.kill()


async def test_an_edge_starting_while_redis_is_down_serves_the_snapshot_saved_on_disk(
    redis_server,  # noqa: F811
    tmp_path,
    caplog,
):
    """The follower saves its snapshot (0600); a new one that cannot reach Redis serves that file, and says so."""
    snap = tmp_path / "state" / "catalog-snapshot.json"
    first = RedisStore(redis_server.url, snapshot_file=snap)
    await trio.to_thread.run_sync(lambda: ops.add_sandbox(first, "s1", address="127.0.0.2", public=False))
    async with trio.open_nursery() as nursery:
        live = LiveCatalog()
        await nursery.start(watch, first, live, 10.0)
        await _until(lambda: snap.exists(), 3.0)
        nursery.cancel_scope.cancel()
    assert stat.S_IMODE(os.stat(snap).st_mode) == 0o600
    redis_server.kill()
    caplog.set_level(logging.WARNING, "edge.catalog")
    second = RedisStore(redis_server.url, snapshot_file=snap)
    async with trio.open_nursery() as nursery:
        live = LiveCatalog()
        with trio.fail_after(5):
            await nursery.start(watch, second, live, 10.0)
        assert live.snapshot.get("s1") is not None and live.snapshot.get("s1").token_hash
        assert live.problem is not None
        nursery.cancel_scope.cancel()
    assert any("serving the last snapshot saved on disk" in r.getMessage() for r in caplog.records)


def test_a_snapshot_of_another_catalog_is_not_served(redis_server, tmp_path):  # noqa: F811
    """A snapshot file written for another Redis is ignored, not served."""
    snap = tmp_path / "snap.json"
    s = RedisStore(redis_server.url, snapshot_file=snap)
    s.put(Sandbox("s1", "127.0.0.2"))
    follow_mod.save(s, s.snapshot())
    other = RedisStore("redis://127.0.0.1:1/0", snapshot_file=snap)
    assert follow_mod.load_saved(other) is None and follow_mod.load_saved(s) is not None
