"""`edge dns`: DNS alone in one process, on sockets it binds itself, stopped by SIGINT/SIGTERM.

`edge serve` is a supervisor and its workers (edge/supervisor.py); both run the servers through
edge.lifecycle, and neither imports the other.
"""

from __future__ import annotations

import trio

from edge import accesslog, lifecycle, rlimit, sockets
from edge.config import Config


def run(config: Config) -> int:
    accesslog.setup(config)
    rlimit.raise_nofile()
    lifecycle.check(config, dns=True, admin=False)
    listeners, _ = sockets.bind(config, ("dns",), given=sockets.activated(config))
    bound = listeners.for_worker(0, 1)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            served = await nursery.start(lambda task_status: lifecycle.serve(config, bound, task_status=task_status))
            lifecycle.say_up(config, served)

    try:
        lifecycle.run(main)
    finally:
        listeners.close()
    return 0
