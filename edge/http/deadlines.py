"""Deadlines on every wait of the request path, from one mechanism; and the socket I/O that uses it.

Theory of operation. A wait happens only when a socket is not ready: a read with nothing to read, a
write with no room. Each such wait is registered in one table, `Deadlines.table`, as `Wait -> when`,
and one task (`Deadlines.run`) sweeps the table every `tick` seconds. A wait past its time is woken
through `trio.lowlevel.notify_closing` on its descriptor and raises `Expired(kind)`, which the caller
turns into the answer that kind deserves. Nothing is paid when a socket is ready (the common case
under load): no cancel scope, no table entry. A trio cancel scope per request cost a third of a
fast-lane exchange under load (bench/README.md), which is why this is not one.

The kinds, and what their expiry means (config keys in edge/http/README.md):

  idle      keep-alive wait for the next request (keepalive_timeout), or for a first one (head_timeout)
  head      the rest of a request head (head_timeout): 408
  body      a request body read that makes no progress (body_idle_timeout): 408
  response  the sandbox's response head (response_head_timeout): 504
  send      a write, to the client or to the sandbox, splice included, that makes no progress
            (send_timeout): the exchange ends and the connection closes
  connect   one TCP connect to a sandbox (connect_timeout): 504
  linger    the drain after an early answer (LINGER seconds)

Reads of a response body or of a tunnel have no deadline on purpose: a stream or a WebSocket may be
quiet for hours. Their writes have one (send): a peer that stops reading cannot pin the sandbox
connection, the sandbox's slot and their descriptors.

One descriptor may have a reader and a writer waiting at once (a request body pumped while the answer
is relayed): each direction has its own `Wait`, and `notify_closing` wakes both, so the one whose
deadline did not pass simply waits again.
"""

from __future__ import annotations

import os

import trio
from trio.lowlevel import notify_closing, wait_readable, wait_writable

from edge.config import HttpConfig
from edge.http.limits import clients_gone

_read = os.read
_write = os.write
LINGER = 1.0
#: Expiries that end every later wait on the same Wait too (the others end only the wait under way).
STICKY = frozenset(("revoked", "client"))


class Expired(Exception):  # noqa: N818 - it names what happened to the wait
    """A wait ran past its deadline. `kind` says which (see the module docstring)."""

    def __init__(self, kind: str) -> None:
        super().__init__(kind)
        self.kind = kind


class Wait:
    """One direction of one socket a task may wait on.

    `kind` is the deadline kind of the wait under way; `expired` is set by the sweep when it ran out.
    `watch` is the client socket of an exchange whose sandbox has not answered yet (-1 otherwise): the
    sweep also ends such a wait when that client has gone (kind "client")."""

    __slots__ = ("fd", "kind", "expired", "watch")

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.kind = ""
        self.expired: str | None = None
        self.watch = -1


class Deadlines:
    """The table of waits under way, and the task that ends those past their time."""

    __slots__ = ("table", "tick", "send_timeout")

    def __init__(self, http: HttpConfig, *others: float) -> None:
        """`others`: further timeouts kept here (the TLS handshake's), for the sweep's tick."""
        self.table: dict[Wait, float] = {}
        self.send_timeout = http.send_timeout
        shortest = min(
            http.keepalive_timeout,
            http.head_timeout,
            http.body_idle_timeout,
            http.response_head_timeout,
            http.send_timeout,
            http.connect_timeout,
            *others,
        )
        self.tick = min(1.0, max(shortest / 4, 0.01))

    async def run(self) -> None:
        table = self.table
        while True:
            await trio.sleep(self.tick)
            now = trio.current_time()
            for w in [w for w, when in table.items() if when <= now]:
                self.expire(w, w.kind)
            watched = [w for w in table if w.watch >= 0]
            if watched:
                # A client that left while its sandbox thinks: release the sandbox connection and the
                # slot now (logged as 499), not when the answer finally comes.
                for w in clients_gone(watched):
                    self.expire(w, "client")

    def expire(self, w: Wait, kind: str) -> None:
        """End the wait under way on `w` (or the next one) with Expired(kind)."""
        self.table.pop(w, None)
        w.expired = kind
        notify_closing(w.fd)

    async def readable(self, w: Wait, deadline: float | None, kind: str) -> None:
        await self._wait(wait_readable, w, deadline, kind)

    async def writable(self, w: Wait, deadline: float | None = None, kind: str = "send") -> None:
        """Wait for room to write; by default bounded by send_timeout from now."""
        if deadline is None:
            deadline = trio.current_time() + self.send_timeout
        await self._wait(wait_writable, w, deadline, kind)

    async def _wait(self, wait, w: Wait, deadline: float | None, kind: str) -> None:
        while True:
            if w.expired in STICKY:
                raise Expired(w.expired)  # revoked, or its client left: every later wait ends too
            if deadline is not None:
                w.kind = kind
                self.table[w] = deadline
            try:
                await wait(w.fd)
            except trio.ClosedResourceError:
                why = w.expired
                if why is None:
                    continue  # woken for the other direction's deadline: wait again
                if why not in STICKY:
                    w.expired = None  # this expiry is spent: a later wait (a linger) has its own
                raise Expired(why) from None
            else:
                if w.expired is not None and w.expired not in STICKY:
                    # The socket became ready in the same round the sweep found the deadline passed:
                    # the operation won, and the expiry (which woke nobody) is dropped.
                    w.expired = None
                return
            finally:
                if deadline is not None:
                    self.table.pop(w, None)

    # --- socket I/O on a raw descriptor, through the waits above ---------------------------------

    async def recv(self, w: Wait, max_bytes: int, deadline: float | None, kind: str) -> bytes:
        """Up to `max_bytes`, waiting (until `deadline`) while there are none; b"" at EOF."""
        fd = w.fd
        while True:
            try:
                return _read(fd, max_bytes)
            except BlockingIOError:
                await self.readable(w, deadline, kind)

    async def send_all(self, w: Wait, data: bytes | memoryview) -> None:
        """All of `data`; each wait for room is bounded by send_timeout."""
        fd = w.fd
        while True:
            try:
                sent = _write(fd, data)
            except BlockingIOError:
                await self.writable(w)
                continue
            if sent == len(data):
                return
            data = memoryview(data)[sent:]
