"""The HTTP server's listening sockets. The accept loop they run is edge/accept.py (shared with DNS over TCP)."""

from __future__ import annotations

import socket

from edge.config import Listen
from edge.errors import ConfigError

__all__ = ["BACKLOG", "open_listeners"]

BACKLOG = 4096


def open_listeners(listen: Listen, *, what: str = "http", reuse_port: bool = False) -> list[socket.socket]:
    """Non-blocking listening sockets for every address of `listen` (all of `listen.all()`), and every
    address each name resolves to.

    reuse_port (SO_REUSEPORT) only for the supervisor's shares of one port (edge/sockets.py), each
    drained by one worker of every generation in turn and never closed during a deploy; on by
    accident, two unrelated edges could split one port's traffic without a word."""
    infos = []
    for one in listen.all():
        try:
            infos += socket.getaddrinfo(one.host, one.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        except OSError as exc:
            raise ConfigError(f"{what}: cannot listen on {one}: {exc.strerror}") from None
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
        raise ConfigError(f"{what}: cannot listen on {listen}: {exc.strerror}") from None
    return sockets
