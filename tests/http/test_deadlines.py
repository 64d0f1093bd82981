"""The one deadline mechanism (deadlines.py), and every deadline of the request path firing.

First the mechanism on bare socketpairs: a wait past its time raises Expired(kind), a ready socket
costs nothing, and a reader and a writer on one descriptor keep their own deadlines. Then each row of
edge/http/README.md's deadline table, fired through the connection loop (tests/http/transports.py)
in both lanes and over both client transports, with trio's autojump clock: a 300 s timeout passes
at once, and the time it took is read off the virtual clock. Each test also checks what the client
got and that the descriptors, the sandbox connection and the sandbox's slot were released.
"""

from __future__ import annotations

import os
import socket

import pytest
import trio
from trio.testing import wait_all_tasks_blocked

from edge import config as config_mod
from edge.catalog.model import Sandbox as Record
from edge.http.deadlines import LINGER, Deadlines, Expired, Wait
from edge.metrics import STATS
from tests.http.transports import HOLD, PARK, TRANSPORTS, PairEdge, Sandbox, get, host, last, open_edge, released

GAMMA = Record("gamma", "127.0.0.4", max_connections=8)


def make_deadlines(**http) -> Deadlines:
    return Deadlines(config_mod.load(env={}, overrides={"http": http}).http)


@pytest.fixture
def pair():
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    yield a, b
    a.close()
    b.close()


def fill(sock: socket.socket) -> None:
    """Write until the socket has no room left."""
    try:
        while True:
            sock.send(b"x" * 65536)
    except BlockingIOError:
        pass


# --- the mechanism -----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["head", "body", "response", "idle"])
async def test_read_wait_past_its_deadline_raises_expired_with_its_kind(autojump_clock, nursery, pair, kind):
    """A read with nothing to read, past its deadline: Expired(kind), within one tick, out of the table."""
    d = make_deadlines()
    nursery.start_soon(d.run)
    w = Wait(pair[0].fileno())
    t0 = trio.current_time()
    with trio.fail_after(60), pytest.raises(Expired) as caught:
        await d.recv(w, 100, t0 + 5, kind)
    assert caught.value.kind == kind
    assert 5 <= trio.current_time() - t0 <= 5 + d.tick
    assert d.table == {}


async def test_write_wait_is_bounded_by_send_timeout(autojump_clock, nursery, pair):
    """A write into a full socket that makes no progress: Expired("send") after send_timeout."""
    d = make_deadlines(send_timeout=7)
    nursery.start_soon(d.run)
    fill(pair[0])
    t0 = trio.current_time()
    with trio.fail_after(60), pytest.raises(Expired) as caught:
        await d.send_all(Wait(pair[0].fileno()), b"y" * 65536)
    assert caught.value.kind == "send"
    assert 7 <= trio.current_time() - t0 <= 7 + d.tick
    assert d.table == {}


class Recording(dict):
    """A deadline table that remembers every wait ever entered."""

    def __init__(self) -> None:
        super().__init__()
        self.entered: list[str] = []

    def __setitem__(self, w: Wait, when: float) -> None:
        self.entered.append(w.kind)
        super().__setitem__(w, when)


async def test_ready_socket_costs_no_table_entry(autojump_clock, nursery, pair):
    """Reads and writes on a ready socket never enter the table: only a wait that blocks does."""
    d = make_deadlines()
    d.table = Recording()
    a, b = pair
    b.send(b"hello")
    assert await d.recv(Wait(a.fileno()), 100, trio.current_time() + 5, "head") == b"hello"
    await d.send_all(Wait(a.fileno()), b"answer")
    assert d.table.entered == []
    assert b.recv(100) == b"answer"
    nursery.start_soon(d.run)
    with pytest.raises(Expired):
        await d.recv(Wait(a.fileno()), 100, trio.current_time() + 5, "head")
    assert d.table.entered == ["head"]


async def test_writers_deadline_does_not_end_the_readers_wait(autojump_clock, nursery, pair):
    """A reader and a writer on one descriptor (a body pumped while the answer is relayed): the
    writer's deadline ends the write, and the reader, woken too, waits on until its bytes come."""
    d = make_deadlines(send_timeout=5)
    nursery.start_soon(d.run)
    a, b = pair
    fill(a)
    got: list[bytes] = []

    async def reader() -> None:
        got.append(await d.recv(Wait(a.fileno()), 100, None, "body"))

    nursery.start_soon(reader)
    t0 = trio.current_time()
    with trio.fail_after(60), pytest.raises(Expired) as caught:
        await d.send_all(Wait(a.fileno()), b"y" * 65536)
    assert caught.value.kind == "send" and 5 <= trio.current_time() - t0 <= 5 + d.tick
    await trio.sleep(30)
    assert got == []
    b.send(b"late")
    await wait_all_tasks_blocked()
    assert got == [b"late"]


async def test_expire_ends_the_wait_under_way_with_the_kind_given(autojump_clock, nursery, pair):
    """A revocation (`expire(w, "revoked")`) ends a wait that has no deadline of its own."""
    d = make_deadlines()
    w = Wait(pair[0].fileno())
    failed: list[str] = []

    async def reader() -> None:
        try:
            await d.recv(w, 100, None, "body")
        except Expired as exc:
            failed.append(exc.kind)

    nursery.start_soon(reader)
    await wait_all_tasks_blocked()
    d.expire(w, "revoked")
    await wait_all_tasks_blocked()
    assert failed == ["revoked"]


async def test_a_revocation_before_a_wait_ends_the_next_wait_at_once(autojump_clock, pair):
    """Revoked (or its client left) while the task was busy: the next wait raises, and every one after."""
    d = make_deadlines()
    w = Wait(pair[0].fileno())
    d.expire(w, "revoked")
    for _ in range(2):
        with trio.fail_after(1), pytest.raises(Expired) as caught:
            await d.readable(w, None, "head")
        assert caught.value.kind == "revoked"


async def test_a_deadline_that_lost_the_race_to_readiness_is_dropped(autojump_clock, pair):
    """A deadline found past in the round its socket became ready woke nobody: the next wait is a
    wait like any other (it does not fail at once)."""
    d = make_deadlines()
    w = Wait(pair[0].fileno())
    d.expire(w, "idle")
    pair[1].send(b"x")
    await d.readable(w, None, "head")  # ready: returns, and drops the spent expiry
    assert w.expired is None


@pytest.mark.parametrize(
    ("http", "tick"),
    [
        pytest.param({}, 1.0, id="defaults: at most a second"),
        pytest.param({"head_timeout": 2}, 0.5, id="a quarter of the shortest"),
        pytest.param({"send_timeout": 0.2}, 0.05, id="send_timeout counts"),
        pytest.param({"connect_timeout": 0.001}, 0.01, id="at least 10 ms"),
    ],
)
def test_tick_is_a_quarter_of_the_shortest_timeout(http, tick):
    assert make_deadlines(**http).tick == pytest.approx(tick)


# --- every deadline of the request path, fired through the connection loop ---------------------------


@pytest.fixture(params=[True, False], ids=["fast", "h11"])
def fast_lane(request) -> bool:
    return request.param


@pytest.fixture(params=TRANSPORTS)
def transport(request) -> str:
    return request.param


@pytest.fixture
async def sandbox(nursery) -> Sandbox:
    return await Sandbox().start(nursery)


@pytest.fixture
async def make_edge(nursery, transport, fast_lane):
    edges: list[PairEdge] = []

    async def make(**http) -> PairEdge:
        edge = await open_edge(nursery, [GAMMA], transport=transport, fast_lane=fast_lane, **http)
        edges.append(edge)
        return edge

    yield make
    for edge in edges:
        await edge.aclose()


FINE = b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nfine"


def near(elapsed: float, timeout: float, edge: PairEdge) -> bool:
    """Fired at its time: at the first sweep past it."""
    return timeout <= elapsed <= timeout + edge.ctx.deadlines.tick + 1e-6


async def test_silent_new_connection_is_closed_after_head_timeout_without_an_answer(autojump_clock, make_edge):
    """No first request within head_timeout (not keepalive_timeout): closed, nothing sent."""
    edge = await make_edge(head_timeout=10, keepalive_timeout=60)
    t0 = trio.current_time()
    c = await edge.connect()
    assert await c.read_to_eof() == b""
    await released(edge, c)
    assert near(c.ended - t0, 10, edge)


async def test_idle_keepalive_connection_is_closed_after_keepalive_timeout(autojump_clock, make_edge, sandbox):
    """After an exchange the connection waits keepalive_timeout for the next request, then closes."""
    edge = await make_edge(head_timeout=10, keepalive_timeout=60)
    sandbox.scripts = [[FINE]]
    c = await edge.connect()
    await c.send(get(sandbox.port))
    assert (await c.read_response()).body == b"fine"
    t0 = trio.current_time()
    with trio.fail_after(600):
        assert await c.read_to_eof() == b""
    await released(edge, c)
    assert near(c.ended - t0, 60, edge)


async def test_rest_of_a_request_head_gets_408_after_head_timeout(autojump_clock, make_edge):
    """Half a head, then silence: 408 at head_timeout, and the connection closes."""
    edge = await make_edge(head_timeout=10)
    c = await edge.connect()
    t0 = trio.current_time()
    await c.send(b"GET / HTTP/1.1\r\nHost: 1-gamma.sandbox.localhost\r\n")
    with trio.fail_after(600):
        r = await c.read_response()
    assert (r.status, r.complete) == (408, True)
    assert near(trio.current_time() - t0, 10, edge)
    assert await c.read_to_eof() == b""
    await released(edge, c)


async def test_stalled_request_body_gets_408_after_body_idle_timeout(autojump_clock, make_edge, sandbox):
    """10 of 100 body bytes, then silence: 408 at body_idle_timeout (before the sandbox's 504), the
    sandbox connection closed and its slot released."""
    edge = await make_edge(body_idle_timeout=30, response_head_timeout=300)
    sandbox.scripts = [[FINE]]  # never played: the sandbox waits for the whole body
    c = await edge.connect()
    t0 = trio.current_time()
    await c.send(f"POST / HTTP/1.1\r\nHost: {host(sandbox.port)}\r\nContent-Length: 100\r\n\r\n".encode() + b"x" * 10)
    with trio.fail_after(600):
        r = await c.read_response()
    assert (r.status, r.complete) == (408, True)
    assert near(trio.current_time() - t0, 30, edge)
    assert await c.read_to_eof() == b""  # closed (after its lingering close)
    await released(edge, c)
    assert sandbox.open == 0


async def test_stalled_request_body_408_is_followed_by_a_lingering_close(autojump_clock, make_edge, sandbox):
    """The 408 is an answer before the request body ended: half-close, drain, close (as after a
    sandbox's early answer), so a client that resumes sending is not reset under its answer."""
    edge = await make_edge(body_idle_timeout=30)
    sandbox.scripts = [[FINE]]
    c = await edge.connect()
    await c.send(f"POST / HTTP/1.1\r\nHost: {host(sandbox.port)}\r\nContent-Length: 100\r\n\r\n".encode() + b"x" * 10)
    with trio.fail_after(600):
        assert (await c.read_response()).status == 408
    t0 = trio.current_time()
    assert await c.recv() == b""  # half-closed...
    assert not c.done.is_set()  # ...and still reading
    assert await c.send(b"x" * 90)
    c.shutdown_write()
    await released(edge, c)
    assert c.ended - t0 < LINGER


async def test_silent_sandbox_gets_504_after_response_head_timeout(autojump_clock, make_edge, sandbox):
    """A sandbox that takes a request and says nothing: 504 at response_head_timeout; its connection is
    closed, and the client connection carries the next request."""
    edge = await make_edge(response_head_timeout=30)
    sandbox.scripts = [[HOLD], [FINE]]
    c = await edge.connect()
    t0 = trio.current_time()
    await c.send(get(sandbox.port))
    with trio.fail_after(600):
        r = await c.read_response()
    assert (r.status, r.complete) == (504, True)
    assert near(trio.current_time() - t0, 30, edge)
    await c.send(last(sandbox.port))
    assert (await c.read_response()).body == b"fine"
    assert await c.read_to_eof() == b""
    await released(edge, c)
    assert (sandbox.connections, sandbox.open) == (2, 1)


@pytest.mark.parametrize("framing", ["length", "chunked"])
async def test_client_that_stops_reading_ends_the_exchange_after_send_timeout(
    autojump_clock, make_edge, sandbox, framing
):
    """A download the client stops reading: after send_timeout without progress the exchange ends,
    the client connection and the sandbox connection are closed, and the slot is released."""
    edge = await make_edge(send_timeout=5)
    size = 8 << 20
    if framing == "length":
        head = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size
        sandbox.scripts = [[head, b"x" * size]]
    else:
        head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        sandbox.scripts = [[head] + [b"10000\r\n" + b"x" * 65536 + b"\r\n"] * (size >> 16) + [b"0\r\n\r\n"]]
    c = await edge.connect()
    t0 = trio.current_time()
    await c.send(get(sandbox.port))
    assert (await c.read_response(head_only=True)).status == 200
    with trio.fail_after(600):
        await c.done.wait()
    assert near(c.ended - t0, 5, edge)
    rest = await c.read_to_eof()
    assert 0 < len(rest) < size  # what the socket buffers held, then the close
    await released(edge, c)
    assert sandbox.open == 0


async def test_connect_that_hangs_gets_504_after_connect_timeout(autojump_clock, make_edge):
    """A sandbox address that never completes the handshake (its listener's backlog is full, so SYNs
    are dropped): 504 at connect_timeout."""
    edge = await make_edge(connect_timeout=5)
    listener = socket.socket()
    listener.bind(("127.0.0.4", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    try:
        for _ in range(4):
            s = socket.socket()
            s.setblocking(False)
            try:
                s.connect(("127.0.0.4", port))
            except BlockingIOError:
                pass
            fillers.append(s)
        before = STATS.upstream_connect_failures["timeout"]
        c = await edge.connect()
        t0 = trio.current_time()
        await c.send(last(port))
        with trio.fail_after(600):
            r = await c.read_response()
        assert (r.status, r.complete) == (504, True)
        assert near(trio.current_time() - t0, 5, edge)
        assert STATS.upstream_connect_failures["timeout"] == before + 1
        assert await c.read_to_eof() == b""
        await released(edge, c)
    finally:
        for s in fillers:
            s.close()
        listener.close()


EARLY = b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 2\r\nConnection: close\r\n\r\nno"


async def test_lingering_close_ends_after_linger_when_the_client_stays_quiet(autojump_clock, make_edge, sandbox):
    """Answered early, the client neither sends the rest nor closes: the edge closes after LINGER."""
    edge = await make_edge()
    sandbox.early = True
    sandbox.scripts = [[EARLY]]
    c = await edge.connect()
    await c.send(f"POST / HTTP/1.1\r\nHost: {host(sandbox.port)}\r\nContent-Length: 100000\r\n\r\n".encode())
    assert (await c.read_response()).status == 413
    t0 = trio.current_time()
    with trio.fail_after(600):
        await c.done.wait()
    assert near(c.ended - t0, LINGER, edge)
    await released(edge, c)


async def test_client_leaving_while_the_sandbox_thinks_releases_the_sandbox_at_once(autojump_clock, make_edge, sandbox):
    """The client closes while its sandbox has not answered: within a tick the sandbox connection and
    the slot are released (logged 499), not at response_head_timeout."""
    edge = await make_edge(response_head_timeout=300)
    sandbox.scripts = [[HOLD]]
    before = STATS.http_requests[4]
    c = await edge.connect()
    await c.send(get(sandbox.port))
    while not sandbox.requests:
        await trio.sleep(0.001)
    t0 = trio.current_time()
    await c.close()
    await released(edge, c)
    assert c.ended - t0 <= edge.ctx.deadlines.tick + 1e-6
    assert sandbox.open == 0
    assert STATS.http_requests[4] == before + 1


# --- a deadline that passes as the bytes arrive ----------------------------------------------------------
#
# The sweep and a task woken by readiness can run in the same scheduling batch, in either order (trio
# shuffles each batch). When the sweep goes first it expires a wait whose task is already on its way
# with the bytes: that task goes on normally, but `Wait.expired` stays set. These tests make that
# race happen (a manual MockClock: the bytes and the clock jump land in one step) 20 times over, so
# the order falls the sweep's way about half of the time.

RACES = 20


async def test_answer_arriving_as_its_deadline_passes_leaves_the_pooled_connection_usable(
    mock_clock, make_edge, sandbox
):
    edge = await make_edge(response_head_timeout=30)
    statuses = []
    for _ in range(RACES):
        sandbox.scripts = [[PARK], [FINE]]
        c = await edge.connect()
        await c.send(get(sandbox.port))
        await wait_all_tasks_blocked()  # the edge waits for the answer, deadline in 30 s
        os.write(sandbox.parked[-1].socket.fileno(), FINE)  # the answer comes...
        mock_clock.jump(31)  # ...as its deadline passes
        assert (await c.read_response()).status in (200, 504)  # either is right at the deadline
        await c.send(last(sandbox.port))  # the next request, on the pooled sandbox connection
        statuses.append((await c.read_response()).status)
        assert await c.read_to_eof() == b""
        await released(edge, c)
    assert statuses == [200] * RACES


async def test_request_arriving_as_the_keepalive_deadline_passes_leaves_the_connection_usable(
    mock_clock, make_edge, sandbox
):
    edge = await make_edge(keepalive_timeout=60)
    outcomes = []
    for _ in range(RACES):
        sandbox.scripts = [[FINE], [FINE], [FINE]]
        c = await edge.connect()
        await c.send(get(sandbox.port))
        assert (await c.read_response()).status == 200
        await wait_all_tasks_blocked()  # idle, keep-alive deadline in 60 s
        os.write(c.stream.socket.fileno(), get(sandbox.port))  # the next request comes...
        mock_clock.jump(61)  # ...as the deadline passes
        if not (await c.read_response()).complete:  # expired first: closed unanswered, as it may be
            sandbox.scripts.clear()
            outcomes.append("expired")
            await released(edge, c)
            continue
        split = last(sandbox.port)  # answered: then the connection goes on, whatever comes next
        await c.send(split[:10])
        await wait_all_tasks_blocked()
        await c.send(split[10:])
        outcomes.append((await c.read_response()).status)
        await c.read_to_eof()
        await released(edge, c)
    assert set(outcomes) <= {200, "expired"}
