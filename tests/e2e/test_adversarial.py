"""The adversarial suite's quick half (issue 12): sandboxes that misbehave, and an edge out of descriptors.

Sandbox faults. A scripted sandbox plays one fault per connection: refused, reset in the middle of
the request body or of the response body, garbage instead of a response, a response head that never
ends, a head or a body that drips one byte a second, 100 KB of response headers. Each must end in a
clear answer to the client (502 or 504 with its `x-edge-error` and JSON `error`) while the edge can
still answer, and in the honest signal of truncation once the sandbox's head has gone out; and the
sandbox's connection must be closed by the edge, never pooled: the sandbox watches each connection
after its fault and records whether the edge closed it or sent another request on it, and a request
after the fault must arrive on a new connection. Both lanes.

Descriptors. A real `edge serve` under RLIMIT_NOFILE 128 (soft = hard: edge raises the soft limit to
the hard one): with the connection caps off, a hog takes every descriptor until accepts fail; what
can still be served is (a keep-alive client on a pooled sandbox connection), and once the hog leaves
everything is served again and the edge's descriptors are back where they were. With the default
caps, the hog gets its share and a client from another address is served throughout.

Three bugs found here are fixed: a partial response head no longer restarts its deadline on the fast
lane's hand-over to h11; out of descriptors, a request needing a new sandbox connection gets a 502
instead of a closed connection; and a burst queued while the edge was busy no longer takes every
descriptor before the caps refuse any of it (admission happens as each connection is accepted).

The long half (slowhttptest, a million DNS packets, the soak) is bench/adversarial.py.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import socket
import struct
import subprocess
import sys
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import pytest
import trio

from edge.catalog.model import Sandbox
from tests.conftest import BOTH_LANES, parse_responses
from tests.proc import edge_env, listening, worker_of

SANDBOX_IP = "127.0.0.6"
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
CLOSE = object()  # in a script: the sandbox closes the connection (FIN)
RESET = object()  # in a script: the sandbox resets the connection (RST)
TIMEOUT = 1.0  # response_head_timeout and send_timeout in these tests
MiB = 1 << 20


# --- a sandbox that plays one fault per connection, then watches what the edge does with it --------


@dataclass
class Conn:
    """What happened to one sandbox connection after its script."""

    requests: int = 0
    closed_by_edge: float | None = None  # trio time the edge closed it (EOF or reset seen)
    closed_by_sandbox: bool = False  # its script ended in CLOSE or RESET
    reused: bool = False  # the edge sent another request on it


@dataclass
class Faulty:
    """A sandbox on 127.0.0.6: connection i reads a request head (and its body: all of it, or, when the
    script starts with an int n, its first n bytes) and plays scripts[i]: bytes to send, float pauses,
    CLOSE, RESET. Connections past the scripts answer OK. After its script a connection is watched (kept
    open, read): EOF means the edge closed it; another request on it means the edge reused it."""

    scripts: list[list] = field(default_factory=list)
    conns: list[Conn] = field(default_factory=list)
    port: int = 0

    async def start(self, nursery: trio.Nursery) -> Faulty:
        listeners = await nursery.start(partial(trio.serve_tcp, self._serve, 0, host=SANDBOX_IP))
        self.port = listeners[0].socket.getsockname()[1]
        return self

    async def _serve(self, stream: trio.SocketStream) -> None:
        index = len(self.conns)
        conn = Conn()
        self.conns.append(conn)
        script = self.scripts[index] if index < len(self.scripts) else [OK]
        try:
            async with stream:
                buf = await self._request(stream, b"", script)
                conn.requests += 1
                if script and isinstance(script[0], int):  # the rest of the body is left unread
                    if await self._play(stream, conn, script[1:]):
                        await self._watch(stream, conn, buf)
                    return
                async with trio.open_nursery() as nursery:  # the edge may close it mid-script
                    nursery.start_soon(self._watch, stream, conn, buf, nursery.cancel_scope)
                    if not await self._play(stream, conn, script):
                        nursery.cancel_scope.cancel()
        except (trio.BrokenResourceError, EOFError):
            conn.closed_by_edge = trio.current_time()

    @staticmethod
    async def _play(stream: trio.SocketStream, conn: Conn, script: list) -> bool:
        """The script's steps; False when the connection was closed meanwhile (by the script or the edge)."""
        for step in script:
            if step is CLOSE or step is RESET:
                if step is RESET:
                    stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                conn.closed_by_sandbox = True
                return False
            if isinstance(step, float):
                await trio.sleep(step)
                continue
            try:
                await stream.send_all(step)
            except trio.BrokenResourceError:
                conn.closed_by_edge = conn.closed_by_edge or trio.current_time()
                return False
        return True

    async def _watch(
        self, stream: trio.SocketStream, conn: Conn, buf: bytes, scope: trio.CancelScope | None = None
    ) -> None:
        """Until the edge closes the connection; a request on it meanwhile is a reuse (answered OK)."""
        try:
            while True:
                buf = await self._request(stream, buf, [])
                conn.requests += 1
                conn.reused = True
                await stream.send_all(OK)
        except (trio.BrokenResourceError, EOFError):
            conn.closed_by_edge = trio.current_time()
            if scope is not None:
                scope.cancel()

    @staticmethod
    async def _request(stream: trio.SocketStream, buf: bytes, script: list) -> bytes:
        """Read one request head and its body (or the first n bytes of it); return what follows."""
        while b"\r\n\r\n" not in buf:
            chunk = await stream.receive_some(65536)
            if not chunk:
                raise EOFError
            buf += chunk
        end = buf.index(b"\r\n\r\n") + 4
        head, buf = buf[:end], buf[end:]
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        if script and isinstance(script[0], int):
            length = script[0]
        while len(buf) < length:
            chunk = await stream.receive_some(65536)
            if not chunk:
                raise EOFError
            buf += chunk
        return buf[length:]


@pytest.fixture
async def faulty(nursery):
    return await Faulty().start(nursery)


@pytest.fixture
async def fault_edge(make_edge, faulty):
    return await make_edge(
        [Sandbox("faulty", SANDBOX_IP)],
        http={
            "response_head_timeout": TIMEOUT,
            "send_timeout": TIMEOUT,
            "connect_retry": 0.2,
            "keepalive_timeout": 10.0,
        },
    )


async def exchange(
    edge, port: int, head: str = "GET / HTTP/1.1", body: bytes = b"", seconds: float = 10.0, close: bool = True
) -> tuple[bytes, float]:
    """One request on a new connection (with Connection: close unless `close` is False); everything
    the edge sent until it closed, and how long that took. A body is sent by a second task, so an
    early answer is read meanwhile."""
    stream = await trio.open_tcp_stream("127.0.0.1", edge.port)
    extra = f"Content-Length: {len(body)}\r\n" if body else ""
    extra += "Connection: close\r\n" if close else ""
    t0 = trio.current_time()
    out = b""
    async with stream:
        await stream.send_all(f"{head}\r\nHost: {edge.host(port, 'faulty')}\r\n{extra}\r\n".encode())

        async def upload() -> None:
            view = memoryview(body)
            try:
                for i in range(0, len(view), 65536):
                    await stream.send_all(view[i : i + 65536])
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass  # the edge answered and closed before the body ended

        with trio.fail_after(seconds):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(upload)
                while True:
                    try:
                        chunk = await stream.receive_some(65536)
                    except trio.BrokenResourceError:
                        break
                    if not chunk:
                        break
                    out += chunk
                nursery.cancel_scope.cancel()
    return out, trio.current_time() - t0


def error_of(raw: bytes) -> tuple[int, str, str]:
    """(status, x-edge-error, JSON error) of the one answer in `raw`."""
    [(status, headers, body)] = parse_responses(raw)
    return status, headers.get("x-edge-error", ""), json.loads(body).get("error", "")


async def served_on_a_new_connection(edge, faulty: Faulty) -> None:
    """A good request after the fault: answered 200 on a connection of its own; the fault's connection
    was closed by the edge (within TIMEOUT + 1 s) and never carried another request."""
    before = len(faulty.conns)
    raw, _ = await exchange(edge, faulty.port, "GET /after HTTP/1.1")
    assert raw.startswith(b"HTTP/1.1 200") and raw.endswith(b"ok"), raw[:200]
    assert len(faulty.conns) == before + 1, "the request after the fault went on the fault's connection"
    with trio.fail_after(TIMEOUT + 1):
        while any(c.closed_by_edge is None and not c.closed_by_sandbox for c in faulty.conns[:before]):
            await trio.sleep(0.02)
    assert not any(c.reused for c in faulty.conns)


lanes = pytest.mark.parametrize("lane", BOTH_LANES, indirect=True)


@lanes
async def test_refused_port_gets_502_port_not_open(fault_edge, faulty):
    """Nothing listens on the port: 502 port_not_open after connect_retry; the next request is served."""
    s = socket.socket()
    s.bind((SANDBOX_IP, 0))
    closed_port = s.getsockname()[1]
    s.close()
    raw, took = await exchange(fault_edge, closed_port)
    assert error_of(raw) == (502, "port_not_open", "port_not_open")
    assert took < 2
    await served_on_a_new_connection(fault_edge, faulty)


@lanes
async def test_reset_in_the_middle_of_the_request_body_gets_502(fault_edge, faulty):
    """The sandbox reads 64 KiB of a 4 MiB upload and resets: 502 upstream_error, at once."""
    faulty.scripts = [[65536, RESET]]
    raw, took = await exchange(fault_edge, faulty.port, "POST /up HTTP/1.1", b"u" * (4 * MiB))
    assert error_of(raw) == (502, "upstream_error", "upstream_error")
    assert took < 2
    await served_on_a_new_connection(fault_edge, faulty)


@lanes
async def test_reset_in_the_middle_of_the_response_body_truncates_and_is_not_pooled(fault_edge, faulty):
    """The head went out, then the sandbox resets: the client connection closes short of the declared
    length (no status can be sent any more: truncation is the signal every client reads), although
    the client asked for keep-alive."""
    faulty.scripts = [[b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + b"x" * 1000, 0.1, RESET]]
    raw, took = await exchange(fault_edge, faulty.port, close=False)
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and len(body) == 1000
    assert took < 2
    await served_on_a_new_connection(fault_edge, faulty)


@lanes
@pytest.mark.parametrize(
    "garbage",
    [b"garbage instead of a response\r\n\r\n", b"\x00\xffSSH-2.0\r\n\r\n" * 100, b"HTTP/1.1 2OO OK\r\n\r\n"],
    ids=["text", "binary", "bad-status"],
)
async def test_garbage_instead_of_a_response_gets_502(fault_edge, faulty, garbage):
    """Bytes that are no HTTP response, the connection left open: 502 upstream_error, at once, and the
    edge closes the sandbox connection."""
    faulty.scripts = [[garbage]]
    raw, took = await exchange(fault_edge, faulty.port)
    assert error_of(raw) == (502, "upstream_error", "upstream_error")
    assert took < TIMEOUT
    await served_on_a_new_connection(fault_edge, faulty)


@lanes
async def test_response_head_that_never_ends_gets_504(fault_edge, faulty):
    """A status line and a field, then silence: 504 upstream_timeout after response_head_timeout."""
    faulty.scripts = [[b"HTTP/1.1 200 OK\r\nX-Never: ends\r\n"]]
    raw, took = await exchange(fault_edge, faulty.port)
    assert error_of(raw) == (504, "upstream_timeout", "upstream_timeout")
    assert TIMEOUT * 0.9 <= took < TIMEOUT * 2 + 0.5
    await served_on_a_new_connection(fault_edge, faulty)


@lanes
async def test_response_head_dripping_one_byte_a_second_gets_504(fault_edge, faulty):
    """Each byte of the head a second apart: the deadline is on the whole head, not on each read, so
    504 comes after response_head_timeout (at most twice it: the fast lane's first read, then h11's)."""
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    faulty.scripts = [[step for i in range(len(head)) for step in (head[i : i + 1], 1.0)]]
    raw, took = await exchange(fault_edge, faulty.port)
    assert error_of(raw) == (504, "upstream_timeout", "upstream_timeout")
    assert took < TIMEOUT * 2 + 0.5
    await served_on_a_new_connection(fault_edge, faulty)


@pytest.mark.parametrize(
    "lane",
    [
        "fast",
        "h11",
    ],
    indirect=True,
)
async def test_response_head_deadline_counts_from_the_request(fault_edge, faulty):
    """One byte of the head just before response_head_timeout, then silence: 504 at the deadline
    (README: the sandbox's response head within response_head_timeout), not a second one later."""
    faulty.scripts = [[TIMEOUT * 0.8, b"H"]]
    raw, took = await exchange(fault_edge, faulty.port)
    assert error_of(raw) == (504, "upstream_timeout", "upstream_timeout")
    assert took < TIMEOUT * 1.5, f"504 after {took:.2f} s, response_head_timeout {TIMEOUT} s"


@lanes
async def test_body_dripping_one_byte_a_second_is_streamed_and_released_when_the_client_leaves(fault_edge, faulty):
    """A body one byte a second is relayed byte by byte (bodies have no read deadline: a stream may be
    quiet for hours); when the client leaves, the edge closes the sandbox connection at its next byte
    and never pools it."""
    body = b"0123456789"
    faulty.scripts = [
        [
            b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n",
            *[step for i in range(len(body)) for step in (body[i : i + 1], 1.0)],
        ]
    ]
    stream = await trio.open_tcp_stream("127.0.0.1", fault_edge.port)
    await stream.send_all(f"GET / HTTP/1.1\r\nHost: {fault_edge.host(faulty.port, 'faulty')}\r\n\r\n".encode())
    got = b""
    with trio.fail_after(3.5):  # the head and the first bytes come as the sandbox sends them
        while got.count(b"\r\n\r\n") == 0 or len(got.partition(b"\r\n\r\n")[2]) < 3:
            got += await stream.receive_some(65536)
    assert got.startswith(b"HTTP/1.1 200") and got.partition(b"\r\n\r\n")[2] == b"012"
    await stream.aclose()
    # The first byte written after the client left still goes out (the client's kernel answers it
    # with a reset), the second fails: the edge closes the sandbox side then.
    with trio.fail_after(3.5):
        while faulty.conns[0].closed_by_edge is None:
            await trio.sleep(0.02)
    await served_on_a_new_connection(fault_edge, faulty)


@lanes
async def test_100_kb_of_response_headers_gets_502(fault_edge, faulty):
    """A response head of 100 KB (1,000 fields of 100 bytes), the connection left open: 502."""
    fields = b"".join(b"X-Fill-%04d: %s\r\n" % (i, b"a" * 86) for i in range(1000))
    faulty.scripts = [[b"HTTP/1.1 200 OK\r\n" + fields + b"Content-Length: 2\r\n\r\nok"]]
    raw, took = await exchange(fault_edge, faulty.port)
    assert error_of(raw) == (502, "upstream_error", "upstream_error")
    assert took < TIMEOUT
    await served_on_a_new_connection(fault_edge, faulty)


@lanes
@pytest.mark.parametrize("splice", [True, False], ids=["spliced", "copied"])
async def test_sandbox_that_stops_reading_the_upload_gets_504(make_edge, faulty, splice):
    """The sandbox reads 64 KiB of a 16 MiB upload and then neither reads nor answers: the edge's
    write makes no progress for send_timeout (the response-head deadline is far off here), 504, and
    the sandbox connection is closed."""
    edge = await make_edge(
        [Sandbox("faulty", SANDBOX_IP)],
        http={"response_head_timeout": 60.0, "send_timeout": TIMEOUT, "splice_threshold": 262144 if splice else 0},
    )
    faulty.scripts = [[65536, TIMEOUT * 2]]  # then it reads what is left: the EOF behind it
    raw, took = await exchange(edge, faulty.port, "POST /up HTTP/1.1", b"u" * (16 * MiB))
    assert error_of(raw) == (504, "upstream_timeout", "upstream_timeout")
    assert took < TIMEOUT * 2 + 1
    await served_on_a_new_connection(edge, faulty)


# --- descriptors: a real edge serve under RLIMIT_NOFILE 128 --------------------------------------------

NOFILE = 128
HOG = "127.0.0.1"
OTHER = "127.0.0.9"
BACKEND_IP = "127.0.0.7"
NO_CAPS = "[http]\nmax_connections = 100000\nmax_connections_per_ip = 100000\nupstream_idle_timeout = 60.0\n"


def _nofile() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (NOFILE, NOFILE))


class Served:
    """`edge serve` under RLIMIT_NOFILE 128 with sandbox `b` in front of a small HTTP/1.1 server."""

    def __init__(self, tmp_path: Path, config: str) -> None:
        self.env = edge_env(tmp_path)
        self.backend = subprocess.Popen(
            [sys.executable, "-c", BACKEND_SCRIPT, BACKEND_IP], stdout=subprocess.PIPE, text=True
        )
        self.backend_port = int(self.backend.stdout.readline())
        add = subprocess.run(
            [sys.executable, "-m", "edge", "sandbox", "add", "b", "--address", BACKEND_IP],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert add.returncode == 0, add.stderr
        (tmp_path / "edge.toml").write_text(config)
        self.log = tmp_path / "edge.out"
        with open(self.log, "w") as out:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "edge",
                    "serve",
                    "--http",
                    "127.0.0.1:0",
                    "--dns",
                    "127.0.0.1:0",
                    "--admin",
                    "127.0.0.1:0",
                    "--no-access-log",
                    "--config",
                    str(tmp_path / "edge.toml"),
                ],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                preexec_fn=_nofile,
            )
        deadline = time.monotonic() + 20
        self.ports: dict[str, int] = {}
        while "edge is up" not in self.log.read_text():
            assert self.proc.poll() is None and time.monotonic() < deadline, self.log.read_text()
            time.sleep(0.05)
        for line in self.log.read_text().splitlines():
            if found := listening(line):
                self.ports[found[0]] = int(found[1].rsplit(":", 1)[1])
        self.port = self.ports["http"]

    @property
    def host(self) -> str:
        return f"{self.backend_port}-b.sandbox.localhost"

    def fds(self) -> int:
        return len(os.listdir(f"/proc/{worker_of(self.proc.pid)}/fd"))  # the worker holds the connections

    def connect(self, source: str = HOG) -> socket.socket:
        s = socket.socket()
        s.bind((source, 0))
        s.settimeout(2)
        s.connect(("127.0.0.1", self.port))
        return s

    def get(self, s: socket.socket, close: bool = True) -> bytes:
        """One GET to the backend on `s`; the answer's first bytes (b"" when closed unanswered)."""
        last = b"Connection: close\r\n\r\n" if close else b"\r\n"
        s.sendall(f"GET / HTTP/1.1\r\nHost: {self.host}\r\n".encode() + last)
        try:
            return s.recv(65536)
        except (TimeoutError, ConnectionResetError):
            return b""

    def served(self, source: str = OTHER) -> bool:
        try:
            with self.connect(source) as s:
                return self.get(s).startswith(b"HTTP/1.1 200")
        except OSError:
            return False

    def stop(self) -> str:
        for proc in (self.proc, self.backend):
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        return self.log.read_text()


#: A small HTTP/1.1 keep-alive server: prints its port, answers every request "ok" (no body read).
BACKEND_SCRIPT = r"""
import socket, sys, threading
srv = socket.create_server((sys.argv[1], 0))
print(srv.getsockname()[1], flush=True)
def serve(c):
    buf = b""
    with c:
        while True:
            while b"\r\n\r\n" not in buf:
                data = c.recv(65536)
                if not data:
                    return
                buf += data
            buf = buf[buf.index(b"\r\n\r\n") + 4:]
            c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
while True:
    threading.Thread(target=serve, args=(srv.accept()[0],), daemon=True).start()
"""


def hog(edge: Served, limit: int = 400) -> list[socket.socket]:
    """Connections from HOG, kept open, until the edge holds every descriptor it may and the kernel's
    queue for it is full too (a connect times out), at most `limit`."""
    held: list[socket.socket] = []
    for _ in range(limit):
        try:
            held.append(edge.connect())
        except OSError:
            break
    return held


def test_out_of_descriptors_edge_serves_what_it_can_and_recovers_fully(tmp_path):
    """Caps off, 128 descriptors: a keep-alive client on a pooled sandbox connection is still served
    while a hog holds every descriptor (accepts fail, counted); once the hog leaves, new clients are
    served again and the edge's descriptors are back where they were."""
    edge = Served(tmp_path, NO_CAPS)
    held: list[socket.socket] = []
    try:
        keep = edge.connect(OTHER)
        assert edge.get(keep, close=False).startswith(b"HTTP/1.1 200")  # its sandbox connection is pooled now
        time.sleep(0.3)
        before = edge.fds()
        held = hog(edge)
        time.sleep(0.5)
        assert edge.fds() >= NOFILE - 2, f"the hog did not exhaust the edge: {edge.fds()} descriptors"
        assert len(held) > NOFILE  # the rest wait in the kernel's accept queue
        assert edge.get(keep, close=False).startswith(b"HTTP/1.1 200")  # what it can: served
        for s in held:
            s.close()
        held.clear()
        deadline = time.monotonic() + 15
        while not edge.served():
            assert time.monotonic() < deadline, "not served again after the hog left"
            time.sleep(0.1)
        for _ in range(20):
            assert edge.served() and edge.served(HOG)
        assert edge.get(keep, close=False).startswith(b"HTTP/1.1 200")
        keep.close()
        deadline = time.monotonic() + 15
        while edge.fds() > before:  # the hog's connections are all closed: every descriptor is back
            assert time.monotonic() < deadline, f"{edge.fds()} descriptors, {before} before the hog"
            time.sleep(0.1)
        assert edge.proc.poll() is None
    finally:
        for s in held:
            s.close()
        out = edge.stop()
    assert "accept failed" in out
    assert "Traceback" not in out, out[-3000:]


def test_out_of_descriptors_a_request_needing_a_new_sandbox_connection_gets_an_answer(tmp_path):
    """Caps off, 128 descriptors, all held by a hog: a keep-alive client whose request needs a new
    sandbox connection (none pooled) gets a clear 5xx answer (an `x-edge-error`), not a closed
    connection, and nothing is logged as a bug."""
    edge = Served(tmp_path, NO_CAPS.replace("upstream_idle_timeout = 60.0", "upstream_idle_timeout = 0.2"))
    held: list[socket.socket] = []
    try:
        keep = edge.connect(OTHER)
        assert edge.get(keep, close=False).startswith(b"HTTP/1.1 200")
        time.sleep(1.0)  # the pooled sandbox connection is reaped
        held = hog(edge)
        time.sleep(0.5)
        keep.settimeout(5)
        answer = edge.get(keep, close=False)
        assert answer.startswith((b"HTTP/1.1 502", b"HTTP/1.1 503")) and b"x-edge-error" in answer, answer[:200]
    finally:
        for s in held:
            s.close()
        out = edge.stop()
    assert "connection handler failed" not in out, out[-3000:]


def test_with_the_default_caps_one_address_cannot_exhaust_the_edge(tmp_path):
    """Default caps under 128 descriptors ((128 - 64) / 3 = 21 in all, 5 per address): the hog's
    connections past its share are closed at once, the edge never runs out, and a client from another
    address is served throughout; after the hog, everything is back."""
    edge = Served(tmp_path, "")
    held: list[socket.socket] = []
    try:
        before = edge.fds()
        for _ in range(2 * NOFILE):  # twice what the edge could hold without the caps
            held.append(edge.connect())
            time.sleep(0.005)  # as they come: the burst case is the next test
        time.sleep(0.5)
        assert edge.fds() < NOFILE - 20
        for _ in range(10):
            assert edge.served(OTHER)
        for s in held:
            s.close()
        held.clear()
        # The edge must first see the hog's admitted connections close (their EOFs) before the hog's
        # share is free again: asking at once raced with that.
        deadline = time.monotonic() + 5
        while not edge.served(HOG):
            assert time.monotonic() < deadline, "the hog's address was not admitted again after it left"
            time.sleep(0.05)
        for _ in range(10):
            assert edge.served(HOG) and edge.served(OTHER)
        deadline = time.monotonic() + 5
        while edge.fds() > before + 1:  # + the pooled sandbox connection
            assert time.monotonic() < deadline, f"{edge.fds()} descriptors, {before} before the hog"
            time.sleep(0.1)
    finally:
        for s in held:
            s.close()
        out = edge.stop()
    assert "accept failed" not in out and "Traceback" not in out


def test_a_burst_past_the_caps_never_exhausts_the_descriptors(tmp_path):
    """Default caps under 128 descriptors; 256 connections from one address queue while the edge is
    stopped (SIGSTOP), then it continues: the caps must refuse them without the edge running out of
    descriptors, and a client from another address is served."""
    edge = Served(tmp_path, "")
    held: list[socket.socket] = []
    try:
        assert edge.served(OTHER)
        worker = worker_of(edge.proc.pid)  # the process that accepts
        os.kill(worker, signal.SIGSTOP)
        try:
            for _ in range(2 * NOFILE):
                held.append(edge.connect())
        finally:
            os.kill(worker, signal.SIGCONT)
        time.sleep(1.0)
        assert edge.served(OTHER)
    finally:
        for s in held:
            s.close()
        out = edge.stop()
    assert "accept failed" not in out
