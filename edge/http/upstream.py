"""Connections to sandboxes: connect with a short retry, and a pool of idle keep-alive connections.

A pooled connection is keyed by (sandbox ID, address, port), so a sandbox that moves to another address
never gets a connection meant for the old one. A connection goes back to the pool only when its
exchange ended cleanly and nothing at all follows the response: not in h11's buffer (checked at
release), not on the socket (checked at every reuse, whatever the idle time, by a non-blocking
peek). Bytes nobody asked for mean the connection is closed, never read as the next answer: a
sandbox that sends a second response after the first (by bug or on purpose) would otherwise hand it
to the next client, and that client's answer to the one after (response desynchronisation).
Idle connections past `upstream_idle_timeout` are closed by a reaper so sandboxes do not hold them.
"""

from __future__ import annotations

import errno
import socket
from collections import deque

import h11
import trio

from edge.config import HttpConfig
from edge.errors import PortNotOpen, UpstreamError, UpstreamTimeout
from edge.metrics import STATS

_REFUSED = frozenset((errno.ECONNREFUSED, errno.ECONNRESET))

Key = tuple[str, str, int]
_PEEK = socket.MSG_PEEK | socket.MSG_DONTWAIT


class Upstream:
    """One connection to a sandbox port: the stream, its h11 client state, and pool bookkeeping."""

    __slots__ = ("key", "sock", "stream", "fd", "h11", "idle_since", "reused", "expired", "client_fd")

    def __init__(self, key: Key, sock: socket.socket) -> None:
        self.key = key
        #: The standard-library socket under `stream` (for the liveness peek without trio's wrappers).
        self.sock = sock
        self.stream = trio.SocketStream(trio.socket.from_stdlib_socket(sock))
        self.fd = sock.fileno()
        self.h11 = h11.Connection(h11.CLIENT)
        self.idle_since = 0.0
        self.reused = False
        #: Why a wait on this connection was ended from outside (see expire), or None.
        self.expired: str | None = None
        #: The client socket of the exchange this connection serves (-1 when none): the reaper
        #: watches it while the sandbox has not answered.
        self.client_fd = -1

    def expire(self, why: str) -> None:
        """End a wait on this connection from outside: "timeout" (the response head is late),
        "client" (the client left) or "revoked" (a catalog change). The waiting task gets
        ClosedResourceError and sees `expired`; the connection is closed by its owner, never reused."""
        self.expired = why
        trio.lowlevel.notify_closing(self.stream.socket)

    def close(self) -> None:
        self.stream.socket.close()


async def connect(key: Key, config: HttpConfig) -> socket.socket:
    """Open a TCP connection to the sandbox port, retrying a refused port for `connect_retry` seconds.

    E2B's edge retries too: a sandbox's server is often still starting when the first request comes.
    """
    sandbox_id, address, port = key
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    retry_until = trio.current_time() + config.connect_retry
    delay = 0.02
    while True:
        raw = socket.socket(family, socket.SOCK_STREAM)
        raw.setblocking(False)
        sock = trio.socket.from_stdlib_socket(raw)
        try:
            with trio.fail_after(config.connect_timeout):
                await sock.connect((address, port))
            return raw
        except trio.TooSlowError:
            sock.close()
            raise UpstreamTimeout(sandbox_id, port, "connect") from None
        except OSError as exc:
            sock.close()
            if exc.errno not in _REFUSED:
                raise UpstreamError(sandbox_id, port, f"connect: {exc.strerror}") from None
            if trio.current_time() + delay > retry_until:
                raise PortNotOpen(sandbox_id, port) from None
            await trio.sleep(delay)
            delay = min(delay * 2, 0.2)
        except BaseException:
            sock.close()
            raise


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
    def __init__(self, config: HttpConfig) -> None:
        self._config = config
        self._idle: dict[Key, deque[Upstream]] = {}

    async def acquire(self, key: Key, fresh: bool = False) -> Upstream:
        """A clean idle connection for `key`, or a new one. The caller owns it until release()."""
        idle = None if fresh else self._idle.get(key)
        if idle:
            now = trio.current_time()
            limit = now - self._config.upstream_idle_timeout
            while idle:
                up = idle.pop()  # most recently used first: the likeliest to still be open
                # Every reuse peeks, however short the idle time: the bytes that desynchronise a
                # connection arrive right after the response they follow.
                if up.idle_since >= limit and quiet(up.sock):
                    up.reused = True
                    return up
                up.close()
        try:
            return Upstream(key, await connect(key, self._config))
        except PortNotOpen:
            STATS.upstream_connect_failures["refused"] += 1
            raise
        except UpstreamTimeout:
            STATS.upstream_connect_failures["timeout"] += 1
            raise
        except UpstreamError:
            STATS.upstream_connect_failures["error"] += 1
            raise

    def release(self, up: Upstream) -> None:
        """Give a connection back after a request; pooled only when h11 says the cycle ended cleanly
        and h11 holds no byte past the response."""
        conn = up.h11
        fresh = conn.our_state is h11.IDLE and conn.their_state is h11.IDLE  # replaced after a splice
        if conn.trailing_data[0]:
            up.close()  # the sandbox sent more than the response: never read as the next answer
            return
        if fresh or (conn.our_state is h11.DONE and conn.their_state is h11.DONE):
            if not fresh:
                try:
                    conn.start_next_cycle()
                except h11.LocalProtocolError:
                    up.close()
                    return
            self.keep(up)
            return
        up.close()

    def keep(self, up: Upstream) -> None:
        """Pool a connection whose last exchange ended cleanly (the caller knows), if there is room."""
        idle = self._idle.get(up.key)
        if idle is None:
            idle = self._idle[up.key] = deque()
        if len(idle) < self._config.upstream_pool_size:
            up.idle_since = trio.current_time()
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
