"""Stores, and the live snapshot the servers read.

A store (SQLite here; the interface is small so Redis can follow) is written by the CLI and the admin
API. `LiveCatalog` holds the current `Snapshot`; `watch()` polls the store's cheap change counter
every `poll` seconds (in a worker thread, so a slow disk never stalls the event loop) and, when it
moved, loads the whole catalog and swaps the snapshot in one assignment. A request takes
`live.snapshot` once and uses that: no lock, no query on the hot path, and a change made by any
process is seen within one poll interval.

The admin API does not wait for the poll: after its write commits it calls `reload()` itself, so the
next request to the same edge sees the change. Two readers of one store may then finish out of
order (the watcher's read began before the write, the API's after it); `reload()` is the one place
that settles it: a snapshot read while another swap happened, and not newer than what that swap
put in, is dropped. A catalog restored from a backup (its version went down) is still taken: nothing else
was swapped while it was read.

A Redis catalog (`redis://`, edge/catalog/redis.py) is not polled: `watch()` hands it to
edge/catalog/follow.py, which reads its change stream as it is written. `reload()` on it waits for
that follower to serve the version just written (a round trip) instead of reading the whole catalog.

`LiveCatalog` also says whether its snapshot is current: `unhealthy(reason)` when the store could not
be read (the snapshot keeps serving), `healthy()` when it could; `stale_seconds()` is how long it has
not been (0 while healthy): /healthz and edge_catalog_stale_seconds report them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import trio

from edge.catalog.model import Challenge, Sandbox, Snapshot
from edge.config import Config
from edge.errors import CatalogError, ConfigError

log = logging.getLogger("edge.catalog")

#: Seconds reload() waits for a streaming store's follower to serve a write before reading it all.
FOLLOW_WAIT = 1.0


class Store(Protocol):
    def put(self, sandbox: Sandbox) -> Sandbox: ...
    def modify(self, sandbox_id: str, change: Callable[[Sandbox | None], Sandbox | None]) -> Sandbox | None: ...
    def get(self, sandbox_id: str) -> Sandbox | None: ...
    def delete(self, sandbox_id: str) -> bool: ...
    def list(self) -> list[Sandbox]: ...
    def version(self) -> int: ...
    def snapshot(self) -> Snapshot: ...
    def add_challenge(self, challenge: Challenge) -> None: ...
    def remove_challenge(self, fqdn: str, value: str) -> bool: ...
    def challenges(self) -> tuple[Challenge, ...]: ...
    def close(self) -> None: ...


def is_redis(url: str) -> bool:
    return url.startswith(("redis://", "rediss://"))


def catalog_path(url: str) -> Path:
    """The file a catalog URL names: `sqlite:///abs/path` -> /abs/path, `sqlite://rel/path` -> rel/path."""
    if url.startswith("sqlite://"):
        rest = url[len("sqlite://") :]
        return Path("/" + rest.lstrip("/")) if rest.startswith("/") else Path(rest)  # sqlite:////x is /x too
    raise ConfigError(
        f"catalog: {url!r} is not a supported catalog URL (sqlite:///PATH, redis://[:PASSWORD@]HOST:PORT/DB)"
    )


def catalog_location(url: str) -> str:
    """Which catalog a URL names, for two processes to compare (the CLI and the running edge): for
    SQLite the file as an absolute path with symlinks resolved (a relative URL depends on each one's
    working folder); for Redis `redis://HOST:PORT/DB`, without the password."""
    if is_redis(url):
        from edge.catalog.redis import redis_location

        return redis_location(url)
    return str(catalog_path(url).resolve())


def open_store(url: str, *, create_folder: bool = False, state_dir: Path | None = None) -> Store:
    """Open the store a catalog URL names: `sqlite:///ABSOLUTE/PATH` (or `sqlite://RELATIVE`), or
    `redis://[:PASSWORD@]HOST:PORT/DB` (`rediss://` for TLS).

    A SQLite file is created if missing, but its folder must exist unless `create_folder` (the default
    catalog, in the state folder): a typo in a named path is an error, not a new empty catalog. A
    Redis store connects on first use; with `state_dir` its follower keeps the last snapshot there."""
    if is_redis(url):
        from edge.catalog.redis import RedisStore

        return RedisStore(url, snapshot_file=state_dir / SNAPSHOT_FILE if state_dir is not None else None)
    path = catalog_path(url)
    if not create_folder and not path.parent.is_dir():
        raise ConfigError(f"catalog: folder {path.parent} does not exist (catalog {url}); create it, or fix the path")
    from edge.catalog.sqlite import SqliteStore

    return SqliteStore(path)


#: In the state folder: the last snapshot of a Redis catalog, served when Redis is away at start.
SNAPSHOT_FILE = "catalog-snapshot.json"


def open_catalog(config: Config) -> Store:
    """The catalog `config` names. Only the default one (in the state folder) gets its folder made."""
    return open_store(config.catalog_url, create_folder=not config.catalog, state_dir=config.state_dir)


class LiveCatalog:
    """The snapshot the servers read: `live.snapshot`, one attribute read per request.

    A new snapshot comes only through `swap()` (`reload()`, from watch() or the admin API, or a test),
    which then tells the listeners registered with `on_change` (the HTTP server cuts what a change
    revokes), in the same trio thread. `swaps` counts them: `reload()` uses it to tell a stale read.
    """

    __slots__ = ("snapshot", "swaps", "_listeners", "problem", "synced_at", "fleet")

    def __init__(self, snapshot: Snapshot | None = None) -> None:
        self.snapshot = snapshot or Snapshot()
        self.swaps = 0
        self._listeners: list[Callable[[Snapshot, Snapshot], None]] = []
        #: Why the snapshot may be out of date (the store cannot be read), or None.
        self.problem: str | None = None
        #: time.monotonic() when the store was last read (or the catalog made).
        self.synced_at = time.monotonic()
        #: The edges sharing a Redis catalog (edge.catalog.fleet.Fleet), in the process that serves
        #: DNS: its DNS server answers with their addresses, its admin API reports them. None otherwise.
        self.fleet: Any = None

    def healthy(self) -> None:
        """The store was just read: the snapshot is current."""
        self.problem = None
        self.synced_at = time.monotonic()

    def unhealthy(self, reason: str) -> None:
        """The store cannot be read: the snapshot keeps serving, and says since when it is stale."""
        self.problem = reason

    def stale_seconds(self) -> float:
        """Seconds since the store was last read, while it cannot be; 0 while it can."""
        return 0.0 if self.problem is None else time.monotonic() - self.synced_at

    def on_change(self, listener: Callable[[Snapshot, Snapshot], None]) -> None:
        """Call `listener(old, new)` after every swap."""
        self._listeners.append(listener)

    def swap(self, new: Snapshot) -> None:
        old, self.snapshot = self.snapshot, new
        self.swaps += 1
        for listener in self._listeners:
            listener(old, new)


async def reload(store: Store, live: LiveCatalog) -> bool:
    """Read the whole store (in a worker thread) and serve it; False when the read came back stale.

    Stale: another reload swapped in a snapshot while this one was being read, and that one is as new
    or newer (the watcher's poll racing the admin API's write). Never going back to it is what makes
    a change the API answered for stay visible. Only here, so there is one rule for every reader.

    A store that streams its changes (Redis) has a follower swapping them in already: wait (FOLLOW_WAIT
    at most) until it serves the store's current version, and read the whole catalog only if it
    does not by then."""
    if getattr(store, "streams", False):
        version = await trio.to_thread.run_sync(store.version)
        with trio.move_on_after(FOLLOW_WAIT):
            while live.snapshot.version < version:
                await trio.sleep(0.002)
            return True
    before = live.swaps
    new = await trio.to_thread.run_sync(store.snapshot)
    if live.swaps != before and new.version <= live.snapshot.version:
        return False
    live.swap(new)
    return True


async def watch(store: Store, live: LiveCatalog, poll: float, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
    """Keep `live.snapshot` equal to the store's contents, checking every `poll` seconds (a Redis
    store: following its change stream, edge/catalog/follow.py)."""
    from edge import metrics

    metrics.watch_catalog(live.stale_seconds)
    if getattr(store, "streams", False):
        from edge.catalog.follow import follow

        await follow(store, live, task_status=task_status)  # type: ignore[arg-type]
        return
    await reload(store, live)
    task_status.started()
    failing = False
    while True:
        await trio.sleep(poll)
        try:
            version = await trio.to_thread.run_sync(store.version)
            if version != live.snapshot.version and await reload(store, live):
                log.debug("catalog reloaded: version %d, %d sandboxes", version, len(live.snapshot))
            if failing:
                log.warning("catalog readable again")
                failing = False
            live.healthy()
        except CatalogError as exc:
            # Keep serving the last good snapshot; say so once, not every poll.
            if not failing:
                log.error("catalog unreadable, serving the last snapshot: %s", exc.message)
                failing = True
            live.unhealthy(exc.message)
