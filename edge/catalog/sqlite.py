"""The embedded catalog: one SQLite file, safe to share between processes.

WAL mode lets readers (the servers) and writers (CLI, admin API) work at once; a busy timeout makes
concurrent writers wait instead of failing. A trigger bumps a counter in `meta` on every change, so a
server learns that something changed with one tiny read instead of loading the table.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

from edge.catalog.model import Sandbox, Snapshot
from edge.errors import CatalogError

_SCHEMA = [
    """CREATE TABLE IF NOT EXISTS sandboxes (
        id TEXT PRIMARY KEY,
        address TEXT NOT NULL,
        public INTEGER NOT NULL DEFAULT 1,
        mask_request_host TEXT,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        max_connections INTEGER,
        token_hash TEXT
    )""",
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL)",
    "INSERT OR IGNORE INTO meta (key, value) VALUES ('version', 0)",
    """CREATE TRIGGER IF NOT EXISTS sandboxes_ins AFTER INSERT ON sandboxes
        BEGIN UPDATE meta SET value = value + 1 WHERE key = 'version'; END""",
    """CREATE TRIGGER IF NOT EXISTS sandboxes_upd AFTER UPDATE ON sandboxes
        BEGIN UPDATE meta SET value = value + 1 WHERE key = 'version'; END""",
    """CREATE TRIGGER IF NOT EXISTS sandboxes_del AFTER DELETE ON sandboxes
        BEGIN UPDATE meta SET value = value + 1 WHERE key = 'version'; END""",
]
_COLUMNS = "id, address, public, mask_request_host, created_at, updated_at, max_connections, token_hash"
# Columns added after the first release, for catalogs created before them.
_MIGRATIONS = {"max_connections": "INTEGER", "token_hash": "TEXT"}


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
    )


class SqliteStore:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, timeout=10.0, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            with self._db:
                for stmt in _SCHEMA:
                    self._db.execute(stmt)
                have = {r[1] for r in self._db.execute("PRAGMA table_info(sandboxes)")}
                for column, kind in _MIGRATIONS.items():
                    if column not in have:
                        self._db.execute(f"ALTER TABLE sandboxes ADD COLUMN {column} {kind}")
        except (sqlite3.Error, OSError) as exc:
            raise CatalogError(f"catalog {self.path}: {exc}") from None

    def _run(self, sql: str, args: tuple = ()) -> list[tuple]:
        try:
            with self._lock:
                return self._db.execute(sql, args).fetchall()
        except sqlite3.Error as exc:
            raise CatalogError(f"catalog {self.path}: {exc}") from None

    def put(self, sandbox: Sandbox) -> Sandbox:
        """Insert or update; `created_at` is kept from the first insert."""
        now = time.time()
        try:
            with self._lock, self._db:
                self._db.execute("BEGIN IMMEDIATE")
                old = self._db.execute("SELECT created_at FROM sandboxes WHERE id = ?", (sandbox.id,)).fetchone()
                created = old[0] if old else now
                self._db.execute(
                    f"INSERT OR REPLACE INTO sandboxes ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (sandbox.id, sandbox.address, int(sandbox.public), sandbox.mask_request_host, created, now,
                     sandbox.max_connections, sandbox.token_hash),
                )
        except sqlite3.Error as exc:
            raise CatalogError(f"catalog {self.path}: {exc}") from None
        stored = self.get(sandbox.id)
        assert stored is not None
        return stored

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
        try:
            with self._lock:
                self._db.execute("BEGIN")
                try:
                    version = self._db.execute("SELECT value FROM meta WHERE key = 'version'").fetchone()[0]
                    rows = self._db.execute(f"SELECT {_COLUMNS} FROM sandboxes").fetchall()
                finally:
                    self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            raise CatalogError(f"catalog {self.path}: {exc}") from None
        return Snapshot((_row(r) for r in rows), version)

    def close(self) -> None:
        with self._lock:
            self._db.close()
