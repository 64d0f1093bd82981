"""One client connection to the edge (plain TCP or TLS on trio), and reading answers off it.

This is the boundary where the outside world's failures become error kinds: an OSError, a TLS
error, a closed socket or a garbled head is turned into `LoadError(kind)` here, once, so the scenarios
above only ever see `LoadError` or a parsed answer.

Plain connections use trio's raw socket methods (no SocketStream layer) and recv_into a scratch
buffer when a body is only counted: a request through the edge costs the generator a few system calls
and a head split, which keeps one process ahead of one edge process (bench/README.md, "load.py").
"""

from __future__ import annotations

import errno
import os
import socket
import ssl

import trio

from bench.loadlib import wire
from bench.loadlib.options import Target

MAX_HEAD = 64 * 1024
KEEP_BODY = 4096  # error bodies are kept (up to this) to read an edge error code out of them
_SCRATCH = bytearray(256 * 1024)  # counted-only body bytes land here; nobody reads them
_SCRATCH_VIEW = memoryview(_SCRATCH)

_RESET_ERRNOS = {errno.ECONNRESET, errno.EPIPE, errno.ECONNABORTED, errno.ENOTCONN, errno.ESHUTDOWN}


class LoadError(Exception):
    """A request's outcome other than answered: `kind` is what the report counts."""

    def __init__(self, kind: str, detail: str = "", *, idle: bool = False) -> None:
        super().__init__(f"{kind}: {detail}" if detail else kind)
        self.kind = kind
        #: The connection failed before any byte of an answer came back: on a reused keep-alive
        #: connection, the server may have closed it while idle (a client retries those once).
        self.idle = idle


def _os_kind(exc: OSError) -> str:
    if exc.errno in _RESET_ERRNOS:
        return wire.RESET
    if exc.errno == errno.ETIMEDOUT:
        return wire.TIMEOUT
    return wire.RESET


def client_context(target: Target, insecure: bool = False, cacert: str | None = None) -> ssl.SSLContext | None:
    if not target.tls:
        return None
    ctx = ssl.create_default_context(cafile=cacert)
    if insecure:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


class Conn:
    """A connection: a non-blocking stdlib socket waited on with trio.lowlevel (plain), or an SSLStream.

    The plain path tries each send and recv at once and waits (`wait_readable` / `wait_writable`, which
    are trio checkpoints) only when the kernel says EAGAIN; trio's socket wrapper would add a yield to
    the scheduler to every successful call, a third of the generator's time per small request. A request
    always waits for its answer at least once, so cancellation and fairness are kept; `_spins` forces a
    checkpoint should answers ever keep arriving before they are waited for."""

    __slots__ = ("sock", "stream", "buf", "used", "_spins")

    def __init__(self, sock: socket.socket, stream: trio.SSLStream | None) -> None:
        self.sock = sock
        self.stream = stream
        self.buf = bytearray()
        self.used = 0  # answers read so far
        self._spins = 0

    @classmethod
    async def open(
        cls, target: Target, deadline: float, ssl_ctx: ssl.SSLContext | None = None, sni: str | None = None
    ) -> Conn:
        """Connect (and handshake) by `deadline` (trio time): connect_timeout / connect_refused / tls_error."""
        family = socket.AF_INET6 if ":" in target.connect else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            try:
                sock.connect((target.connect, target.port))
            except BlockingIOError:
                with trio.move_on_at(deadline) as scope:
                    await trio.lowlevel.wait_writable(sock)
                if scope.cancelled_caught:
                    raise LoadError(wire.CONNECT_TIMEOUT) from None
                err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:
                    raise OSError(err, os.strerror(err)) from None
            else:
                await trio.lowlevel.checkpoint()
        except OSError as exc:
            sock.close()
            if exc.errno == errno.ECONNREFUSED:
                raise LoadError(wire.CONNECT_REFUSED) from None
            if exc.errno == errno.ETIMEDOUT:
                raise LoadError(wire.CONNECT_TIMEOUT) from None
            raise LoadError(wire.CONNECT_ERROR, str(exc)) from None
        except BaseException:
            sock.close()
            raise
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if ssl_ctx is None:
            return cls(sock, None)
        tsock = trio.socket.from_stdlib_socket(sock)
        stream = trio.SSLStream(trio.SocketStream(tsock), ssl_ctx, server_hostname=sni, https_compatible=True)
        try:
            await stream.do_handshake()
        except trio.BrokenResourceError as exc:
            tsock.close()
            cause = exc.__cause__
            kind = wire.TLS_ERROR if isinstance(cause, ssl.SSLError) else wire.RESET
            raise LoadError(kind, str(cause or exc)) from None
        except BaseException:
            tsock.close()
            raise
        return cls(tsock, stream)  # type: ignore[arg-type]

    def close(self) -> None:
        self.sock.close()

    # --- bytes ------------------------------------------------------------------------------------------

    async def send(self, data: bytes | memoryview) -> None:
        try:
            if self.stream is not None:
                await self.stream.send_all(data)
                return
            sock = self.sock
            view = memoryview(data)
            while view:
                try:
                    view = view[sock.send(view) :]
                except BlockingIOError:
                    await trio.lowlevel.wait_writable(sock)
        except OSError as exc:
            raise LoadError(_os_kind(exc), str(exc), idle=not self.buf) from None
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise LoadError(wire.RESET, str(exc), idle=not self.buf) from None

    async def recv(self, n: int = 65536) -> bytes:
        """Some bytes, b"" at EOF."""
        try:
            if self.stream is not None:
                return await self.stream.receive_some(n)
            sock = self.sock
            while True:
                try:
                    data = sock.recv(n)
                except BlockingIOError:
                    self._spins = 0
                    await trio.lowlevel.wait_readable(sock)
                    continue
                self._spins += 1
                if self._spins > 32:
                    self._spins = 0
                    await trio.lowlevel.checkpoint()
                return data
        except OSError as exc:
            raise LoadError(_os_kind(exc), str(exc), idle=not self.buf) from None
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise LoadError(wire.RESET, str(exc), idle=not self.buf) from None

    async def _discard(self, n: int) -> int:
        """Read and drop up to n bytes; 0 at EOF."""
        if self.stream is not None:
            return len(await self.recv(min(n, 1 << 18)))
        sock = self.sock
        try:
            while True:
                try:
                    return sock.recv_into(_SCRATCH_VIEW, min(n, len(_SCRATCH)))
                except BlockingIOError:
                    await trio.lowlevel.wait_readable(sock)
        except OSError as exc:
            raise LoadError(_os_kind(exc), str(exc)) from None

    # --- answers ----------------------------------------------------------------------------------------

    async def read_head(self) -> wire.Head:
        """The next response head, 1xx other than 101 skipped. closed / reset / bad_response."""
        fresh = True
        while True:
            i = self.buf.find(b"\r\n\r\n")
            if i >= 0:
                raw = bytes(self.buf[:i])
                del self.buf[: i + 4]
                try:
                    head = wire.parse_head(raw)
                except ValueError as exc:
                    raise LoadError(wire.BAD_RESPONSE, str(exc)) from None
                if 100 <= head.status < 200 and head.status != 101:
                    continue
                self.used += 1
                return head
            if len(self.buf) > MAX_HEAD:
                raise LoadError(wire.BAD_RESPONSE, "response head over 64 KiB")
            data = await self.recv()
            if not data:
                raise LoadError(wire.CLOSED, "closed before the answer", idle=fresh and not self.buf)
            fresh = False
            self.buf += data

    async def read_body(self, head: wire.Head, method: str = "GET", keep: int = 0, on_data=None) -> tuple[int, bytes]:
        """Read one body to its end: (its length, up to `keep` bytes of it). `on_data(bytes)` sees every piece
        (then pieces are real bytes, not counted into the scratch buffer). closed when it ends short."""
        if not head.has_body(method):
            return 0, b""
        kept = bytearray()
        total = 0

        def take(piece: bytes) -> None:
            nonlocal total
            total += len(piece)
            if keep and len(kept) < keep:
                kept.extend(piece[: keep - len(kept)])
            if on_data is not None:
                on_data(piece)

        if head.chunked:
            dec = wire.Chunked()
            data, self.buf = bytes(self.buf), bytearray()
            while True:
                try:
                    piece = dec.feed(data)
                except ValueError as exc:
                    raise LoadError(wire.BAD_RESPONSE, str(exc)) from None
                if piece:
                    take(piece)
                if dec.done:
                    self.buf += dec.rest
                    return total, bytes(kept)
                data = await self.recv()
                if not data:
                    raise LoadError(wire.CLOSED, "closed inside a chunked body")
        if head.length >= 0:
            left = head.length
            have = min(left, len(self.buf))
            if have:
                take(bytes(self.buf[:have]))
                del self.buf[:have]
                left -= have
            while left > 0:
                if keep or on_data is not None:
                    data = await self.recv(min(left, 1 << 18))
                    if data:
                        take(data)
                    n = len(data)
                else:
                    n = await self._discard(left)
                    total += n
                if not n:
                    raise LoadError(wire.CLOSED, f"closed {left} bytes short of the body")
                left -= n
            return total, bytes(kept)
        # Neither: the body runs until the server closes (RFC 9112 6.3 item 8).
        if self.buf:
            take(bytes(self.buf))
            self.buf.clear()
        while data := await self.recv():
            take(data)
        head.close = True
        return total, bytes(kept)

    async def response(
        self, method: str = "GET", on_data=None, keep: int | None = None
    ) -> tuple[wire.Head, int, bytes]:
        """One whole answer: (head, body length, kept body). By default only error answers keep their body's
        start, for the edge code inside; `keep=N` keeps up to N bytes of any body."""
        head = await self.read_head()
        if keep is None:
            keep = KEEP_BODY if head.status >= 400 and head.edge_error is None else 0
        total, body = await self.read_body(head, method, keep, on_data)
        return head, total, body

    async def read_frame(self) -> tuple[int, bytes]:
        """The next WebSocket frame: (opcode, payload)."""
        while True:
            got = wire.ws_parse(self.buf)
            if got is not None:
                opcode, payload, used = got
                del self.buf[:used]
                return opcode, payload
            data = await self.recv()
            if not data:
                raise LoadError(wire.CLOSED, "closed inside a WebSocket session")
            self.buf += data


class Slot:
    """The keep-alive connection one pool worker (or closed-loop user) reuses from request to request."""

    __slots__ = ("conn",)

    def __init__(self) -> None:
        self.conn: Conn | None = None

    def drop(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None
