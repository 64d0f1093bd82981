"""What bounds the resources one client or one sandbox can hold, and what takes them back.

connection_limits  how many client connections a server admits, in all and per client address,
                   sized from the descriptor limit unless the config says otherwise.
clients_gone       which clients left while their sandbox was still thinking (EOF, reset): the
                   server's reaper asks this of every exchange waiting for a response head, so the
                   sandbox connection and the sandbox's max_connections slot come back at once
                   instead of when the answer finally arrives.
revokes            whether a catalog change withdraws what an exchange in flight was allowed.
SandboxSlot        one exchange held against its sandbox's max_connections, and findable for
                   revocation while it runs.
"""

from __future__ import annotations

import fcntl
import resource
import select
import struct
import termios
from collections.abc import Iterable
from typing import TYPE_CHECKING

from edge.catalog.model import Sandbox
from edge.config import HttpConfig
from edge.errors import TooManyConnections

if TYPE_CHECKING:
    from edge.http.deadlines import Wait

#: Descriptors kept back for listeners, the catalog, logs and the like.
RESERVED_FDS = 64
#: Descriptors one proxied client connection may hold: its own, the sandbox connection, and a share of
#: the splice pipes and pooled idle sandbox connections.
FDS_PER_CONNECTION = 3

_GONE = select.POLLHUP | select.POLLERR | select.POLLNVAL
_RDHUP = getattr(select, "POLLRDHUP", 0x2000)
_FIONREAD = termios.FIONREAD
_INT = struct.Struct("i")


def connection_limits(http: HttpConfig, soft_nofile: int | None = None) -> tuple[int, int]:
    """(in all, per client address). 0 in the config means: sized to the descriptor limit, and a
    quarter of that per address (so one address cannot take every slot)."""
    if soft_nofile is None:
        soft_nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft_nofile == resource.RLIM_INFINITY or soft_nofile <= 0:
        soft_nofile = 1 << 20
    total = http.max_connections or max(16, (soft_nofile - RESERVED_FDS) // FDS_PER_CONNECTION)
    per_ip = http.max_connections_per_ip or max(1, total // 4)
    return total, min(per_ip, total)


def clients_gone(waiting: Iterable[Wait]) -> list[Wait]:
    """The waits on a sandbox among `waiting` whose client (`Wait.watch`) has closed or reset its connection.

    One poll(0) over all their client sockets. A client that half-closed (FIN) with nothing left
    unread has gone, as nginx also decides; one with unread bytes (a pipelined request, a body) has
    not.
    """
    poller = select.poll()
    by_fd: dict[int, Wait] = {}
    for w in waiting:
        fd = w.watch
        if fd >= 0:
            poller.register(fd, select.POLLIN | _RDHUP)
            by_fd[fd] = w
    gone = []
    for fd, events in poller.poll(0):
        if events & _GONE:
            gone.append(by_fd[fd])
        elif events & _RDHUP and not _unread(fd):
            gone.append(by_fd[fd])
    return gone


def _unread(fd: int) -> int:
    try:
        return _INT.unpack(fcntl.ioctl(fd, _FIONREAD, b"\0\0\0\0"))[0]
    except OSError:
        return 0


def revokes(was: Sandbox, now: Sandbox | None) -> str | None:
    """Why the catalog's new record `now` withdraws what `was` allowed, or None when it does not."""
    if now is None:
        return "removed from the catalog"
    if now.address != was.address:
        return "moved to another address"
    if not now.public and (was.public or now.token_hash != was.token_hash):
        return "made private" if was.public else "its token was rotated"
    return None


class SandboxSlot:
    """One exchange held against its sandbox, for as long as it runs (tunnels included):

    - counted against the sandbox's max_connections in this process, or refused with 429;
    - registered as in flight on the sandbox record it was authorised against, so that a catalog
      change revoking that record can find and cut it (context.ServerContext.revoke_changed).
    """

    __slots__ = ("_active", "_inflight", "_ex", "_sandbox")

    def __init__(self, active: dict[str, int], inflight: dict, ex: object, sandbox: Sandbox, port: int) -> None:
        limit = sandbox.max_connections
        if limit is not None:
            n = active.get(sandbox.id, 0)
            if n >= limit:
                raise TooManyConnections(sandbox.id, port, limit)
            active[sandbox.id] = n + 1
        inflight[ex] = sandbox
        self._active = active
        self._inflight = inflight
        self._ex = ex
        self._sandbox = sandbox

    def __enter__(self) -> SandboxSlot:
        return self

    def __exit__(self, *exc: object) -> None:
        del self._inflight[self._ex]
        sandbox = self._sandbox
        if sandbox.max_connections is not None:
            active = self._active
            n = active[sandbox.id] - 1
            if n:
                active[sandbox.id] = n
            else:
                del active[sandbox.id]
