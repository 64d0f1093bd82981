"""Deadlines on every wait of the request path, from one mechanism; and the socket I/O that uses it.

Theory of operation. A wait happens only when a socket is not ready: a read with nothing to read, a
write with no room. Each such wait is registered in one table, `Deadlines.table`, as `Wait -> when`,
and one task (`Deadlines.run`) sweeps the table every `tick` seconds. A wait past its time is woken
through `trio.lowlevel.notify_closing` on its descriptor and raises `Expired(kind)`, which the caller
turns into the answer that kind deserves. Nothing is paid when a socket is ready (the common case
under load): no cancel scope, no table entry. A trio cancel scope per request cost a third of a
fast-lane exchange under load (bench/README.md), which is why this is not one.

Expiries come in crowds: 1,000 slow clients opened together run out of time together. The sweep ends
them earliest first, SWEEP_BATCH per scheduler round, so the answers and closes they cause are spread
over rounds that other connections' work runs in too (bench/results/adversarial.md measured a normal
client's p99 at 17-65x its unloaded figure while one pass ended ~500 at once). The price is a bound:
the n-th wait due in one pass ends n / SWEEP_BATCH rounds after its time plus the tick.

The kinds, and what their expiry means (config keys in edge/http/README.md):

  first     a new connection's wait for its first request (head_timeout): closed, no answer
  idle      keep-alive wait for the next request (keepalive_timeout): closed, no answer
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
from trio.lowlevel import ParkingLot, notify_closing, wait_readable, wait_writable

from edge.config import HttpConfig
from edge.http.limits import clients_gone

_read = os.read
_write = os.write
LINGER = 1.0
#: Expiries that end every later wait on the same Wait too (the others end only the wait under way).
STICKY = frozenset(("revoked", "client"))
#: Most waits the sweep ends in one scheduler round (see Deadlines._in_batches).
SWEEP_BATCH = 4
#: Most reads of a request under way that go on in one scheduler round (see Turns).
TURNS_PER_ROUND = 16
#: The waits that take turns once ready: the rest of a client's request head, its body, and the drain
#: of a connection being closed after an early answer (a crowd answered 408 closes its side at once).
TAKE_TURNS = frozenset(("head", "body", "linger"))


def late(table: dict[Wait, float], now: float) -> list[Wait]:
    """The waits of `table` whose deadline is at or before `now`, earliest first."""
    due = [(when, i, w) for i, (w, when) in enumerate(table.items()) if when <= now]
    due.sort()
    return [w for _, _, w in due]


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


class Turns:
    """At most `per_round` tasks a scheduler round go on past `take()`; the others queue, in order.

    trio wakes every task whose socket is ready in one round and runs them all before anyone else:
    1,000 slow clients that each send a few more bytes in the same instant (slowhttptest's ticks, or
    closing all at once) are 30-200 ms of one core that a normal client's request waits behind. The
    waits that take turns (TAKE_TURNS: a request's head or body still coming in, the drain of a
    connection being closed) are the ones such a crowd is made of; a new request on a keep-alive
    connection, a sandbox's answer and writes do not take turns, so they run in the next round
    whatever the crowd. Nothing is paid until more than `per_round` take a turn in one round: one
    decrement, no checkpoint. Past it, a task parks and `run` lets `per_round` go each round, first
    come first served: the n-th in the queue goes on n / per_round rounds later. Without `run` (a
    Deadlines nobody sweeps) nobody waits."""

    __slots__ = ("per_round", "left", "lot", "due", "running")

    def __init__(self, per_round: int) -> None:
        self.per_round = per_round
        self.left = per_round
        self.lot = ParkingLot()
        #: Set when the round's turns are spent: `run` refills them from the next round.
        self.due: trio.Event | None = None
        self.running = False

    async def take(self) -> None:
        if not self.running:
            return
        if self.left > 0 and not self.lot:
            self.left -= 1
            if self.left == 0 and self.due is not None:
                self.due.set()
            return
        if self.due is not None:
            self.due.set()
        await self.lot.park()

    async def run(self) -> None:
        """Refill the turns once a round, and let the queue go on, while the turns run out."""
        self.running = True
        try:
            while True:
                due = self.due = trio.Event()
                if self.left == self.per_round and not self.lot:
                    await due.wait()  # some round later: the turns ran out, or someone queued
                else:
                    await trio.sleep(0)  # the next round
                self.left = self.per_round - len(self.lot.unpark(count=self.per_round))
        finally:
            self.running = False
            self.lot.unpark_all()


class Deadlines:
    """The table of waits under way, and the task that ends those past their time."""

    __slots__ = ("table", "tick", "send_timeout", "turns")

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
        self.turns = Turns(TURNS_PER_ROUND)

    async def run(self) -> None:
        """The sweep, and the turns of reads that take them (Turns), until cancelled."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self.turns.run)
            await self._sweep_forever()

    async def _sweep_forever(self) -> None:
        table = self.table
        while True:
            await trio.sleep(self.tick)
            await self.sweep(trio.current_time())
            watched = [w for w in table if w.watch >= 0]
            if watched:
                # A client that left while its sandbox thinks: release the sandbox connection and the
                # slot now (logged as 499), not when the answer finally comes.
                await self._in_batches([(w, "client") for w in clients_gone(watched)])

    async def sweep(self, now: float) -> int:
        """End every wait past its time at `now`, earliest first, SWEEP_BATCH per scheduler round.

        Returns how many were ended. A wait that ended or moved its deadline while the sweep yielded
        is left alone."""
        return await self._in_batches([(w, "") for w in late(self.table, now)], now)

    async def _in_batches(self, ends: list[tuple[Wait, str]], now: float | None = None) -> int:
        """Expire each (wait, kind) (kind "": the wait's own), yielding to the scheduler between batches.

        Every expiry wakes a task that then answers, closes, logs: 1,000 at once are a few hundred ms
        of one core, and trio runs every task woken in one round before any other, so a normal
        client's request would wait behind all of them. A batch at a time, its tasks run in the next
        round beside everyone else's, and the sweep goes on in the round after: the last of n waits is
        ended n / SWEEP_BATCH rounds late, each round carrying at most SWEEP_BATCH expiries' work."""
        table = self.table
        done = in_round = 0
        for w, kind in ends:
            if in_round == SWEEP_BATCH:
                await trio.sleep(0)
                in_round = 0
            when = table.get(w)
            if when is None or (now is not None and when > now):
                continue  # woken by its socket, or waiting again with a new deadline, while we yielded
            self.expire(w, kind or w.kind)
            in_round += 1
            done += 1
        return done

    def expire(self, w: Wait, kind: str) -> None:
        """End the wait under way on `w` (or the next one) with Expired(kind)."""
        self.table.pop(w, None)
        w.expired = kind
        notify_closing(w.fd)

    async def readable(self, w: Wait, deadline: float | None, kind: str) -> None:
        await self._wait(wait_readable, w, deadline, kind)
        if kind in TAKE_TURNS and deadline is not None:
            await self.turns.take()  # a request still coming in: after the crowd's turn (Turns)

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
