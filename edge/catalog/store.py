"""Stores, and the live snapshot the servers read.

A store (SQLite here; the interface is small so Redis can follow) is written by the CLI and the admin
API. `LiveCatalog` holds the current `Snapshot`; `watch()` polls the store's cheap change counter
every `poll` seconds (in a worker thread, so a slow disk never stalls the event loop) and, when it
moved, loads the whole catalog and swaps the snapshot in one assignment. A request takes
`live.snapshot` once and uses that: no lock, no query on the hot path, and a change made by any
process is seen within one poll interval.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Protocol

import trio

from edge.catalog.model import Challenge, Sandbox, Snapshot
from edge.errors import CatalogError, ConfigError

log = logging.getLogger("edge.catalog")


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


def open_store(url: str) -> Store:
    """Open the store a catalog URL names: `sqlite:///ABSOLUTE/PATH` (or `sqlite://RELATIVE`)."""
    if url.startswith("sqlite://"):
        from edge.catalog.sqlite import SqliteStore

        # sqlite:///abs/path -> "/abs/path"; sqlite://rel/path -> "rel/path"
        return SqliteStore(url[len("sqlite://") :])
    raise ConfigError(f"catalog: {url!r} is not a supported catalog URL (sqlite:///PATH)")


class LiveCatalog:
    """The snapshot the servers read: `live.snapshot`, one attribute read per request.

    A new snapshot comes only through `swap()` (watch() or a test), which then tells the listeners
    registered with `on_change` (the HTTP server cuts what a change revokes), in the same trio thread.
    """

    __slots__ = ("snapshot", "_listeners")

    def __init__(self, snapshot: Snapshot | None = None) -> None:
        self.snapshot = snapshot or Snapshot()
        self._listeners: list[Callable[[Snapshot, Snapshot], None]] = []

    def on_change(self, listener: Callable[[Snapshot, Snapshot], None]) -> None:
        """Call `listener(old, new)` after every swap."""
        self._listeners.append(listener)

    def swap(self, new: Snapshot) -> None:
        old, self.snapshot = self.snapshot, new
        for listener in self._listeners:
            listener(old, new)


async def watch(
    store: Store, live: LiveCatalog, poll: float, *, task_status=trio.TASK_STATUS_IGNORED
) -> None:
    """Keep `live.snapshot` equal to the store's contents, checking every `poll` seconds."""
    live.swap(await trio.to_thread.run_sync(store.snapshot))
    task_status.started()
    failing = False
    while True:
        await trio.sleep(poll)
        try:
            version = await trio.to_thread.run_sync(store.version)
            if version != live.snapshot.version:
                live.swap(await trio.to_thread.run_sync(store.snapshot))
                log.debug("catalog reloaded: version %d, %d sandboxes", version, len(live.snapshot))
            if failing:
                log.warning("catalog readable again")
                failing = False
        except CatalogError as exc:
            # Keep serving the last good snapshot; say so once, not every poll.
            if not failing:
                log.error("catalog unreadable, serving the last snapshot: %s", exc.message)
                failing = True
