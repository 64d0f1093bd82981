"""The connection loop (conn.serve_connection) over socketpairs, with trio's autojump MockClock.

Every test runs through both lanes (`http.fast_lane` true and false) and over both client transports:
the production `SocketTransport` and `PairTransport` (tests/http/transports.py), a second
implementation of the seam TLS will use, that copies every body. The test bodies are the same for
both: that is the proof the lanes talk to the client only through `ClientSide.io`.

The sandbox side is real TCP on loopback (tests/http/transports.Sandbox, scripted per request), so
"was the sandbox connection reused" is a count of the connections it accepted.
"""

from __future__ import annotations

import json

import pytest
import trio

from edge.catalog.model import Sandbox as Record
from edge.http.deadlines import LINGER
from edge.metrics import STATS
from tests.backends import Backend
from tests.http.transports import (
    CLOSE,
    ECHO,
    TRANSPORTS,
    PairEdge,
    Peer,
    Sandbox,
    get,
    host,
    last,
    open_edge,
    released,
)

GAMMA = Record("gamma", "127.0.0.4", max_connections=8)  # the scripted sandbox; a limit, so its slot is counted
ALPHA = Record("alpha", "127.0.0.2")  # tests/backends.py's Backend
FINE = b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nfine"


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
async def backend(nursery) -> Backend:
    return await Backend("alpha").start(nursery, "127.0.0.2")


@pytest.fixture
async def make_edge(nursery, transport, fast_lane):
    edges: list[PairEdge] = []

    async def make(sandboxes=(GAMMA, ALPHA), **http) -> PairEdge:
        edge = await open_edge(nursery, list(sandboxes), transport=transport, fast_lane=fast_lane, **http)
        edges.append(edge)
        return edge

    yield make
    for edge in edges:
        await edge.aclose()


@pytest.fixture
async def edge(make_edge, sandbox) -> PairEdge:
    return await make_edge()


# --- the reuse matrix ----------------------------------------------------------------------------------


def body(n: int) -> bytes:
    return (b"ok" * (n // 2 + 1))[:n]


def answer(outcome: str, n: int) -> list:
    """The sandbox's script for one answer of `n` body bytes, ending as `outcome` says."""
    data = body(n)
    if outcome == "length":
        return [b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % n + data]
    if outcome == "close":  # says close, but leaves the connection open: the edge must not reuse it
        return [b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % n + data]
    if outcome == "past-end":
        return [b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % n + data + b"EXTRA"]
    if outcome == "chunked":
        return [b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n" % n + data + b"\r\n0\r\n\r\n"]
    if outcome == "until-close":
        return [b"HTTP/1.1 200 OK\r\n\r\n" + data, CLOSE]
    assert outcome == "broken"  # ten bytes short, then closed
    return [b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % (n + 10) + data, CLOSE]


SANDBOX_OUTCOMES = ["length", "close", "past-end", "chunked", "until-close", "broken"]
CLIENT_OUTCOMES = ["keep-alive", "close", "http1.0", "edge-error", "bad-request", "early-answer", "client-breaks"]
#: Sandbox answers after which its connection may carry another request.
REUSABLE = {"length", "chunked"}


def expected(client: str, sandbox: str) -> tuple[bool, bool]:
    """(the client connection carries the next request, the sandbox connection is reused)."""
    carried = client in ("keep-alive", "edge-error") and sandbox != "broken"
    reused = client not in ("early-answer", "client-breaks") and sandbox in REUSABLE
    return carried, reused


@pytest.mark.parametrize("sandbox_outcome", SANDBOX_OUTCOMES)
@pytest.mark.parametrize("client_outcome", CLIENT_OUTCOMES)
async def test_reuse_matrix(autojump_clock, edge, sandbox, client_outcome, sandbox_outcome):
    """Each client outcome x each sandbox outcome: does the client connection carry the next request,
    is the sandbox connection reused, and is everything the exchange held released?"""
    breaks = client_outcome == "client-breaks"
    n = 4 << 20 if breaks else 2  # the client leaves mid-body: larger than any socket buffer
    sandbox.scripts = [answer(sandbox_outcome, n), [FINE]]
    sandbox.early = client_outcome == "early-answer"
    port = sandbox.port
    c1 = await edge.connect()
    if client_outcome == "close":
        await c1.send(last(port))
    elif client_outcome == "http1.0":
        await c1.send(get(port, version="1.0"))
    elif client_outcome == "early-answer":  # the sandbox answers after 10 of 100000 body bytes
        await c1.send(
            f"POST / HTTP/1.1\r\nHost: {host(port, 'gamma')}\r\nContent-Length: 100000\r\n\r\n".encode() + b"x" * 10
        )
    else:
        await c1.send(get(port))

    if breaks:
        first = await c1.read_response(head_only=True)
        assert first.status == 200
        await c1.close()
    else:
        first = await c1.read_response()
        assert (first.status, first.body) == (200, body(n))
        assert first.complete is (sandbox_outcome != "broken")
        if client_outcome == "edge-error" and first.complete:
            await c1.send(get(port, sandbox="nosuch"))
            assert (await c1.read_response()).status == 502  # the edge's own answer, connection kept
        if client_outcome == "bad-request" and first.complete:
            await c1.send(f"GET / HTTP/1.1\r\nHost: {port}-gamma.elsewhere.example\r\n\r\n".encode())
            assert (await c1.read_response()).status == 400  # the client's own error: closed after

    carried = False
    if not breaks and await c1.send(last(port)):
        carried = (await c1.read_to_eof()).endswith(b"\r\n\r\nfine")
    peers = [c1]
    if not carried:
        c2 = await edge.connect()
        peers.append(c2)
        await c2.send(last(port))
        assert (await c2.read_response()).body == b"fine"
        assert await c2.read_to_eof() == b""
    await c1.close()
    await released(edge, *peers)
    assert (carried, sandbox.connections == 1) == expected(client_outcome, sandbox_outcome)
    assert sandbox.open == 1  # only the pooled one: every connection not reused was closed


# --- lingering close ------------------------------------------------------------------------------------

EARLY = b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 2\r\nConnection: close\r\n\r\nno"


def big_post(port: int, length: int = 1 << 22) -> bytes:
    return f"POST /up HTTP/1.1\r\nHost: {host(port, 'gamma')}\r\nContent-Length: {length}\r\n\r\n".encode()


async def test_early_answer_half_closes_then_drains_the_body_then_closes(autojump_clock, edge, sandbox):
    """Answered before its body ended: the answer, then EOF while the edge still reads (and drops) the
    rest of the body, then the close once the client is done."""
    sandbox.early = True
    sandbox.scripts = [[EARLY]]
    c = await edge.connect()
    await c.send(big_post(sandbox.port) + b"x" * 1000)
    r = await c.read_response()
    assert (r.status, r.body, r.complete) == (413, b"no", True)
    assert await c.recv() == b""  # half-closed by the edge...
    assert not c.done.is_set()  # ...which still holds the connection open
    t0 = trio.current_time()
    for _ in range(8):
        assert await c.send(b"x" * 65536)  # drained: no reset, no EPIPE
    assert not c.done.is_set()
    c.shutdown_write()
    await released(edge, c)
    assert c.ended - t0 < LINGER  # closed on the client's EOF, not on the linger deadline
    assert sandbox.open == 0


async def test_lingering_drains_at_most_a_mebibyte(autojump_clock, edge, sandbox):
    """A client that keeps sending after an early answer is cut off after 1 MiB."""
    sandbox.early = True
    sandbox.scripts = [[EARLY]]
    c = await edge.connect()
    await c.send(big_post(sandbox.port))
    assert (await c.read_response()).status == 413
    sent = 0
    with trio.fail_after(LINGER / 2):  # well within the linger deadline: the cap, not the clock, ends it
        while sent < 4 << 20 and await c.send(b"x" * 65536):
            sent += 65536
    assert sent < 2 << 20
    await released(edge, c)


# --- pipelining -----------------------------------------------------------------------------------------


def three_pipelined(sandbox: Sandbox, backend: Backend) -> bytes:
    return get(sandbox.port, path="/one") + get(backend.port, "alpha", "/echo") + last(sandbox.port, path="/three")


async def read_three(edge: PairEdge, sandbox: Sandbox, backend: Backend, c: Peer) -> None:
    got = [await c.read_response() for _ in range(3)]
    assert [(r.status, r.complete) for r in got] == [(200, True)] * 3
    assert (got[0].body, got[2].body) == (b"one", b"three")
    echoed = json.loads(got[1].body)
    assert echoed["backend"] == "alpha" and echoed["target"] == "/echo"
    assert ["host", host(backend.port, "alpha")] in echoed["headers"]
    assert await c.read_to_eof() == b""
    await released(edge, c)
    assert [r.split(b" ")[1] for r in sandbox.requests] == [b"/one", b"/three"]
    assert sandbox.connections == 1 and backend.connections == 1


ONE = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\none"
THREE = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nthree"


async def test_pipelined_requests_are_answered_in_order_each_routed_on_its_own_host(
    autojump_clock, edge, sandbox, backend
):
    """Three requests in one write: three answers in order; the second went to the sandbox its own
    Host names, not to the first one's."""
    sandbox.scripts = [[ONE], [THREE]]
    c = await edge.connect()
    await c.send(three_pipelined(sandbox, backend))
    await read_three(edge, sandbox, backend, c)


@pytest.mark.parametrize("transport", ["pair"])
async def test_pipelined_requests_held_by_the_transport_are_not_waited_for(autojump_clock, make_edge, sandbox, backend):
    """A transport that reads like TLS (one record per read, the rest held back: `pending()`) gets the
    next request served from what it holds, without waiting on a socket that has nothing more."""
    requests = three_pipelined(sandbox, backend)
    # Pad every request to one length, so each record is exactly one request and nothing is left in
    # `ClientSide.buffered` between them: only the transport holds the next one.
    parts = [p + b"\r\n\r\n" for p in requests.split(b"\r\n\r\n")[:3]]
    size = max(len(p) for p in parts) + 16
    padded = b"".join(p[:-2] + b"X-Pad: " + b"p" * (size - len(p) - 9) + b"\r\n\r\n" for p in parts)
    assert len(padded) == 3 * size
    edge = await make_edge(record=size)
    sandbox.scripts = [[ONE], [THREE]]
    c = await edge.connect()
    await c.send(padded)
    with trio.fail_after(1):  # long before keepalive_timeout would end a connection waiting wrongly
        await read_three(edge, sandbox, backend, c)


# --- the hand-over between the lanes --------------------------------------------------------------------

CHUNKED = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"


def h11_counts() -> dict[str, int]:
    return dict(STATS.http_h11_exchanges)


def grew(before: dict[str, int]) -> dict[str, int]:
    return {k: n - before.get(k, 0) for k, n in STATS.http_h11_exchanges.items() if n != before.get(k, 0)}


@pytest.mark.parametrize("fast_lane", [True], ids=["fast"])
async def test_chunked_answer_goes_to_h11_and_the_next_request_is_fast_again(autojump_clock, edge, sandbox):
    """Pipelined: a chunked answer hands the exchange to h11 mid-way; the next two requests (already
    in h11's buffer then) take the fast lane again, each served once."""
    sandbox.scripts = [[CHUNKED], [ONE], [THREE]]
    before = h11_counts()
    c = await edge.connect()
    await c.send(get(sandbox.port) + get(sandbox.port) + last(sandbox.port))
    got = [await c.read_response() for _ in range(3)]
    assert [r.body for r in got] == [b"abcde", b"one", b"three"]
    assert await c.read_to_eof() == b""
    await released(edge, c)
    assert grew(before) == {"response": 1}
    assert len(sandbox.requests) == 3 and sandbox.connections == 1


@pytest.mark.parametrize("fast_lane", [True], ids=["fast"])
async def test_split_request_head_goes_to_h11_and_the_next_request_is_fast_again(autojump_clock, edge, sandbox):
    """A head split across reads is read by h11; the requests that came behind it go fast, once each."""
    sandbox.scripts = [[FINE], [ONE], [THREE]]
    before = h11_counts()
    c = await edge.connect()
    first = get(sandbox.port)
    await c.send(first[:20])
    await trio.sleep(1)
    await c.send(first[20:] + get(sandbox.port) + last(sandbox.port))
    got = [await c.read_response() for _ in range(3)]
    assert [r.body for r in got] == [b"fine", b"one", b"three"]
    assert await c.read_to_eof() == b""
    await released(edge, c)
    assert grew(before) == {"request": 1}
    assert len(sandbox.requests) == 3


@pytest.mark.parametrize("fast_lane", [True], ids=["fast"])
async def test_edge_answer_in_the_fast_lane_goes_through_h11_and_the_connection_goes_on(autojump_clock, edge, sandbox):
    """An answer of the edge's own (unknown sandbox: 502) is written by h11; the connection goes on,
    and the next request is fast."""
    sandbox.scripts = [[FINE]]
    before = h11_counts()
    c = await edge.connect()
    await c.send(get(sandbox.port, sandbox="nosuch") + last(sandbox.port))
    got = [await c.read_response() for _ in range(2)]
    assert [(r.status, r.complete) for r in got] == [(502, True), (200, True)]
    assert json.loads(got[0].body)["error"] == "sandbox_not_found"
    assert await c.read_to_eof() == b""
    await released(edge, c)
    assert grew(before) == {"answer": 1}


# --- bodies and tunnels over either transport -----------------------------------------------------------


async def test_large_download_then_the_connection_goes_on(autojump_clock, edge, sandbox):
    """A 2 MiB answer to a GET (moved by its count: spliced over a socket, copied over PairTransport),
    then a next request on both connections."""
    down = 2 << 20
    sandbox.scripts = [[b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % down + body(down)], [FINE]]
    c = await edge.connect()
    await c.send(get(sandbox.port))
    r = await c.read_response()
    assert (r.status, len(r.body), r.body == body(down)) == (200, down, True)
    await c.send(last(sandbox.port))
    assert (await c.read_response()).body == b"fine"
    assert await c.read_to_eof() == b""
    await released(edge, c)
    assert sandbox.connections == 1


async def test_large_bodies_both_ways_then_the_connection_goes_on(autojump_clock, edge, sandbox):
    """A 1 MiB upload answered by a 2 MiB download (the h11 lane: the body is not in hand), then a
    next request on both connections."""
    up, down = 1 << 20, 2 << 20
    sandbox.scripts = [[b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % down + body(down)], [FINE]]
    c = await edge.connect()
    await c.send(f"POST /up HTTP/1.1\r\nHost: {host(sandbox.port)}\r\nContent-Length: {up}\r\n\r\n".encode())
    await c.send(b"u" * up)
    r = await c.read_response()
    assert (r.status, len(r.body), r.body == body(down)) == (200, down, True)
    await c.send(last(sandbox.port))
    assert (await c.read_response()).body == b"fine"
    assert await c.read_to_eof() == b""
    await released(edge, c)
    assert sandbox.requests[0].endswith(b"\r\n\r\n" + b"u" * up)
    assert sandbox.connections == 1


UPGRADE = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\nhello"


async def test_tunnel_after_101_carries_both_ways_and_passes_the_half_close_on(autojump_clock, edge, sandbox):
    """A 101 turns the connection into a tunnel (spliced, or copied over PairTransport): bytes both
    ways, the client's half-close reaches the sandbox, which still answers before it closes."""
    sandbox.scripts = [[UPGRADE, ECHO]]
    c = await edge.connect()
    await c.send(
        f"GET /ws HTTP/1.1\r\nHost: {host(sandbox.port)}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
        "\r\nearly".encode()
    )
    got = b""
    while not got.endswith(b"helloearly"):
        got += await c.recv()
    assert got.startswith(b"HTTP/1.1 101 ")
    await c.send(b"ping")
    assert await c.recv() == b"ping"
    assert STATS.http_active_tunnels >= 1
    c.shutdown_write()
    assert await c.read_to_eof() == b"bye"
    await released(edge, c)
    assert sandbox.open == 0
