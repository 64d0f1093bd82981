"""The catalog of sandboxes: which sandbox IDs exist and where their ports are reachable.

Writers (the CLI, the admin API) change a store; servers read an immutable `Snapshot` that a watcher
swaps whole when the store changes, so the per-request lookup is one dict access and never a query.
"""

from edge.catalog.model import Sandbox, Snapshot
from edge.catalog.store import open_store

__all__ = ["Sandbox", "Snapshot", "open_store"]
