"""Following a Redis catalog: its change stream into the live snapshot, and a copy of it on disk.

Theory of operation
-------------------
`follow(store, live)` is what `watch()` runs for a Redis catalog, in every process that serves.

1. **Full read.** One MULTI/EXEC reads the stream's last id (the tip), the version, every record and
   every challenge value (RedisStore.read_all): the tip is exactly the last change the records hold,
   so reading the stream from it misses nothing and applies nothing twice. The snapshot is swapped in.
2. **Stream.** `XREAD BLOCK` from the last id applied, in a worker thread (abandoned on cancel; the
   read ends by itself within BLOCK). Each entry carries the record it wrote (or the id it deleted),
   so a batch of entries becomes a new snapshot without reading the catalog again: a write reaches
   every edge in about one round trip. Versions go up by one per write, so an entry whose version is
   not the next one means entries were lost (the stream was trimmed past this edge while it was
   away, or it is another stream): read everything again (step 1).
3. **Same Redis?** When a read comes back empty (nothing written for BLOCK seconds), and after every
   failure, the server's run_id is compared with the one seen at the last full read: a restarted
   Redis (without persistence it lost the stream; with it, ids may repeat) means step 1 again.
4. **Redis away.** A failed read leaves the last snapshot serving: `live.unhealthy(reason)` (the
   admin API's /healthz says degraded, edge_catalog_stale_seconds grows), one error line, and reads
   are retried every RETRY_EVERY seconds; one warning when it is back.
5. **On disk.** At most every SAVE_EVERY seconds after a change, the snapshot is written to
   `<state_dir>/catalog-snapshot.json` (0600: it holds token hashes; written to a temporary file and
   renamed, so a reader never sees half of it). An edge that starts while Redis is unreachable
   serves that file, and says so; it catches up when Redis answers.

ACME challenge values are few: an entry for one makes the follower read them all again.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import trio

from edge.catalog.model import Challenge, Sandbox, Snapshot
from edge.catalog.redis import RedisStore, record_from_json
from edge.catalog.store import LiveCatalog
from edge.errors import CatalogError

log = logging.getLogger("edge.catalog")

#: Seconds one XREAD waits for a change (and so how often a quiet stream checks the server's run_id).
BLOCK = 1.0
#: Seconds between two reads while Redis is unreachable.
RETRY_EVERY = 0.5
#: Seconds between two saves of the snapshot on disk (a save follows a change).
SAVE_EVERY = 1.0


class _Position:
    """What this follower has applied: the records, the stream id and version it has read up to,
    and the Redis it read them from."""

    def __init__(self) -> None:
        self.records: dict[str, Sandbox] = {}
        self.challenges: tuple[Challenge, ...] = ()
        self.last_id = "0-0"
        self.version = 0
        self.run_id = ""
        self.full_read_needed = True
        self.saved_version: int | None = None
        self.saved_at = 0.0


async def follow(store: RedisStore, live: LiveCatalog, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
    """Keep `live.snapshot` equal to the Redis catalog, until cancelled. Reports started once the
    first snapshot (from Redis, else from disk, else empty) is served."""
    at = _Position()
    reader = store.reader(BLOCK)
    try:
        await _full_read(store, live, at)
    except CatalogError as exc:
        live.unhealthy(exc.message)
        saved = await trio.to_thread.run_sync(load_saved, store)
        if saved is not None:
            snapshot, saved_at = saved
            live.swap(snapshot)
            at.records = dict(snapshot.by_id)
            at.challenges = snapshot.challenges
            at.version = snapshot.version
            log.warning(
                "catalog %s unreachable at start; serving the last snapshot saved on disk (%s, %s: %d sandboxes,"
                " version %d) until it is back: %s",
                store.location,
                store.snapshot_file,
                time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(saved_at)),
                len(snapshot),
                snapshot.version,
                exc.message,
            )
        else:
            log.error("catalog %s unreachable at start and no snapshot saved on disk: %s", store.location, exc.message)
    task_status.started()
    try:
        while True:
            try:
                if at.full_read_needed:
                    await _full_read(store, live, at)
                entries = await trio.to_thread.run_sync(
                    store.changes, at.last_id, BLOCK, reader, abandon_on_cancel=True
                )
                if entries:
                    await _apply(store, live, at, entries)
                elif await trio.to_thread.run_sync(store.run_id) != at.run_id:
                    log.warning("catalog %s: Redis restarted (new run_id); reading the whole catalog", store.location)
                    at.full_read_needed = True
                    continue
                if live.problem is not None:
                    log.warning("catalog %s reachable again; serving version %d", store.location, at.version)
                live.healthy()
                await _save_if_due(store, live, at)
            except CatalogError as exc:
                if live.problem is None:
                    log.error("catalog unreachable, serving the last snapshot: %s", exc.message)
                live.unhealthy(exc.message)
                await trio.sleep(RETRY_EVERY)
                try:  # back: the same Redis (go on from last_id) or a restarted one (read everything)?
                    if await trio.to_thread.run_sync(store.run_id) != at.run_id:
                        at.full_read_needed = True
                except CatalogError:
                    pass
    finally:
        reader.close()


async def _full_read(store: RedisStore, live: LiveCatalog, at: _Position) -> None:
    run_id = await trio.to_thread.run_sync(store.run_id)
    tip, version, records, challenges = await trio.to_thread.run_sync(store.read_all)
    at.records, at.challenges, at.last_id, at.version, at.run_id = records, challenges, tip, version, run_id
    at.full_read_needed = False
    live.swap(Snapshot(records.values(), version, challenges))
    live.healthy()
    log.info("catalog %s read whole: version %d, %d sandboxes", store.location, version, len(records))
    await _save_if_due(store, live, at)


async def _apply(store: RedisStore, live: LiveCatalog, at: _Position, entries: list[tuple[str, dict]]) -> None:
    records = dict(at.records)
    version, last_id, challenges_changed = at.version, at.last_id, False
    for entry_id, fields in entries:
        v = int(fields.get("v", 0))
        if v <= version and version:
            last_id = entry_id  # applied already (a replay): idempotent
            continue
        if version and v != version + 1:
            log.warning(
                "catalog %s: change %d follows %d: changes were trimmed from the stream; reading the whole catalog",
                store.location,
                v,
                version,
            )
            at.full_read_needed = True
            return
        op, sandbox_id = fields.get("op"), fields.get("id", "")
        if op == "put":
            record = record_from_json(fields.get("rec", ""))
            if record is not None:
                records[record.id] = record
        elif op == "del":
            records.pop(sandbox_id, None)
        elif op == "chal":
            challenges_changed = True
        version, last_id = v, entry_id
    challenges = at.challenges
    if challenges_changed:
        challenges = await trio.to_thread.run_sync(store.challenges)
    at.records, at.challenges, at.version, at.last_id = records, challenges, version, last_id
    # An admin API's own reload may have swapped in this version (or a newer one) already.
    if version >= live.snapshot.version:
        live.swap(Snapshot(records.values(), version, challenges))


async def _save_if_due(store: RedisStore, live: LiveCatalog, at: _Position) -> None:
    if store.snapshot_file is None or at.saved_version == at.version:
        return
    now = time.monotonic()
    if now - at.saved_at < SAVE_EVERY and at.saved_version is not None:
        return
    at.saved_at = now
    snapshot = Snapshot(at.records.values(), at.version, at.challenges)
    try:
        await trio.to_thread.run_sync(save, store, snapshot)
        at.saved_version = at.version
    except OSError as exc:
        log.warning("catalog snapshot not saved to %s: %s", store.snapshot_file, exc.strerror)


def save(store: RedisStore, snapshot: Snapshot) -> None:
    """Write `snapshot` to the store's snapshot file, 0600, replacing it in one rename."""
    path = Path(store.snapshot_file)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    doc = {
        "catalog": store.location,
        "version": snapshot.version,
        "saved_at": time.time(),
        "sandboxes": [asdict(s) for s in snapshot.by_id.values()],
        "challenges": [asdict(c) for c in snapshot.challenges],
    }
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump(doc, out, separators=(",", ":"))
    os.replace(tmp, path)


def load_saved(store: RedisStore) -> tuple[Snapshot, float] | None:
    """The snapshot saved for this catalog and when, or None (no file, another catalog's, unreadable)."""
    if store.snapshot_file is None:
        return None
    path = Path(store.snapshot_file)
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        log.warning("catalog snapshot %s cannot be read: %s", path, exc)
        return None
    if not isinstance(doc, dict) or doc.get("catalog") != store.location:
        log.warning("catalog snapshot %s is of another catalog (%s): not used", path, doc.get("catalog"))
        return None
    records = [record_from_json(json.dumps(s)) for s in doc.get("sandboxes", [])]
    challenges = [Challenge(c["fqdn"], c["value"], c["expires_at"]) for c in doc.get("challenges", [])]
    now = time.time()
    kept = (c for c in challenges if c.expires_at > now)
    snapshot = Snapshot((r for r in records if r is not None), int(doc.get("version", 0)), kept)
    return snapshot, float(doc.get("saved_at", 0))
