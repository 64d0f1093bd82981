"""Opening one new SQLite catalog from several places at once (a supervisor's workers start together)."""

from __future__ import annotations

import threading

from edge.catalog.sqlite import SqliteStore
from edge.errors import CatalogError


def test_a_new_catalog_opened_by_eight_at_once_opens_for_every_one(tmp_path):
    """Turning a fresh file to WAL needs it alone, and SQLite says "database is locked" at once to the
    others instead of waiting: 150 new catalogs, each opened by 8 threads released together, and not
    one opener gets an error."""
    errors: list[str] = []
    for n in range(150):
        path = tmp_path / f"c{n}.db"
        start = threading.Barrier(8)

        def open_it(path=path, start=start) -> None:
            start.wait()
            try:
                SqliteStore(path).close()
            except CatalogError as exc:
                errors.append(exc.message)

        threads = [threading.Thread(target=open_it) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert errors == []
