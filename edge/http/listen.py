"""Listening sockets and the accept loop.

trio's serve_listeners accepts one connection per trip through the scheduler. Under load a trip is
long (every busy connection runs once), so a burst of new connections waits in the kernel's queue
for many trips: measured here, 256 connections opened at once against a saturated edge waited up to
2 s to be accepted (wrk timeouts, a 1.2 s p99) while no packet was lost. nginx accepts in batches for
the same reason. This loop waits until the listening socket is readable, then accepts everything
the kernel has queued (up to ACCEPT_BATCH) before yielding.
"""

from __future__ import annotations

import errno
import logging
import socket

import trio

from edge.config import Listen
from edge.errors import ConfigError

logger = logging.getLogger("edge.http")

ACCEPT_BATCH = 1024
BACKLOG = 4096
# Out of file descriptors or memory: the listener stays readable, so back off instead of spinning.
_RESOURCE_ERRORS = frozenset((errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM))


def open_listeners(listen: Listen, *, reuse_port: bool = False) -> list[socket.socket]:
    """Non-blocking listening sockets for every address `listen.host` resolves to.

    reuse_port (SO_REUSEPORT) only for `edge serve --workers N`: on by accident, two unrelated edges
    could split one port's traffic without a word."""
    try:
        infos = socket.getaddrinfo(listen.host, listen.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except OSError as exc:
        raise ConfigError(f"http: cannot listen on {listen}: {exc.strerror}") from None
    sockets: list[socket.socket] = []
    port = listen.port
    try:
        for family, type_, proto, _, addr in dict.fromkeys((i[0], i[1], i[2], i[3], i[4][:2]) for i in infos):
            sock = socket.socket(family, type_, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuse_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            # Port 0 with several addresses ("localhost"): the first picks, the others follow it.
            sock.bind((addr[0], port) + tuple(addr[2:]))
            port = port or sock.getsockname()[1]
            sock.listen(BACKLOG)
            sock.setblocking(False)
    except OSError as exc:
        for sock in sockets:
            sock.close()
        raise ConfigError(f"http: cannot listen on {listen}: {exc.strerror}") from None
    return sockets


async def accept_loop(sock: socket.socket, nursery: trio.Nursery, handler) -> None:
    """Accept connections on `sock` for ever, in batches, starting `handler(stream)` for each.

    Ends with trio.ClosedResourceError when another task closes the socket through
    trio.lowlevel.notify_closing (a graceful stop)."""
    accept = sock.accept
    from_stdlib = trio.socket.from_stdlib_socket
    while True:
        await trio.lowlevel.wait_readable(sock)
        for _ in range(ACCEPT_BATCH):
            try:
                conn, _ = accept()
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno in _RESOURCE_ERRORS:
                    logger.error("http: accept failed (%s); pausing accepts for 100 ms", exc.strerror)
                    await trio.sleep(0.1)
                break  # ECONNABORTED and the like: that connection is gone, others are not
            conn.setblocking(False)
            nursery.start_soon(handler, trio.SocketStream(from_stdlib(conn)))
