"""The sandbox side: connections to sandboxes, the pool of idle ones, and the one send-with-retry.

A pooled connection is keyed by (sandbox ID, address, port), so a sandbox that moves to another address
never gets a connection meant for the old one. A connection goes back to the pool only when
`exchange.upstream_may_return` says so (its exchange ended cleanly and nothing at all follows the
response, not even in h11's buffer), and before every reuse, whatever its idle time, a non-blocking
peek checks that nothing arrived since: bytes nobody asked for mean the connection is closed, never
read as the next answer. A sandbox that sends a second response after the first (by bug or on
purpose) would otherwise hand it to the next client, and that client's answer to the one after
(response desynchronisation). Idle connections past `upstream_idle_timeout` are closed by a reaper.

`forward_with_retry` is the one way both lanes get a sandbox connection and use it: when a pooled
connection turns out dead before the sandbox said anything (the keep-alive race), an idempotent
request without a body is sent once more on a new connection.
"""

from __future__ import annotations

import errno
import socket
from collections import deque
from collections.abc import Awaitable, Callable
from typing import TypeVar

import h11
import trio

from edge.config import HttpConfig
from edge.errors import PortNotOpen, UpstreamError, UpstreamTimeout
from edge.http.deadlines import Deadlines, Expired, Wait
from edge.http.exchange import Exchange, clock, upstream_may_return
from edge.metrics import STATS

_REFUSED = frozenset((errno.ECONNREFUSED, errno.ECONNRESET))
_PEEK = socket.MSG_PEEK | socket.MSG_DONTWAIT

Key = tuple[str, str, int]
#: Methods safe to resend when a pooled connection turns out dead before any answer.
RETRYABLE = frozenset((b"GET", b"HEAD", b"OPTIONS", b"PUT", b"DELETE", b"TRACE"))


class Stale:
    """The outcome of an attempt on a pooled connection that was dead before the sandbox said anything."""

    def __repr__(self) -> str:
        return "STALE"


STALE = Stale()
T = TypeVar("T")


class Upstream:
    """One connection to a sandbox port: a transport (client.Transport's shape, so bodies and tunnels
    treat both sides alike), an h11 client state while the h11 lane uses it, and pool bookkeeping."""

    __slots__ = ("key", "sock", "fd", "splice_fd", "rd", "wr", "h11", "idle_since", "reused", "_d")

    def __init__(self, key: Key, sock: socket.socket, deadlines: Deadlines) -> None:
        self.key = key
        self.sock = sock
        self.fd = self.splice_fd = sock.fileno()
        self.rd = Wait(self.fd)
        self.wr = Wait(self.fd)
        self.h11: h11.Connection | None = None
        self.idle_since = 0.0
        self.reused = False
        self._d = deadlines

    def pending(self) -> bool:
        return False

    async def recv(self, max_bytes: int, deadline: float | None, kind: str) -> bytes:
        return await self._d.recv(self.rd, max_bytes, deadline, kind)

    async def send(self, data: bytes | memoryview) -> None:
        await self._d.send_all(self.wr, data)

    def shutdown(self, how: int) -> None:
        self.sock.shutdown(how)

    def close(self) -> None:
        self.sock.close()


async def connect(key: Key, config: HttpConfig, deadlines: Deadlines) -> Upstream:
    """Open a TCP connection to the sandbox port, retrying a refused port for `connect_retry` seconds.

    E2B's edge retries too: a sandbox's server is often still starting when the first request comes.
    Each attempt is a non-blocking connect bounded by connect_timeout (a "connect" deadline).
    """
    sandbox_id, address, port = key
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    now = trio.current_time()
    retry_until = now + config.connect_retry
    delay = 0.02
    while True:
        try:
            sock = socket.socket(family, socket.SOCK_STREAM)
        except OSError as exc:  # out of descriptors (EMFILE, ENFILE) or memory: the edge's, said as such
            raise UpstreamError(sandbox_id, port, f"no socket for the connection: {exc.strerror}") from None
        sock.setblocking(False)
        up = Upstream(key, sock, deadlines)
        try:
            err = sock.connect_ex((address, port))
            if err == errno.EINPROGRESS:
                await deadlines.writable(up.wr, trio.current_time() + config.connect_timeout, "connect")
                err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if not err:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                return up
        except Expired:
            sock.close()
            raise UpstreamTimeout(sandbox_id, port, "connect") from None
        except BaseException:
            sock.close()
            raise
        sock.close()
        if err not in _REFUSED:
            raise UpstreamError(sandbox_id, port, f"connect: {errno.errorcode.get(err, err)}")
        if trio.current_time() + delay > retry_until:
            raise PortNotOpen(sandbox_id, port)
        await trio.sleep(delay)
        delay = min(delay * 2, 0.2)


def quiet(sock: socket.socket) -> bool:
    """True when nothing at all waits on an idle connection: no byte, no EOF, no error.

    An idle HTTP/1.1 connection has nothing to say; anything readable is EOF, a reset, or bytes
    nobody asked for (a second response after the first), and in every one of those cases it must
    not carry another request. One non-blocking recv(MSG_PEEK): it consumes nothing.
    """
    try:
        sock.recv(1, _PEEK)
    except BlockingIOError:
        return True
    except OSError:
        return False
    return False


class Pool:
    def __init__(self, config: HttpConfig, deadlines: Deadlines) -> None:
        self._config = config
        self._deadlines = deadlines
        self._idle: dict[Key, deque[Upstream]] = {}

    async def acquire(self, key: Key, fresh: bool = False) -> Upstream:
        """A clean idle connection for `key`, or a new one. The caller owns it until finish()."""
        idle = None if fresh else self._idle.get(key)
        if idle:
            limit = trio.current_time() - self._config.upstream_idle_timeout
            while idle:
                up = idle.pop()  # most recently used first: the likeliest to still be open
                # Every reuse peeks, however short the idle time: the bytes that desynchronise a
                # connection arrive right after the response they follow.
                if up.idle_since >= limit and quiet(up.sock):
                    up.reused = True
                    return up
                up.close()
        try:
            return await connect(key, self._config, self._deadlines)
        except PortNotOpen:
            STATS.upstream_connect_failures["refused"] += 1
            raise
        except UpstreamTimeout:
            STATS.upstream_connect_failures["timeout"] += 1
            raise
        except UpstreamError:
            STATS.upstream_connect_failures["error"] += 1
            raise

    def finish(self, up: Upstream, ex: Exchange) -> None:
        """After an exchange: back to the pool when `upstream_may_return(ex)`, else closed."""
        if not upstream_may_return(ex):
            up.close()
            return
        idle = self._idle.get(up.key)
        if idle is None:
            idle = self._idle[up.key] = deque()
        if len(idle) < self._config.upstream_pool_size:
            up.idle_since = trio.current_time()
            up.rd.watch = -1
            up.h11 = None
            idle.append(up)
        else:
            up.close()

    def reap(self) -> None:
        """Close the connections idle for longer than the limit."""
        limit = trio.current_time() - self._config.upstream_idle_timeout
        for key in list(self._idle):
            idle = self._idle[key]
            while idle and idle[0].idle_since < limit:
                idle.popleft().close()
            if not idle:
                del self._idle[key]

    async def run_reaper(self) -> None:
        while True:
            await trio.sleep(max(self._config.upstream_idle_timeout / 2, 0.05))
            self.reap()

    def close_all(self) -> None:
        for idle in self._idle.values():
            for up in idle:
                up.close()
        self._idle.clear()


async def forward_with_retry(
    pool: Pool, key: Key, ex: Exchange, retry: bool, attempt: Callable[[Upstream], Awaitable[T | Stale]]
) -> T:
    """Get a sandbox connection for `ex` and run `attempt` on it (send the request, relay the answer).

    When the attempt finds a pooled connection dead before any answer (STALE), the connection is
    closed and, if `retry` (an idempotent request without a body) and nothing revoked the exchange,
    the attempt runs once more on a new connection. After the attempt the connection goes back to the
    pool or is closed (`Pool.finish`); after an error it is closed.
    """
    fresh = False
    while True:
        t0 = clock()
        up = await pool.acquire(key, fresh)
        ex.connect_ms = round((clock() - t0) * 1000, 3)
        ex.upstream = up
        up.rd.watch = ex.client.io.fd  # the deadline sweep notices the client leaving meanwhile
        try:
            result = await attempt(up)
        except BaseException:
            up.close()
            raise
        finally:
            ex.upstream = None
        if not isinstance(result, Stale):
            pool.finish(up, ex)
            return result
        up.close()
        if not retry or ex.revoked:
            raise UpstreamError(key[0], key[2], "connection closed before a response")
        retry = False
        fresh = True
