"""A mixed load against a running edge that records everything a deploy could drop.

A zero-downtime deploy is proved by a client that notices every failure, so this one is strict: raw
sockets with h11 on the client side (no HTTP library to retry or pool behind our back), the WebSocket
protocol of the `websockets` package driven over those sockets (its sans-I/O `ClientProtocol`), and
one record for every request, stream and tunnel.

The load, all at once, each kind in its own tasks, every wait bounded:

  keep-alive GET clients  one connection reused for every request, each client at its own pace (a slow
                          one leaves its connection idle long enough for a draining worker to close it)
  new-connection GETs     a fresh connection per request, `Connection: close`
  SSE streams             /sse on the backend: an event every 100 ms for as long as the stream lives
  WebSocket sessions      the echo server of tests/ws_echo.py: a message every 100 ms, each echoed
  uploads                 100 MiB POSTs to /upload, streamed at a bounded rate (several seconds each);
                          the backend answers with the number of bytes it received

A stream or tunnel that ends is replaced by a new one at once, so every generation of a deploy gets
some. What is recorded:

  failed    a non-2xx answer, a timeout, or a transport error that is not one of the two below
  refused   ECONNREFUSED on a connect
  resets    ECONNRESET on a connect or in the middle of an exchange
  retries   RFC 9112 section 9.3.1: "A user agent MAY automatically retry [...] a connection [that]
            closed before receiving any bytes of the response": a GET sent on a *reused* keep-alive
            connection that was closed (EOF, reset or broken pipe) before any response byte is sent
            again, once, on a new connection, and counted here, not as a failure; its retry is held to
            the rules above
  sessions  every SSE stream and WebSocket session: when it opened, when it was closed and by whom
            ("edge": the connection ended under it; "backend": an end of stream or a close frame;
            "client": the harness stopped), how ("eof", "reset", "close-frame", "end", "stopped"), how
            many events or echoes it carried and the longest gap between two
  uploads   every upload: when it started and ended, bytes sent, bytes the backend says it received

`python -m tests.deployload --port P --http-host H --ws-host W --seconds S` runs it against any edge and
prints the report as JSON.
"""

from __future__ import annotations

import errno
import json
import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, field

import h11
import trio
from websockets.client import ClientProtocol
from websockets.frames import Opcode
from websockets.http11 import Response
from websockets.uri import parse_uri

READ = 1 << 16
UPLOAD_CHUNK = b"u" * (256 << 10)


@dataclass(frozen=True)
class Target:
    """Where the load goes: the edge's HTTP port on 127.0.0.1, and the Host of each sandbox
    (`<port>-<sandbox>.<domain>`) serving tests/backends.py's Backend and tests/ws_echo.py."""

    port: int
    http_host: str
    ws_host: str
    address: str = "127.0.0.1"


@dataclass(frozen=True)
class Mix:
    """How much of each kind. Paces are seconds between one client's requests."""

    keepalive_paces: tuple[float, ...] = (0.01, 0.05, 0.3, 1.0)
    new_connection_clients: int = 2
    new_connection_pace: float = 0.05
    sse_streams: int = 3
    ws_sessions: int = 3
    uploads: int = 1
    upload_bytes: int = 100 << 20
    upload_rate: float = 32 << 20  # bytes per second: 100 MiB take about 3 s
    interval: float = 0.1  # between two SSE events (the backend's gap) and two WebSocket messages
    request_timeout: float = 15.0  # a GET, a response head, a connect, a WebSocket handshake


@dataclass
class Failure:
    at: float  # time.monotonic()
    client: str  # "keepalive", "new", "sse", "ws", "upload"
    category: str  # "failed", "refused", "reset"
    detail: str


@dataclass
class Session:
    kind: str  # "sse" or "ws"
    started: float  # the connect began
    opened: float = 0.0  # 200 (SSE) or 101 (WebSocket) received
    closed: float | None = None
    closed_by: str = ""  # "edge", "backend", "client"
    how: str = ""  # "eof", "reset", "close-frame", "end", "stopped"
    messages: int = 0  # SSE events, or WebSocket echoes
    unanswered: int = 0  # WebSocket: messages sent but not echoed when it closed
    max_gap: float = 0.0  # the longest time between two events or echoes (from opened)
    last: float = 0.0
    local_port: int = 0

    def alive(self, at: float) -> bool:
        return self.opened > 0 and self.opened <= at and (self.closed is None or self.closed > at)


@dataclass
class Upload:
    started: float
    finished: float | None = None
    sent: int = 0
    received: int | None = None  # what the backend says it read
    status: int = 0
    error: str = ""


@dataclass
class Report:
    requests: int = 0  # answered 2xx (retries included)
    keepalive_requests: int = 0
    new_connection_requests: int = 0
    retries: int = 0
    connection_close: int = 0  # keep-alive responses that said Connection: close
    failures: list[Failure] = field(default_factory=list)
    sessions: list[Session] = field(default_factory=list)
    uploads: list[Upload] = field(default_factory=list)
    started: float = 0.0
    stopped: float = 0.0

    def of(self, category: str) -> list[Failure]:
        return [f for f in self.failures if f.category == category]

    @property
    def failed(self) -> list[Failure]:
        return self.of("failed")

    @property
    def refused(self) -> list[Failure]:
        return self.of("refused")

    @property
    def resets(self) -> list[Failure]:
        return self.of("reset")

    def summary(self) -> dict:
        """The counts, for a test's message and the command line."""
        by: dict[str, int] = {}
        for s in self.sessions:
            key = f"{s.kind} {s.closed_by or 'open'} {s.how}".strip()
            by[key] = by.get(key, 0) + 1
        done = [u for u in self.uploads if u.finished is not None]
        return {
            "seconds": round(self.stopped - self.started, 1),
            "requests": self.requests,
            "keepalive_requests": self.keepalive_requests,
            "new_connection_requests": self.new_connection_requests,
            "retries": self.retries,
            "connection_close": self.connection_close,
            "failed": len(self.failed),
            "refused": len(self.refused),
            "resets": len(self.resets),
            "sessions": by,
            "sse_events": sum(s.messages for s in self.sessions if s.kind == "sse"),
            "ws_echoes": sum(s.messages for s in self.sessions if s.kind == "ws"),
            "max_gap": round(max((s.max_gap for s in self.sessions), default=0.0), 3),
            "uploads_completed": len(done),
            "uploads_bytes": sum(u.received or 0 for u in done),
            "first_failures": [asdict(f) for f in self.failures[:10]],
        }


class Dropped(Exception):
    """A transport error, classified: `kind` is "refused", "reset", "eof", "epipe", "timeout" or
    "protocol"; `answered` says whether any byte of the response had arrived."""

    def __init__(self, kind: str, detail: str = "", answered: bool = False) -> None:
        super().__init__(f"{kind}: {detail}" if detail else kind)
        self.kind = kind
        self.answered = answered

    @property
    def category(self) -> str:
        return {"refused": "refused", "reset": "reset"}.get(self.kind, "failed")


def _classify(exc: BaseException) -> Dropped:
    cause = exc.__cause__ if isinstance(exc, trio.BrokenResourceError | trio.ClosedResourceError) else exc
    if isinstance(cause, ConnectionResetError):
        return Dropped("reset", str(cause))
    if isinstance(cause, BrokenPipeError):
        return Dropped("epipe", str(cause))
    if isinstance(cause, ConnectionRefusedError):
        return Dropped("refused", str(cause))
    if isinstance(cause, OSError) and cause.errno == errno.ECONNRESET:
        return Dropped("reset", str(cause))
    return Dropped("broken", repr(cause))


async def connect(target: Target) -> trio.SocketStream:
    """A TCP connection to the edge; refused and reset raise Dropped with their own kind."""
    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        await sock.connect((target.address, target.port))
    except OSError as exc:
        sock.close()
        raise _classify(exc) from exc
    return trio.SocketStream(sock)


class Client:
    """One HTTP/1.1 connection, h11 on the client side, with the facts the retry rule needs."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.h11 = h11.Connection(h11.CLIENT)
        self.exchanges = 0  # completed on this connection: > 0 means the next one reuses it
        self.answered = False  # a byte of the current response has arrived
        self.eof = False

    async def send(self, *events: h11.Event) -> None:
        data = b"".join(self.h11.send(e) or b"" for e in events)
        try:
            await self.stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise _dropped(exc, self.answered) from exc

    async def next_event(self) -> h11.Event:
        while True:
            try:
                event = self.h11.next_event()
            except h11.RemoteProtocolError as exc:
                # the body cut short by a close, or bytes that are no HTTP
                raise Dropped("eof" if self.eof else "protocol", str(exc), self.answered) from exc
            if event is not h11.NEED_DATA:
                return event
            try:
                data = await self.stream.receive_some(READ)
            except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                raise _dropped(exc, self.answered) from exc
            if data:
                self.answered = True
            else:
                self.eof = True
            if not data and not self.answered:
                raise Dropped("eof", "closed before any response byte")
            self.h11.receive_data(data)

    async def response(self) -> tuple[h11.Response, bytes]:
        """The whole response to the request just sent."""
        head = await self.next_event()
        while type(head) is h11.InformationalResponse:
            head = await self.next_event()
        if type(head) is not h11.Response:
            raise Dropped("protocol", f"expected a response, got {head!r}", self.answered)
        body = bytearray()
        while True:
            event = await self.next_event()
            if type(event) is h11.Data:
                body += event.data
            elif type(event) is h11.EndOfMessage:
                return head, bytes(body)
            else:
                raise Dropped("protocol", f"unexpected {event!r}", True)

    def reusable(self) -> bool:
        if self.h11.our_state is h11.DONE and self.h11.their_state is h11.DONE:
            self.h11.start_next_cycle()
            self.exchanges += 1
            self.answered = False
            return True
        return False

    async def aclose(self) -> None:
        with trio.CancelScope(shield=True):
            await self.stream.aclose()


def _dropped(exc: BaseException, answered: bool) -> Dropped:
    d = _classify(exc)
    d.answered = answered
    return d


def _says_close(head: h11.Response) -> bool:
    return any(n == b"connection" and b"close" in v.lower() for n, v in head.headers)


class Load:
    """The running load: `report` fills in as it goes. Use `running()` to start and stop it."""

    def __init__(self, target: Target, mix: Mix | None = None) -> None:
        self.target = target
        self.mix = mix or Mix()
        self.report = Report()
        self._stopping = False

    # -- bookkeeping ---------------------------------------------------------------------------------

    def _fail(self, client: str, exc: Dropped | str, category: str = "failed") -> None:
        if self._stopping:
            return
        if isinstance(exc, Dropped):
            category, detail = exc.category, str(exc)
        else:
            detail = exc
        self.report.failures.append(Failure(time.monotonic(), client, category, detail))

    def sessions(self, kind: str | None = None) -> list[Session]:
        return [s for s in self.report.sessions if kind is None or s.kind == kind]

    # -- plain requests ------------------------------------------------------------------------------

    def _get(self, target: str, close: bool = False, accept: str = "*/*") -> h11.Request:
        headers = [("host", self.target.http_host), ("user-agent", "deployload"), ("accept", accept)]
        if close:
            headers.append(("connection", "close"))
        return h11.Request(method="GET", target=target, headers=headers)

    async def _exchange(self, client: Client, request: h11.Request) -> h11.Response:
        with trio.fail_after(self.mix.request_timeout):
            await client.send(request, h11.EndOfMessage())
            head, _ = await client.response()
        return head

    async def keepalive_client(self, index: int, pace: float) -> None:
        """GETs on one reused connection; a new one only when the edge closes it."""
        client: Client | None = None
        n = 0
        try:
            while True:
                n += 1
                request = self._get(f"/echo?ka={index}&n={n}")
                for attempt in (1, 2):
                    try:
                        if client is None:
                            with trio.fail_after(self.mix.request_timeout):
                                client = Client(await connect(self.target))
                        reused = client.exchanges > 0
                        head = await self._exchange(client, request)
                    except (Dropped, trio.TooSlowError) as exc:
                        d = exc if isinstance(exc, Dropped) else Dropped("timeout", "", True)
                        allowed = (
                            attempt == 1
                            and client is not None
                            and reused
                            and not d.answered
                            and d.kind in ("eof", "reset", "epipe")
                        )
                        if client is not None:
                            await client.aclose()
                            client = None
                        if allowed:
                            self.report.retries += 1
                            continue
                        self._fail("keepalive", d)
                        break
                    if not 200 <= head.status_code < 300:
                        self._fail("keepalive", f"status {head.status_code}")
                    else:
                        self.report.requests += 1
                        self.report.keepalive_requests += 1
                    if _says_close(head):
                        self.report.connection_close += 1
                    if not client.reusable():
                        await client.aclose()
                        client = None
                    break
                await trio.sleep(pace)
        finally:
            if client is not None:
                await client.aclose()

    async def new_connection_client(self, index: int) -> None:
        n = 0
        while True:
            n += 1
            client: Client | None = None
            try:
                with trio.fail_after(self.mix.request_timeout):
                    client = Client(await connect(self.target))
                head = await self._exchange(client, self._get(f"/echo?new={index}&n={n}", close=True))
                if 200 <= head.status_code < 300:
                    self.report.requests += 1
                    self.report.new_connection_requests += 1
                else:
                    self._fail("new", f"status {head.status_code}")
            except Dropped as exc:
                self._fail("new", exc)
            except trio.TooSlowError:
                self._fail("new", "timeout")
            finally:
                if client is not None:
                    await client.aclose()
            await trio.sleep(self.mix.new_connection_pace)

    # -- streams and tunnels ---------------------------------------------------------------------------

    async def _slot(self, kind: str, run) -> None:
        """Keep one session of `kind` open: a new one as soon as the last ends."""
        while True:
            session = Session(kind, time.monotonic())
            try:
                await run(session)
            except Dropped as exc:
                if session.opened:
                    self._closed(session, "edge", exc.kind)
                else:  # never established: a failed request, not a session
                    self._fail(kind, exc)
            except trio.TooSlowError:
                if session.opened:
                    self._closed(session, "client", "timeout")
                    self._fail(kind, f"{kind} stream stalled")
                else:
                    self._fail(kind, "timeout")
            finally:
                if session.opened and session.closed is None:
                    self._closed(session, "client", "stopped")
            if not session.opened:
                await trio.sleep(0.1)  # a failed attempt: do not spin

    def _closed(self, session: Session, by: str, how: str) -> None:
        session.closed = time.monotonic()
        session.closed_by = by
        session.how = how

    def _tick(self, session: Session) -> None:
        now = time.monotonic()
        session.max_gap = max(session.max_gap, now - (session.last or session.opened))
        session.last = now
        session.messages += 1

    async def sse_session(self, session: Session) -> None:
        with trio.fail_after(self.mix.request_timeout):
            client = Client(await connect(self.target))
        try:
            session.local_port = client.stream.socket.getsockname()[1]
            gap = self.mix.interval
            request = self._get(f"/sse?n=100000000&gap={gap}", accept="text/event-stream")
            with trio.fail_after(self.mix.request_timeout):
                await client.send(request, h11.EndOfMessage())
                head = await client.next_event()
            if type(head) is not h11.Response or head.status_code != 200:
                raise Dropped("protocol", f"sse answer {head!r}")
            session.opened = time.monotonic()
            self.report.sessions.append(session)
            pending = b""
            while True:
                # An event is due every `gap`: a stream silent for 10 s is stalled, not alive.
                with trio.fail_after(10):
                    event = await client.next_event()
                if type(event) is h11.EndOfMessage:
                    self._closed(session, "backend", "end")
                    return
                if type(event) is not h11.Data:
                    raise Dropped("protocol", repr(event), True)
                pending += event.data
                while b"\n\n" in pending:
                    _, pending = pending.split(b"\n\n", 1)
                    self._tick(session)
        finally:
            await client.aclose()

    async def ws_session(self, session: Session) -> None:
        with trio.fail_after(self.mix.request_timeout):
            stream = await connect(self.target)
        try:
            session.local_port = stream.socket.getsockname()[1]
            proto = ClientProtocol(parse_uri(f"ws://{self.target.ws_host}/"))
            proto.send_request(proto.connect())

            async def flush() -> None:
                data = b"".join(proto.data_to_send())
                if data:
                    try:
                        await stream.send_all(data)
                    except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                        raise _dropped(exc, True) from exc

            async def receive() -> list:
                try:
                    data = await stream.receive_some(READ)
                except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                    raise _dropped(exc, True) from exc
                if data:
                    proto.receive_data(data)
                else:
                    proto.receive_eof()
                events = proto.events_received()
                if not data and not events:
                    raise Dropped("eof", "", True)
                return events

            with trio.fail_after(self.mix.request_timeout):
                await flush()
                events: list = []
                while not any(isinstance(e, Response) for e in events):
                    events += await receive()
            response = next(e for e in events if isinstance(e, Response))
            if response.status_code != 101 or proto.handshake_exc is not None:
                raise Dropped("protocol", f"websocket answer {response.status_code}: {proto.handshake_exc}")
            session.opened = time.monotonic()
            self.report.sessions.append(session)
            # One task: send a message every `interval`, and between sends read the echoes.
            sent = echoed = 0
            next_send = session.opened
            try:
                while True:
                    now = time.monotonic()
                    if now >= next_send:
                        sent += 1
                        proto.send_text(str(sent).encode())
                        await flush()
                        next_send += self.mix.interval
                    if now - (session.last or session.opened) > 10:
                        raise trio.TooSlowError  # no echo for 10 s: stalled, not alive
                    got: list = []
                    with trio.move_on_after(max(0.0, next_send - time.monotonic())):
                        got = await receive()
                    for frame in got:
                        if frame.opcode is Opcode.TEXT:
                            echoed = int(frame.data)
                            self._tick(session)
                        elif frame.opcode is Opcode.CLOSE:
                            self._closed(session, "backend", "close-frame")
                            return
                    await flush()  # pongs
            finally:
                session.unanswered = sent - echoed
        finally:
            with trio.CancelScope(shield=True):
                await stream.aclose()

    # -- uploads -------------------------------------------------------------------------------------

    async def upload_client(self) -> None:
        size, rate = self.mix.upload_bytes, self.mix.upload_rate
        while True:
            upload = Upload(time.monotonic())
            self.report.uploads.append(upload)
            client: Client | None = None
            try:
                with trio.fail_after(self.mix.request_timeout + size / rate * 2):
                    client = Client(await connect(self.target))
                    await client.send(
                        h11.Request(
                            method="POST",
                            target="/upload",
                            headers=[
                                ("host", self.target.http_host),
                                ("content-length", str(size)),
                                ("content-type", "application/octet-stream"),
                            ],
                        )
                    )
                    t0 = time.monotonic()
                    while upload.sent < size:
                        left = size - upload.sent
                        piece = UPLOAD_CHUNK if left >= len(UPLOAD_CHUNK) else UPLOAD_CHUNK[:left]
                        await client.send(h11.Data(data=piece))
                        upload.sent += len(piece)
                        ahead = upload.sent / rate - (time.monotonic() - t0)
                        if ahead > 0:
                            await trio.sleep(ahead)
                    await client.send(h11.EndOfMessage())
                    head, body = await client.response()
                upload.status = head.status_code
                upload.finished = time.monotonic()
                if 200 <= head.status_code < 300:
                    upload.received = json.loads(body)["body_len"]
                    self.report.requests += 1
                    if upload.received != size:
                        self._fail("upload", f"the backend received {upload.received} of {size} bytes")
                else:
                    self._fail("upload", f"status {head.status_code}")
            except Dropped as exc:
                upload.error = f"after {upload.sent} bytes: {exc}"
                self._fail("upload", Dropped(exc.kind, upload.error, exc.answered))
            except trio.TooSlowError:
                upload.error = f"timeout after {upload.sent} bytes"
                self._fail("upload", upload.error)
            finally:
                if client is not None:
                    await client.aclose()
            if upload.error:
                await trio.sleep(0.1)  # do not spin on a refused port

    # -- all of it -------------------------------------------------------------------------------------

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        """Every client, until cancelled."""
        self.report.started = time.monotonic()
        async with trio.open_nursery() as nursery:
            for i, pace in enumerate(self.mix.keepalive_paces):
                nursery.start_soon(self.keepalive_client, i, pace)
            for i in range(self.mix.new_connection_clients):
                nursery.start_soon(self.new_connection_client, i)
            for _ in range(self.mix.sse_streams):
                nursery.start_soon(self._slot, "sse", self.sse_session)
            for _ in range(self.mix.ws_sessions):
                nursery.start_soon(self._slot, "ws", self.ws_session)
            for _ in range(self.mix.uploads):
                nursery.start_soon(self.upload_client)
            task_status.started()

    def stopping(self) -> None:
        """From here on, what the stop itself cuts is not recorded as a failure."""
        self._stopping = True
        self.report.stopped = time.monotonic()


@asynccontextmanager
async def running(target: Target, mix: Mix | None = None) -> AsyncIterator[Load]:
    """`async with running(target) as load:` the load runs inside the block and stops at its end;
    `load.report` holds what happened. An upload in flight when the block ends is not counted."""
    load = Load(target, mix)
    async with trio.open_nursery() as nursery:
        await nursery.start(load.run)
        try:
            yield load
        finally:
            load.stopping()
            nursery.cancel_scope.cancel()
    # An upload the stop cut is no upload; one that failed before stays (its failure is recorded).
    load.report.uploads = [u for u in load.report.uploads if u.finished is not None or u.error]


async def _main(args) -> None:
    target = Target(args.port, args.http_host, args.ws_host, args.address)
    async with running(target) as load:
        await trio.sleep(args.seconds)
    print(json.dumps(load.report.summary(), indent=2))


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--address", default="127.0.0.1")
    parser.add_argument("--http-host", required=True, help="<port>-<sandbox>.<domain> of a tests/backends.py Backend")
    parser.add_argument("--ws-host", required=True, help="<port>-<sandbox>.<domain> of tests/ws_echo.py")
    parser.add_argument("--seconds", type=float, default=10.0)
    trio.run(_main, parser.parse_args())
