"""How one process goes down: set by its signals, read by its servers.

Two ways down share this shape. A stop (SIGTERM, SIGINT: `systemctl stop`, Ctrl-C) gives the
connections in flight `http.shutdown_grace` seconds. A drain (SIGQUIT, sent by the supervisor to the
old generation during a reload or an upgrade) gives them `http.drain_timeout`: requests finish,
keep-alive connections close after their current response, tunnels and streams run on until the
deadline. Either way the servers stop accepting at once (the listening sockets stay open in the
supervisor and the new generation, so nothing waiting in their queues is lost).

A later call can only bring the deadline nearer: a drain followed by a stop ends within the stop's
grace.
"""

from __future__ import annotations

import math

import trio


class Stopping:
    """The process's deadline for its connections, once it stops accepting.

    `stop(grace, why)` sets `event` and the deadline; a server that waited on `event` stops accepting
    and hands its connections' cancel scope to `bound()`, which applies the deadline now and keeps it
    up to date when a later `stop()` shortens it."""

    __slots__ = ("event", "deadline", "why", "_scopes")

    def __init__(self) -> None:
        self.event = trio.Event()
        self.deadline = math.inf
        self.why = ""
        self._scopes: list[trio.CancelScope] = []

    def stop(self, grace: float, why: str) -> bool:
        """Stop accepting; connections get `grace` seconds from now, or less if an earlier call gave
        less. True when this call moved the deadline."""
        deadline = trio.current_time() + grace
        self.event.set()
        if deadline >= self.deadline:
            return False
        self.deadline = deadline
        self.why = why
        for scope in self._scopes:
            scope.deadline = deadline
        return True

    def bound(self, scope: trio.CancelScope) -> None:
        """`scope` is cancelled at the deadline, now and whenever a later stop() shortens it."""
        scope.deadline = min(scope.deadline, self.deadline)
        self._scopes.append(scope)

    async def wait(self) -> None:
        await self.event.wait()
