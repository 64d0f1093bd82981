"""The embedded catalog: one SQLite file, safe to share between processes.

WAL mode lets readers (the servers) and writers (CLI, admin API) work at once; a busy timeout makes
concurrent writers wait instead of failing. A trigger bumps a counter in `meta` on every change, so a
server learns that something changed with one tiny read instead of loading the table.

Changes that depend on the record already there (`modify`: add, update, rotate) read it and write the
result in one BEGIN IMMEDIATE transaction: the write lock is taken before the read, so a second
writer waits for the first to commit and then reads its result. Two concurrent updates of different
fields therefore both land; read in one transaction and written in another, one would be lost.

The file holds token hashes, so it is created 0600 before SQLite opens it (SQLite gives the -wal and
-shm files the database file's mode), and an older, wider file is narrowed to 0600 with a warning.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import stat
import threading
import time
from collections.abc import Callable
from pathlib import Path

from edge.catalog.model import Challenge, Sandbox, Snapshot
from edge.errors import CatalogError

log = logging.getLogger("edge.catalog")

#: Seconds a writer waits for another's lock (and an opener for another opener) before an error.
BUSY_TIMEOUT = 10.0

#: Owner read and write only: the catalog holds the SHA-256 of every traffic access token.
FILE_MODE = 0o600

_SCHEMA = [
    """CREATE TABLE IF NOT EXISTS sandboxes (
        id TEXT PRIMARY KEY,
        address TEXT NOT NULL,
        public INTEGER NOT NULL DEFAULT 1,
        mask_request_host TEXT,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        max_connections INTEGER,
        token_hash TEXT,
        internet_access INTEGER NOT NULL DEFAULT 1,
        allow_out TEXT NOT NULL DEFAULT '[]',
        deny_out TEXT NOT NULL DEFAULT '[]'
    )""",
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL)",
    "INSERT OR IGNORE INTO meta (key, value) VALUES ('version', 0)",
    """CREATE TRIGGER IF NOT EXISTS sandboxes_ins AFTER INSERT ON sandboxes
        BEGIN UPDATE meta SET value = value + 1 WHERE key = 'version'; END""",
    """CREATE TRIGGER IF NOT EXISTS sandboxes_upd AFTER UPDATE ON sandboxes
        BEGIN UPDATE meta SET value = value + 1 WHERE key = 'version'; END""",
    """CREATE TRIGGER IF NOT EXISTS sandboxes_del AFTER DELETE ON sandboxes
        BEGIN UPDATE meta SET value = value + 1 WHERE key = 'version'; END""",
    # ACME DNS-01 values the DNS servers serve (edge/tls/acme.py and POST /present write them). They
    # move the same version, so every edge sharing the catalog serves them within one poll.
    """CREATE TABLE IF NOT EXISTS challenges (
        fqdn TEXT NOT NULL,
        value TEXT NOT NULL,
        expires_at REAL NOT NULL,
        PRIMARY KEY (fqdn, value)
    )""",
    """CREATE TRIGGER IF NOT EXISTS challenges_ins AFTER INSERT ON challenges
        BEGIN UPDATE meta SET value = value + 1 WHERE key = 'version'; END""",
    """CREATE TRIGGER IF NOT EXISTS challenges_upd AFTER UPDATE ON challenges
        BEGIN UPDATE meta SET value = value + 1 WHERE key = 'version'; END""",
    """CREATE TRIGGER IF NOT EXISTS challenges_del AFTER DELETE ON challenges
        BEGIN UPDATE meta SET value = value + 1 WHERE key = 'version'; END""",
]
_COLUMNS = (
    "id, address, public, mask_request_host, created_at, updated_at, max_connections, token_hash,"
    " internet_access, allow_out, deny_out"
)
# Columns added after the first release, for catalogs created before them. The outbound policy
# (allow_out, deny_out: JSON lists of strings) defaults to what allows everything.
_MIGRATIONS = {
    "max_connections": "INTEGER",
    "token_hash": "TEXT",
    "internet_access": "INTEGER NOT NULL DEFAULT 1",
    "allow_out": "TEXT NOT NULL DEFAULT '[]'",
    "deny_out": "TEXT NOT NULL DEFAULT '[]'",
}


def _private_file(path: Path) -> None:
    """Create the catalog file 0600 if it is missing; narrow it (and its -wal, -shm) if it is wider."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, FILE_MODE)
    os.close(fd)
    for file in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        try:
            mode = stat.S_IMODE(file.stat().st_mode)
        except FileNotFoundError:
            continue
        if mode & 0o077:
            try:
                os.chmod(file, mode & 0o700)
            except OSError as exc:
                log.warning(
                    "catalog file %s is mode %04o, readable by others, and cannot be narrowed: %s",
                    file,
                    mode,
                    exc.strerror,
                )
            else:
                log.warning("catalog file %s was mode %04o, readable by others; now %04o", file, mode, mode & 0o700)


def _row(row: tuple) -> Sandbox:
    return Sandbox(
        id=row[0],
        address=row[1],
        public=bool(row[2]),
        mask_request_host=row[3],
        created_at=row[4],
        updated_at=row[5],
        max_connections=row[6],
        token_hash=row[7],
        internet_access=bool(row[8]),
        allow_out=_entries(row[9]),
        deny_out=_entries(row[10]),
    )


def _entries(text: str) -> tuple[str, ...]:
    """A stored JSON list of policy entries; what is not one is read as empty (loaded as it is, as
    other fields are: the egress router skips entries it cannot use)."""
    try:
        value = json.loads(text)
    except (TypeError, ValueError):
        return ()
    return tuple(v for v in value if isinstance(v, str)) if isinstance(value, list) else ()


class SqliteStore:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        try:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            _private_file(self.path)
            self._db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT, check_same_thread=False, isolation_level=None)
            # Several processes may open a new catalog at once (a supervisor's workers, the CLI beside
            # them). Turning a fresh file to WAL needs it alone, and SQLite answers "database is
            # locked" at once there instead of waiting its busy timeout: try again, within that timeout.
            deadline = time.monotonic() + BUSY_TIMEOUT
            while True:
                try:
                    self._prepare()
                    break
                except sqlite3.OperationalError as exc:
                    if "locked" not in str(exc) or time.monotonic() > deadline:
                        raise
                    time.sleep(0.02)
        except (sqlite3.Error, OSError) as exc:
            raise CatalogError(f"catalog {self.path}: {exc}") from None

    def _prepare(self) -> None:
        """WAL, the schema and its migrations: each step is a no-op when another opener did it first."""
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        with self._db:
            for stmt in _SCHEMA:
                self._db.execute(stmt)
            have = {r[1] for r in self._db.execute("PRAGMA table_info(sandboxes)")}
            for column, kind in _MIGRATIONS.items():
                if column not in have:
                    try:
                        self._db.execute(f"ALTER TABLE sandboxes ADD COLUMN {column} {kind}")
                    except sqlite3.OperationalError as exc:
                        if "duplicate column" not in str(exc):  # else another opener added it first
                            raise

    def _run(self, sql: str, args: tuple = ()) -> list[tuple]:
        try:
            with self._lock:
                return self._db.execute(sql, args).fetchall()
        except sqlite3.Error as exc:
            raise CatalogError(f"catalog {self.path}: {exc}") from None

    def put(self, sandbox: Sandbox) -> Sandbox:
        """Insert or update; `created_at` is kept from the first insert. Writes the record as given."""
        stored = self.modify(sandbox.id, lambda old: sandbox)
        assert stored is not None  # the change always returns a record
        return stored

    def modify(self, sandbox_id: str, change: Callable[[Sandbox | None], Sandbox | None]) -> Sandbox | None:
        """Read the record (None if absent), write what `change` makes of it, in one transaction.

        `change` runs inside the transaction (it must not use this store): what it returns is
        stored (None: nothing is written), what it raises rolls everything back and propagates.
        `created_at` is kept from the first insert. Returns the record as stored, or None.
        """
        now = time.time()
        try:
            with self._lock, self._db:
                self._db.execute("BEGIN IMMEDIATE")  # the write lock first: see the module docstring
                rows = self._db.execute(f"SELECT {_COLUMNS} FROM sandboxes WHERE id = ?", (sandbox_id,)).fetchall()
                old = _row(rows[0]) if rows else None
                new = change(old)
                if new is None:
                    return old
                created = old.created_at if old else now
                self._db.execute(
                    f"INSERT OR REPLACE INTO sandboxes ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        new.id,
                        new.address,
                        int(new.public),
                        new.mask_request_host,
                        created,
                        now,
                        new.max_connections,
                        new.token_hash,
                        int(new.internet_access),
                        json.dumps(list(new.allow_out)),
                        json.dumps(list(new.deny_out)),
                    ),
                )
                rows = self._db.execute(f"SELECT {_COLUMNS} FROM sandboxes WHERE id = ?", (new.id,)).fetchall()
                return _row(rows[0])
        except sqlite3.Error as exc:
            raise CatalogError(f"catalog {self.path}: {exc}") from None

    def get(self, sandbox_id: str) -> Sandbox | None:
        rows = self._run(f"SELECT {_COLUMNS} FROM sandboxes WHERE id = ?", (sandbox_id,))
        return _row(rows[0]) if rows else None

    def delete(self, sandbox_id: str) -> bool:
        try:
            with self._lock:
                cur = self._db.execute("DELETE FROM sandboxes WHERE id = ?", (sandbox_id,))
                return cur.rowcount > 0
        except sqlite3.Error as exc:
            raise CatalogError(f"catalog {self.path}: {exc}") from None

    def list(self) -> list[Sandbox]:
        return [_row(r) for r in self._run(f"SELECT {_COLUMNS} FROM sandboxes ORDER BY id")]

    def version(self) -> int:
        return self._run("SELECT value FROM meta WHERE key = 'version'")[0][0]

    def snapshot(self) -> Snapshot:
        # One read transaction, so the version matches the rows exactly.
        now = time.time()
        try:
            with self._lock:
                self._db.execute("BEGIN")
                try:
                    version = self._db.execute("SELECT value FROM meta WHERE key = 'version'").fetchone()[0]
                    rows = self._db.execute(f"SELECT {_COLUMNS} FROM sandboxes").fetchall()
                    held = self._db.execute(
                        "SELECT fqdn, value, expires_at FROM challenges WHERE expires_at > ?", (now,)
                    ).fetchall()
                finally:
                    self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            raise CatalogError(f"catalog {self.path}: {exc}") from None
        return Snapshot((_row(r) for r in rows), version, (Challenge(*c) for c in held))

    # --- ACME DNS-01 challenges ------------------------------------------------------------------------

    def add_challenge(self, challenge: Challenge) -> None:
        """Serve `challenge` (the same fqdn and value again: a new expiry). Expired values go at the same time."""
        try:
            with self._lock, self._db:
                self._db.execute("BEGIN IMMEDIATE")
                self._db.execute("DELETE FROM challenges WHERE expires_at <= ?", (time.time(),))
                self._db.execute(
                    "INSERT OR REPLACE INTO challenges (fqdn, value, expires_at) VALUES (?, ?, ?)",
                    (challenge.fqdn, challenge.value, challenge.expires_at),
                )
        except sqlite3.Error as exc:
            raise CatalogError(f"catalog {self.path}: {exc}") from None

    def remove_challenge(self, fqdn: str, value: str) -> bool:
        try:
            with self._lock:
                cur = self._db.execute("DELETE FROM challenges WHERE fqdn = ? AND value = ?", (fqdn, value))
                return cur.rowcount > 0
        except sqlite3.Error as exc:
            raise CatalogError(f"catalog {self.path}: {exc}") from None

    def challenges(self) -> tuple[Challenge, ...]:
        """The values still served (not expired), sorted."""
        rows = self._run(
            "SELECT fqdn, value, expires_at FROM challenges WHERE expires_at > ? ORDER BY fqdn, value", (time.time(),)
        )
        return tuple(Challenge(*r) for r in rows)

    def close(self) -> None:
        with self._lock:
            self._db.close()
