"""The client side of a connection: its transport, its h11 state, and the edge's own answers.

The transport is the seam the lanes talk through: read, write, shut down, close, and whether body
bytes may move by splice(2) (`splice_fd`, -1 when not). `SocketTransport` is a plain TCP socket,
driven straight on its descriptor; a TLS transport (a non-blocking ssl.SSLSocket) fits the same
shape, with splice only where the kernel does the encryption (kTLS). The lanes never touch a socket
themselves, so they run unchanged over any transport (tests/http/test_conn.py runs them over a
second one).

`ClientSide` composes a transport with what belongs to the client's half of HTTP: the h11 state
machine while h11 holds the exchange (`h`; None in the fast lane and between requests), the bytes
read but not yet used (`buffered`: a pipelined request), and `answer()`, which writes an error or a
redirect of the edge's own when the connection can still take one.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from typing import Protocol

import h11

from edge.http.deadlines import LINGER, Deadlines, Expired, Wait
from edge.http.pages import REASONS


@dataclass(frozen=True, slots=True)
class Listener:
    """What a connection inherits from the listener that accepted it (made once per listener)."""

    #: X-Forwarded-Proto sent upstream (b"https" on TLS, or behind a TLS terminator by config).
    scheme: bytes
    #: Cookies set by the edge are Secure (and `__Host-`).
    secure: bool
    #: X-Forwarded-Port sent upstream: the port the client connected to.
    port: bytes
    #: On a plain listener with `https.redirect_http`: b"https://" prefix parts for the 308, as
    #: (scheme and nothing, the port suffix such as b":8443" or b""); None otherwise.
    redirect_port: bytes | None = None
    #: Connections start with a PROXY header (a TCP load balancer in front): proxyproto.py.
    proxy_protocol: bool = False


GONE = (OSError, Expired)


class Transport(Protocol):
    fd: int
    #: The descriptor body bytes may be spliced to and from, -1 when they may not (TLS without kTLS).
    splice_fd: int
    rd: Wait
    wr: Wait

    def pending(self) -> bool:
        """Bytes already read from the socket but not yet returned (a TLS record's rest)."""
        ...

    async def recv(self, max_bytes: int, deadline: float | None, kind: str) -> bytes: ...

    async def send(self, data: bytes | memoryview) -> None: ...

    def shutdown(self, how: int) -> None: ...

    def close(self) -> None: ...


class SocketTransport:
    """A plain TCP connection: one syscall per read or write when the socket is ready."""

    __slots__ = ("sock", "fd", "splice_fd", "rd", "wr", "_d")

    def __init__(self, sock: socket.socket, deadlines: Deadlines) -> None:
        self.sock = sock
        self.fd = self.splice_fd = sock.fileno()
        self.rd = Wait(self.fd)
        self.wr = Wait(self.fd)
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
        discard_unread(self.sock)
        self.sock.close()


def discard_unread(sock: socket.socket, rounds: int = 16) -> None:
    """Read what the peer sent and nobody read (up to `rounds` x 64 KiB, never waiting) before a
    close: closing a socket with unread bytes sends a reset (RFC 1122 4.2.2.13), and the client would
    see "connection reset" instead of the end of the stream, or lose the answer we sent last (a
    tunnel cut at a drain deadline, a connection revoked mid-message). One recv() when nothing is
    there."""
    recv = socket.socket.recv  # the socket's own bytes, also under an SSLSocket (no TLS to decode at a close)
    try:
        for _ in range(rounds):
            if not recv(sock, 65536, socket.MSG_DONTWAIT):
                return
    except OSError:  # EAGAIN: nothing more now; or the socket is gone already
        pass


class ClientSide:
    __slots__ = ("io", "ip", "listener", "trusted", "h", "buffered", "_max_head")

    def __init__(
        self, io: Transport, ip: bytes, listener: Listener, max_head_bytes: int, trusted: bool = False
    ) -> None:
        self.io = io
        self.ip = ip
        self.listener = listener
        #: The peer is one of http.trusted_proxies: its X-Forwarded-For is extended, not replaced.
        self.trusted = trusted
        self.h: h11.Connection | None = None
        self.buffered = b""
        self._max_head = max_head_bytes

    def new_h11(self, data: bytes) -> h11.Connection:
        """Give the connection's state to a fresh h11 server state machine that has read `data`."""
        h = self.h = h11.Connection(h11.SERVER, max_incomplete_event_size=self._max_head)
        if data:
            h.receive_data(data)
        return h

    async def answer(self, status: int, headers: list, body: bytes, close: bool, head_request: bool) -> int:
        """An answer of the edge's own (an error, a redirect), when the connection can still take one.

        Returns the body bytes sent (0 when nothing could be sent: a response had already started)."""
        h = self.h
        if h is None or h.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            return 0  # a response already started: the connection just closes
        if head_request:
            body = b""
        if h.their_state is h11.SEND_BODY:
            _discard_buffered_body(h)
        # After a protocol error, or with the request body unread, this connection cannot go on.
        if close or h.their_state is not h11.DONE:
            headers.append((b"connection", b"close"))
        try:
            data = h.send(h11.Response(status_code=status, headers=headers, reason=REASONS.get(status, b"")))
            if body:
                data += h.send(h11.Data(data=body))
            data += h.send(h11.EndOfMessage())
        except h11.LocalProtocolError:
            return 0
        await self.io.send(data)
        return len(body)

    async def close(self, read_size: int, now: float) -> None:
        """Close the connection; when we answered before the request body ended, linger first.

        Closing with unread bytes would reset the connection and could destroy the answer in flight:
        half-close, then drain a little (up to 1 MiB or LINGER seconds), as nginx's lingering close does."""
        h = self.h
        io = self.io
        try:
            if h is not None and h.their_state is h11.SEND_BODY and h.our_state in (h11.DONE, h11.MUST_CLOSE):
                io.shutdown(socket.SHUT_WR)
                drained = 0
                deadline = now + LINGER
                while drained < 1 << 20:
                    data = await io.recv(read_size, deadline, "linger")
                    if not data:
                        break
                    drained += len(data)
        except GONE:
            pass
        finally:
            io.close()


def _discard_buffered_body(h: h11.Connection) -> None:
    """Consume a request body that already sits in h11's buffer, so the connection may go on."""
    try:
        while h.their_state is h11.SEND_BODY:
            if h.next_event() is h11.NEED_DATA:
                return
    except h11.RemoteProtocolError:
        return
