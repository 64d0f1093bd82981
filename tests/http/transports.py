"""A second client-side transport, and an edge whose client connections are socketpairs.

`PairTransport` is another implementation of `edge.http.client.Transport`: one end of a
`socket.socketpair()`, driven through the socket object's own methods (`sock.recv`, `sock.send`) and
the same `Deadlines` waits, with `splice_fd = -1`, so every body is copied through Python, as over a TLS
transport without kTLS. With `record=N` it also reads the way an SSL socket does: it takes whatever
the socket has, hands it out at most N bytes at a time and reports the rest as `pending()`, so the
connection loop must not wait on the socket while a request sits in the transport.

`PairEdge` is the HTTP core without a listener: a `ServerContext`, its deadline sweep and pool reaper,
and `conn.serve_connection` on the edge's end of a socketpair per `connect()`; the test holds the other
end (`Peer`). The same test body runs over `PairTransport` and over the production `SocketTransport`
(on a socketpair too). The sandbox side stays real TCP on loopback: `Sandbox` is a scripted one, as in
tests/scripted.py, that also counts its open connections and can answer before a request body ends.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from functools import partial

import h11
import trio
from trio.testing import wait_all_tasks_blocked

from edge import config as config_mod
from edge.catalog.model import Sandbox as Record
from edge.catalog.model import Snapshot
from edge.catalog.store import LiveCatalog
from edge.http.client import ClientSide, Listener, SocketTransport
from edge.http.conn import serve_connection
from edge.http.context import ServerContext
from edge.http.deadlines import Deadlines, Wait
from edge.http.loop import OwnListeners
from tests.scripted import CLOSE

HOLD = object()  # in a script: say nothing more, and wait until the edge closes the connection
ECHO = object()  # in a script: send back what comes until EOF, then "bye", then close
PARK = object()  # in a script: answer nothing; the test writes the answer itself (`Sandbox.parked`)
WATCHDOG = 3600.0
TRANSPORTS = ["pair", "socket"]
DOMAIN = "sandbox.localhost"


class PairTransport:
    """edge.http.client.Transport over one end of a socketpair, through the socket's methods."""

    __slots__ = ("sock", "fd", "splice_fd", "rd", "wr", "_d", "_record", "_rest")

    def __init__(self, sock: socket.socket, deadlines: Deadlines, record: int = 0) -> None:
        sock.setblocking(False)
        self.sock = sock
        self.fd = sock.fileno()
        self.splice_fd = -1  # no splice: bodies are copied, as over TLS without kTLS
        self.rd = Wait(self.fd)
        self.wr = Wait(self.fd)
        self._d = deadlines
        self._record = record
        self._rest = b""

    def pending(self) -> bool:
        return bool(self._rest)

    async def recv(self, max_bytes: int, deadline: float | None, kind: str) -> bytes:
        if not self._record:
            while True:
                try:
                    return self.sock.recv(max_bytes)
                except BlockingIOError:
                    await self._d.readable(self.rd, deadline, kind)
        if not self._rest:
            while True:
                try:
                    self._rest = self.sock.recv(1 << 16)
                    break
                except BlockingIOError:
                    await self._d.readable(self.rd, deadline, kind)
            if not self._rest:
                return b""
        n = min(max_bytes, self._record)
        data, self._rest = self._rest[:n], self._rest[n:]
        return data

    async def send(self, data: bytes | memoryview) -> None:
        view = memoryview(data)
        while view:
            try:
                sent = self.sock.send(view)
            except BlockingIOError:
                await self._d.writable(self.wr)
                continue
            view = view[sent:]

    def shutdown(self, how: int) -> None:
        self.sock.shutdown(how)

    def close(self) -> None:
        self.sock.close()


@dataclass
class Response:
    status: int = 0
    headers: dict[bytes, bytes] = field(default_factory=dict)
    body: bytes = b""
    #: The response ended as its framing says (False: the connection closed or broke before).
    complete: bool = False


class Peer:
    """The test's end of one client connection, and the edge's task serving the other end."""

    def __init__(self, ours: socket.socket, theirs: socket.socket, client: ClientSide) -> None:
        self.stream = trio.SocketStream(trio.socket.from_stdlib_socket(ours))
        self.edge_sock = theirs
        self.client = client
        self.done = trio.Event()
        self.ended = 0.0
        self.buf = b""

    async def send(self, data: bytes) -> bool:
        """False when the edge has closed its end already."""
        try:
            await self.stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return False
        return True

    async def recv(self) -> bytes:
        """The next bytes the edge sent; b"" at EOF (or a reset)."""
        if self.buf:
            data, self.buf = self.buf, b""
            return data
        try:
            return await self.stream.receive_some(1 << 16)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return b""

    async def read_response(self, *, method: str = "GET", head_only: bool = False) -> Response:
        """One response (its head only with `head_only`); bytes after it stay for the next call."""
        h = h11.Connection(h11.CLIENT)
        h.send(h11.Request(method=method, target="/", headers=[("host", "x")]))
        h.send(h11.EndOfMessage())
        out = Response()
        body = bytearray()
        eof = False
        while True:
            try:
                event = h.next_event()
            except h11.RemoteProtocolError:
                out.body = bytes(body)
                return out
            if event is h11.NEED_DATA:
                if eof:
                    out.body = bytes(body)
                    return out
                data = await self.recv()
                eof = not data
                h.receive_data(data)
            elif type(event) is h11.Response:
                out.status = event.status_code
                out.headers = dict(event.headers)
                if head_only:
                    return out
            elif type(event) is h11.Data:
                body += event.data
            elif type(event) is h11.EndOfMessage:
                self.buf = h.trailing_data[0]
                out.body = bytes(body)
                out.complete = True
                return out
            elif type(event) is h11.ConnectionClosed:
                out.body = bytes(body)
                return out

    async def read_to_eof(self) -> bytes:
        out = b""
        while True:
            data = await self.recv()
            if not data:
                return out
            out += data

    def shutdown_write(self) -> None:
        self.stream.socket.shutdown(socket.SHUT_WR)

    async def close(self) -> None:
        await self.stream.aclose()


class PairEdge:
    """A ServerContext serving socketpair connections (see the module docstring)."""

    def __init__(self, ctx: ServerContext, transport: str, record: int = 0) -> None:
        self.ctx = ctx
        self.transport = transport
        self.record = record
        self.peers: list[Peer] = []
        self.nursery: trio.Nursery | None = None
        self.stopped = trio.Event()

    def host(self, port: int, sandbox: str) -> str:
        return f"{port}-{sandbox}.{DOMAIN}"

    async def run(self, task_status=trio.TASK_STATUS_IGNORED) -> None:
        try:
            async with trio.open_nursery() as nursery:
                self.nursery = nursery
                nursery.start_soon(self.ctx.deadlines.run)
                nursery.start_soon(self.ctx.pool.run_reaper)
                nursery.start_soon(_watchdog)
                task_status.started()
        finally:
            self.ctx.pool.close_all()
            self.stopped.set()

    async def connect(self) -> Peer:
        """A new client connection: the edge serves one end, the returned Peer is the other."""
        ours, theirs = socket.socketpair()
        theirs.setblocking(False)
        ctx = self.ctx
        if self.transport == "socket":
            io = SocketTransport(theirs, ctx.deadlines)
        else:
            io = PairTransport(theirs, ctx.deadlines, self.record)
        client = ClientSide(io, b"127.0.0.1", Listener(b"http", False, b"8080"), ctx.http.max_head_bytes)
        peer = Peer(ours, theirs, client)
        self.peers.append(peer)

        async def serve() -> None:
            try:
                await serve_connection(ctx, client)
            finally:
                peer.ended = trio.current_time()
                peer.done.set()

        assert self.nursery is not None
        self.nursery.start_soon(serve)
        return peer

    async def aclose(self) -> None:
        assert self.nursery is not None
        self.nursery.cancel_scope.cancel()
        await self.stopped.wait()
        for peer in self.peers:
            peer.edge_sock.close()
            await peer.close()


async def _watchdog() -> None:
    """Fail the test when it is still going after a virtual hour: under the autojump clock a wait that
    nothing ends (a deadline removed) would otherwise spin the clock forever."""
    await trio.sleep(WATCHDOG)
    raise trio.TooSlowError(f"still running after {WATCHDOG} virtual seconds")


async def open_edge(
    nursery: trio.Nursery,
    sandboxes: list[Record],
    *,
    transport: str = "pair",
    fast_lane: bool = True,
    record: int = 0,
    **http: object,
) -> PairEdge:
    """A PairEdge with these sandboxes in its catalog and `http` config overrides."""
    cfg = config_mod.load(env={}, overrides={"http": {"fast_lane": fast_lane, **http}, "access_log": False})
    ctx = ServerContext(cfg, LiveCatalog(Snapshot(list(sandboxes), 1)), OwnListeners())
    edge = PairEdge(ctx, transport, record)
    await nursery.start(edge.run)
    return edge


def host(port: int, sandbox: str = "gamma") -> str:
    return f"{port}-{sandbox}.{DOMAIN}"


def get(port: int, sandbox: str = "gamma", path: str = "/", version: str = "1.1", extra: str = "") -> bytes:
    return f"GET {path} HTTP/{version}\r\nHost: {host(port, sandbox)}\r\n{extra}\r\n".encode()


def last(port: int, sandbox: str = "gamma", path: str = "/") -> bytes:
    """A request that ends the connection after its answer."""
    return get(port, sandbox, path, extra="Connection: close\r\n")


async def released(edge: PairEdge, *peers: Peer) -> None:
    """Each connection ended, its descriptor closed; no slot, exchange or deadline left behind."""
    with trio.fail_after(600):
        for peer in peers:
            await peer.done.wait()
    await wait_all_tasks_blocked()
    for peer in peers:
        assert peer.edge_sock.fileno() == -1
    assert edge.ctx.inflight == {}
    assert edge.ctx.active == {}
    assert edge.ctx.deadlines.table == {}


class Sandbox:
    """A scripted sandbox on real loopback TCP: per request, the next script of bytes to send, float
    pauses, CLOSE (close here), HOLD (say nothing and wait for the edge to close), ECHO (a tunnel) or
    PARK (the test answers).

    `early`: answer as soon as a request head is in, without reading its body (then read and drop
    whatever comes until the edge closes; CLOSE is then a half-close, as a closing server lingers).
    `connections` counts the connections accepted, `open` those not yet closed."""

    def __init__(self, host: str = "127.0.0.4") -> None:
        self.host = host
        self.scripts: list[list] = []
        self.requests: list[bytes] = []
        self.connections = 0
        self.open = 0
        self.early = False
        self.port = 0
        #: The connections a PARK step left for the test to answer on, in order.
        self.parked: list[trio.SocketStream] = []

    async def start(self, nursery: trio.Nursery, port: int = 0) -> Sandbox:
        listeners = await nursery.start(partial(trio.serve_tcp, self._serve, port, host=self.host))
        self.port = listeners[0].socket.getsockname()[1]
        return self

    async def _serve(self, stream: trio.SocketStream) -> None:
        self.connections += 1
        self.open += 1
        try:
            async with stream:
                await self._script(stream)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the edge dropped this connection
        finally:
            self.open -= 1

    async def _script(self, stream: trio.SocketStream) -> None:
        buf = b""
        while True:
            while b"\r\n\r\n" not in buf:
                chunk = await stream.receive_some(1 << 16)
                if not chunk:
                    return
                buf += chunk
            end = buf.index(b"\r\n\r\n") + 4
            head, buf = buf[:end], buf[end:]
            if not self.early:
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        n = int(line.split(b":")[1])
                        while len(buf) < n:
                            chunk = await stream.receive_some(1 << 16)
                            if not chunk:
                                return
                            buf += chunk
                        head, buf = head + buf[:n], buf[n:]
            self.requests.append(head)
            for step in self.scripts.pop(0):
                if step is CLOSE:
                    if self.early:  # the body is still coming: a close now would be a reset; half-close
                        await stream.send_eof()
                        await _drain(stream)
                    return
                if step is HOLD:
                    await _drain(stream)
                    return
                if step is PARK:
                    self.parked.append(stream)
                    continue
                if step is ECHO:  # a tunnel: echo until the edge passes the client's half-close on
                    if buf:
                        await stream.send_all(buf)
                    while data := await stream.receive_some(1 << 16):
                        await stream.send_all(data)
                    await stream.send_all(b"bye")
                    return
                if isinstance(step, float):
                    await trio.sleep(step)
                else:
                    await stream.send_all(step)
            if self.early:
                await _drain(stream)
                return


async def _drain(stream: trio.SocketStream) -> None:
    while await stream.receive_some(1 << 16):
        pass
