"""store.py: which catalog a URL opens (and which folders it may create), and the one rule for readers
that finish out of order (`reload`)."""

from __future__ import annotations

import threading

import pytest
import trio

from edge import config as config_mod
from edge.catalog.model import Sandbox, Snapshot
from edge.catalog.store import LiveCatalog, catalog_location, open_catalog, open_store, reload
from edge.errors import ConfigError


def test_a_named_catalog_in_a_missing_folder_is_an_error_naming_the_folder(tmp_path):
    """sqlite:///<missing>/dir/c.db: a ConfigError naming the folder, and no folder made (a typo is no new catalog)."""
    folder = tmp_path / "nonexistent" / "dir"
    with pytest.raises(ConfigError) as err:
        open_store(f"sqlite://{folder}/c.db")
    assert f"folder {folder} does not exist" in err.value.message
    assert not (tmp_path / "nonexistent").exists()


def test_only_the_default_catalog_gets_its_folder_created(tmp_path):
    """The default catalog lives in the state folder, made on first use; a catalog named in config is not."""
    state = tmp_path / "state" / "edge"
    default = config_mod.load(env={}, overrides={"state_dir": str(state)})
    open_catalog(default).close()
    assert (state / "catalog.db").exists()
    named = config_mod.load(env={}, overrides={"state_dir": str(state), "catalog": f"sqlite:///{tmp_path}/x/c.db"})
    with pytest.raises(ConfigError, match="does not exist"):
        open_catalog(named)
    assert not (tmp_path / "x").exists()


def test_catalog_location_resolves_symlinks_and_relative_paths(tmp_path, monkeypatch):
    """Two spellings of one file (a symlinked folder, a relative URL) give one location to compare."""
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    monkeypatch.chdir(tmp_path)
    want = str((tmp_path / "real" / "c.db").resolve())
    assert catalog_location(f"sqlite:///{tmp_path}/link/c.db") == want
    assert catalog_location("sqlite://real/c.db") == want


class _SlowStore:
    """A store whose snapshot() returns `snap` once `release` is set: a read still running in its thread."""

    def __init__(self, snap: Snapshot) -> None:
        self.snap = snap
        self.release = threading.Event()

    def snapshot(self) -> Snapshot:
        self.release.wait(10)
        return self.snap


class _Store:
    def __init__(self, snap: Snapshot) -> None:
        self.snap = snap

    def snapshot(self) -> Snapshot:
        return self.snap


async def test_a_read_that_finishes_after_a_newer_swap_is_dropped(nursery):
    """The watcher's read began before the admin API's write; it ends after the API served the write: it
    must not bring the old catalog back (the sandbox the API answered for would 502 until the next poll)."""
    live = LiveCatalog(Snapshot((), 1))
    stale = _SlowStore(Snapshot((), 1))
    results = []

    async def watcher_read():
        results.append(await reload(stale, live))  # type: ignore[arg-type]

    nursery.start_soon(watcher_read)
    await trio.sleep(0.05)  # the watcher's read is in its thread
    fresh = Snapshot([Sandbox("new", "127.0.0.2")], 2)
    assert await reload(_Store(fresh), live) is True  # type: ignore[arg-type]  # the API, after its commit
    stale.release.set()
    with trio.fail_after(5):
        while not results:
            await trio.sleep(0.01)
    assert results == [False]
    assert live.snapshot is fresh and live.snapshot.get("new") is not None


async def test_a_lower_version_read_alone_is_taken(nursery):
    """A catalog restored from a backup has a lower version: with no other swap meanwhile, it is served."""
    live = LiveCatalog(Snapshot([Sandbox("gone", "127.0.0.2")], 9))
    restored = Snapshot([Sandbox("back", "127.0.0.3")], 4)
    assert await reload(_Store(restored), live) is True  # type: ignore[arg-type]
    assert live.snapshot is restored
