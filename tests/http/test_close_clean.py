"""Closing without a reset, and an accept loop whose listener is closed under it (a drain's races)."""

from __future__ import annotations

import errno
import socket

import pytest
import trio

from edge.accept import accept_loop
from edge.config import HttpConfig
from edge.http.client import SocketTransport
from edge.http.deadlines import Deadlines


def _pair() -> tuple[socket.socket, socket.socket]:
    lsock = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(lsock.getsockname())
    server, _ = lsock.accept()
    lsock.close()
    return client, server


def test_a_close_with_unread_bytes_reaches_the_peer_as_end_of_stream_not_reset():
    """A tunnel cut at a drain deadline while its client was still sending: the client reads the end
    of the stream (b""), not "connection reset by peer" (RFC 1122 4.2.2.13: unread data makes a close
    an RST)."""
    client, server = _pair()
    client.sendall(b"x" * 100_000)  # sent, never read by the edge
    transport = SocketTransport(server, Deadlines(HttpConfig()))
    transport.close()
    client.settimeout(5)
    assert client.recv(10) == b""
    client.close()


class _ClosedUnderIt(socket.socket):
    """A listener closed by a stop in the round its accept loop woke up: accept() finds EBADF."""

    def accept(self):
        self.close()
        raise OSError(errno.EBADF, "Bad file descriptor")


async def test_an_accept_loop_whose_listener_was_closed_ends_as_closed_not_with_a_crash():
    raw = socket.create_server(("127.0.0.1", 0))
    sock = _ClosedUnderIt(raw.family, raw.type, fileno=raw.detach())
    sock.setblocking(False)
    client = socket.create_connection(sock.getsockname())  # something to wake the loop for
    async with trio.open_nursery() as nursery:
        with pytest.raises(trio.ClosedResourceError), trio.fail_after(5):
            await accept_loop(sock, nursery, lambda stream: None)
    client.close()
