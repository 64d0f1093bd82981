"""The TLS transport: a non-blocking ssl.SSLSocket on the accepted socket, driven by the deadline waits.

Each operation is tried first and waits only when OpenSSL says it must (SSLWantRead / SSLWantWrite),
through the same deadline table as plain sockets (deadlines.py). Not trio.SSLStream: measured on this
kind of machine it used 30-45% more CPU per GiB and ~25% more per handshake, and it stalled ~43 ms per
new connection for clients without TCP_NODELAY (its TLS 1.3 session-ticket workaround); a plain
SSLSocket has none of that.

The handshake has a deadline (`https.handshake_timeout`, kind "handshake"): a client that opens a TLS
connection and sends nothing is closed, like a silent plain one. Which certificate a connection gets
is edge/tls/certs.py's business (the SNI callback of the listening context).

Zero copy: with kernel TLS (kTLS) the kernel encrypts what is written to the socket, so splice(2)
into it stays correct. `splice_fd` is the descriptor only when getsockopt(SOL_TLS, TLS_TX) and
(TLS_RX) succeed on this connection: a raw write to a TLS socket without kTLS would corrupt the stream.
Otherwise bodies are copied through Python (splice.move does that when `splice_fd` is -1).
"""

from __future__ import annotations

import socket
import ssl

import trio

from edge.http.client import discard_unread
from edge.http.deadlines import Deadlines, Wait
from edge.metrics import STATS

SOL_TLS = 282
TLS_TX = 1
TLS_RX = 2


def ktls_active(sock: socket.socket, option: int) -> bool:
    """True when the kernel does the TLS records of this socket in the given direction."""
    try:
        sock.getsockopt(SOL_TLS, option, 64)
    except OSError:
        return False
    return True


class TlsTransport:
    __slots__ = ("ssl", "fd", "splice_fd", "rd", "wr", "_d")

    def __init__(self, ssl_sock: ssl.SSLSocket, deadlines: Deadlines) -> None:
        self.ssl = ssl_sock
        self.fd = ssl_sock.fileno()
        self.splice_fd = -1  # set by handshake() when the kernel does TLS both ways
        self.rd = Wait(self.fd)
        self.wr = Wait(self.fd)
        self._d = deadlines

    async def handshake(self, timeout: float) -> None:
        """Complete the TLS handshake within `timeout` seconds; Expired("handshake") or an SSLError otherwise."""
        deadline = trio.current_time() + timeout
        ssl_sock = self.ssl
        d = self._d
        while True:
            try:
                ssl_sock.do_handshake()
                break
            except ssl.SSLWantReadError:
                await d.readable(self.rd, deadline, "handshake")
            except ssl.SSLWantWriteError:
                await d.writable(self.wr, deadline, "handshake")
        if ktls_active(ssl_sock, TLS_TX) and ktls_active(ssl_sock, TLS_RX):
            self.splice_fd = self.fd
            STATS.tls_ktls_connections += 1

    def pending(self) -> bool:
        return self.ssl.pending() > 0

    async def recv(self, max_bytes: int, deadline: float | None, kind: str) -> bytes:
        ssl_sock = self.ssl
        d = self._d
        while True:
            try:
                return ssl_sock.recv(max_bytes)
            except ssl.SSLWantReadError:
                await d.readable(self.rd, deadline, kind)
            except ssl.SSLWantWriteError:
                await d.writable(self.wr)
            except ssl.SSLZeroReturnError:
                return b""  # close_notify: a clean end

    async def send(self, data: bytes | memoryview) -> None:
        ssl_sock = self.ssl
        d = self._d
        view = memoryview(data)
        while view:
            try:
                sent = ssl_sock.send(view)
            except ssl.SSLWantWriteError:
                await d.writable(self.wr)
                continue
            except ssl.SSLWantReadError:
                await d.readable(self.rd, trio.current_time() + d.send_timeout, "send")
                continue
            view = view[sent:]

    def shutdown(self, how: int) -> None:
        # A raw TCP shutdown, without close_notify: it needs no I/O, so it can be done from anywhere
        # (a revocation, the end of one tunnel direction). SSLSocket.shutdown would also drop the TLS
        # state, which the other direction of a tunnel still reads through: call the socket's own.
        socket.socket.shutdown(self.ssl, how)

    def close(self) -> None:
        discard_unread(self.ssl)  # the TLS records no one will read: else the close is a reset
        self.ssl.close()
