"""`edge serve` (with one process) and `edge dns`: the catalog watcher and the servers in one nursery,
stopped by SIGINT/SIGTERM.

How the servers start, announce their listeners and stop is edge.lifecycle, which `edge serve
--workers N` (edge.workers) shares; the CLI picks one of the two.
"""

from __future__ import annotations

from functools import partial

from edge import accesslog, lifecycle, rlimit
from edge.config import Config


def run(config: Config, *, http: bool = True, dns: bool = True, admin: bool = True) -> int:
    accesslog.setup(config)
    rlimit.raise_nofile()
    lifecycle.run(partial(lifecycle.serve, config, http=http, dns=dns, admin=admin))
    return 0
