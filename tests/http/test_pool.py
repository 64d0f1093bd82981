"""The sandbox connection pool (upstream.Pool) and the one send-with-retry (upstream.forward_with_retry).

First the pool alone, against plain loopback listeners whose accepted sockets the test holds (so it
can make a pooled connection receive stray bytes, EOF or a reset while idle); then the same rules
seen from a client, through the connection loop in both lanes and over both client transports
(tests/http/transports.py).
"""

from __future__ import annotations

import socket
import struct
from types import SimpleNamespace

import pytest
import trio

from edge import config as config_mod
from edge.catalog.model import Sandbox as Record
from edge.errors import UpstreamError
from edge.http.deadlines import Deadlines
from edge.http.exchange import Exchange
from edge.http.upstream import STALE, Pool, Upstream, forward_with_retry
from tests.http.transports import CLOSE, TRANSPORTS, PairEdge, Sandbox, get, host, last, open_edge, released


class Listener:
    """A loopback listener; `take()` returns the server side of each connection made to it."""

    def __init__(self, address: str = "127.0.0.4", port: int = 0) -> None:
        self.sock = socket.socket()
        self.sock.bind((address, port))
        self.sock.listen(16)
        self.sock.setblocking(False)
        self.address = address
        self.port = self.sock.getsockname()[1]
        self.accepted: list[socket.socket] = []

    def take(self) -> list[socket.socket]:
        try:
            while True:
                self.accepted.append(self.sock.accept()[0])
        except BlockingIOError:
            pass
        return self.accepted

    def close(self) -> None:
        for s in self.take():
            s.close()
        self.sock.close()


@pytest.fixture
def listener():
    lst = Listener()
    yield lst
    lst.close()


def make_pool(**http) -> Pool:
    cfg = config_mod.load(env={}, overrides={"http": http}).http
    return Pool(cfg, Deadlines(cfg))


def exchange(**facts) -> Exchange:
    """An exchange with these facts; its client only lends a descriptor to watch."""
    return Exchange(SimpleNamespace(io=SimpleNamespace(fd=-1)), 0.0, **facts)  # type: ignore[arg-type]


CLEAN = {"resp_keepalive": True, "upstream_done": True}


def key(listener: Listener, sandbox: str = "gamma") -> tuple[str, str, int]:
    return (sandbox, listener.address, listener.port)


def closed(up: Upstream) -> bool:
    return up.sock.fileno() == -1


# --- the pool ------------------------------------------------------------------------------------------


async def test_connection_after_a_clean_exchange_is_reused(autojump_clock, listener):
    pool = make_pool()
    up = await pool.acquire(key(listener))
    assert not up.reused
    pool.finish(up, exchange(**CLEAN))
    again = await pool.acquire(key(listener))
    assert again is up and again.reused and not closed(up)
    assert len(listener.take()) == 1
    pool.close_all()


@pytest.mark.parametrize(
    "facts",
    [
        pytest.param({"resp_keepalive": False, "upstream_done": True}, id="the sandbox said close"),
        pytest.param({"resp_keepalive": True, "upstream_done": False}, id="not one whole response"),
        pytest.param({**CLEAN, "revoked": True}, id="revoked"),
    ],
)
async def test_connection_after_an_unclean_exchange_is_closed_not_pooled(autojump_clock, listener, facts):
    pool = make_pool()
    up = await pool.acquire(key(listener))
    pool.finish(up, exchange(**facts))
    assert closed(up)
    again = await pool.acquire(key(listener))
    assert again is not up and not again.reused
    assert len(listener.take()) == 2
    pool.close_all()


def reset(sock: socket.socket) -> None:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


@pytest.mark.parametrize("what", ["stray bytes", "EOF", "reset"])
async def test_anything_arriving_on_an_idle_connection_drops_it(autojump_clock, listener, what):
    """Before every reuse a peek: bytes nobody asked for, EOF or a reset mean a new connection."""
    pool = make_pool()
    up = await pool.acquire(key(listener))
    pool.finish(up, exchange(**CLEAN))
    [server] = listener.take()
    if what == "stray bytes":
        server.send(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nevil")
    elif what == "EOF":
        server.close()
    else:
        reset(server)
    await trio.sleep(0.01)
    again = await pool.acquire(key(listener))
    assert again is not up and not again.reused and closed(up)
    pool.close_all()


async def test_acquire_never_hands_out_a_connection_idle_past_upstream_idle_timeout(autojump_clock, listener):
    """Even before the reaper comes round: past upstream_idle_timeout a pooled connection is closed."""
    pool = make_pool(upstream_idle_timeout=15)
    up = await pool.acquire(key(listener))
    pool.finish(up, exchange(**CLEAN))
    await trio.sleep(15.5)
    again = await pool.acquire(key(listener))
    assert again is not up and closed(up)
    pool.close_all()


async def test_reaper_closes_connections_idle_past_upstream_idle_timeout(autojump_clock, nursery, listener):
    """The reaper closes what sat idle too long (the sandbox sees EOF) and keeps what did not."""
    pool = make_pool(upstream_idle_timeout=15)
    nursery.start_soon(pool.run_reaper)
    old = await pool.acquire(key(listener))
    young = await pool.acquire(key(listener))
    pool.finish(old, exchange(**CLEAN))
    await trio.sleep(12)
    pool.finish(young, exchange(**CLEAN))
    await trio.sleep(12)  # old: idle 24 s, young 12 s (the reaper comes every 7.5 s)
    assert closed(old) and not closed(young)
    server_old = listener.take()[0]
    assert server_old.recv(10) == b""
    await trio.sleep(15)
    assert closed(young)
    assert pool._idle == {}


async def test_pool_keeps_at_most_pool_size_idle_connections_per_key(autojump_clock, listener):
    pool = make_pool(upstream_pool_size=2)
    ups = [await pool.acquire(key(listener)) for _ in range(3)]
    others = [await pool.acquire(key(listener, "delta")) for _ in range(2)]
    for up in ups + others:
        pool.finish(up, exchange(**CLEAN))
    assert [closed(up) for up in ups] == [False, False, True]
    assert [closed(up) for up in others] == [False, False]  # another key has its own two
    pool.close_all()


async def test_most_recently_used_connection_is_reused_first(autojump_clock, listener):
    pool = make_pool()
    first, second = await pool.acquire(key(listener)), await pool.acquire(key(listener))
    pool.finish(first, exchange(**CLEAN))
    pool.finish(second, exchange(**CLEAN))
    assert await pool.acquire(key(listener)) is second
    pool.close_all()


async def test_connections_are_pooled_per_sandbox_address_and_port(autojump_clock):
    """A sandbox that moved to another address (same port), or another sandbox at the same address,
    never gets a connection made for the other key."""
    here = Listener("127.0.0.4")
    moved = Listener("127.0.0.5", here.port)
    try:
        pool = make_pool()
        up = await pool.acquire(key(here))
        pool.finish(up, exchange(**CLEAN))
        elsewhere = await pool.acquire(key(moved))
        assert elsewhere is not up and len(moved.take()) == 1
        other = await pool.acquire(key(here, "delta"))
        assert other is not up
        assert len(here.take()) == 2
        assert await pool.acquire(key(here)) is up  # still there for its own key
        pool.close_all()
    finally:
        here.close()
        moved.close()


# --- forward_with_retry ----------------------------------------------------------------------------------


async def pooled(pool: Pool, listener: Listener) -> Upstream:
    """Put one connection in the pool."""
    up = await pool.acquire(key(listener))
    pool.finish(up, exchange(**CLEAN))
    return up


async def test_stale_pooled_connection_is_retried_once_on_a_new_one(autojump_clock, listener):
    pool = make_pool()
    stale = await pooled(pool, listener)
    tried: list[bool] = []

    async def attempt(up: Upstream):
        tried.append(up.reused)
        return STALE if up.reused else "answered"

    ex = exchange()
    ex.resp_keepalive = ex.upstream_done = True
    assert await forward_with_retry(pool, key(listener), ex, True, attempt) == "answered"
    assert tried == [True, False]
    assert closed(stale)
    pool.close_all()


@pytest.mark.parametrize("why", ["not retryable", "revoked"])
async def test_stale_pooled_connection_is_a_502_when_it_may_not_be_retried(autojump_clock, listener, why):
    pool = make_pool()
    stale = await pooled(pool, listener)
    tried: list[bool] = []

    async def attempt(up: Upstream):
        tried.append(up.reused)
        if len(tried) > 3:
            raise AssertionError("retried again and again")
        return STALE

    ex = exchange(revoked=why == "revoked")
    with pytest.raises(UpstreamError):
        await forward_with_retry(pool, key(listener), ex, why == "revoked", attempt)
    assert tried == [True] and closed(stale)
    pool.close_all()


async def test_retry_happens_at_most_once(autojump_clock, listener):
    pool = make_pool()
    await pooled(pool, listener)
    tried: list[bool] = []

    async def attempt(up: Upstream):
        tried.append(up.reused)
        if len(tried) > 3:
            raise AssertionError("retried again and again")
        return STALE

    with pytest.raises(UpstreamError):
        await forward_with_retry(pool, key(listener), exchange(), True, attempt)
    assert tried == [True, False]
    pool.close_all()


async def test_connection_of_a_failed_attempt_is_closed(autojump_clock, listener):
    pool = make_pool()
    held: list[Upstream] = []

    async def attempt(up: Upstream):
        held.append(up)
        raise UpstreamError("gamma", 1, "broken")

    with pytest.raises(UpstreamError):
        await forward_with_retry(pool, key(listener), exchange(**CLEAN), True, attempt)
    assert closed(held[0]) and pool._idle == {}


# --- the same rules, seen by a client -----------------------------------------------------------------

GAMMA = Record("gamma", "127.0.0.4")
FINE = b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nfine"
FINE2 = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfine2"
EVIL = b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nevil"


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
async def edge(nursery, transport, fast_lane, sandbox):
    edge = await open_edge(nursery, [GAMMA], transport=transport, fast_lane=fast_lane)
    yield edge
    await edge.aclose()


def post(port: int, data: bytes = b"data", method: str = "POST") -> bytes:
    return (
        f"{method} / HTTP/1.1\r\nHost: {host(port)}\r\nContent-Length: {len(data)}\r\n"
        "Connection: close\r\n\r\n".encode()
        + data
    )


async def two_requests(edge: PairEdge, second: bytes, port: int) -> list:
    c = await edge.connect()
    await c.send(get(port))
    first = await c.read_response()
    await c.send(second)
    got = [first, await c.read_response()]
    assert await c.read_to_eof() == b""
    await released(edge, c)
    return [(r.status, r.body) for r in got]


async def test_get_finding_its_pooled_connection_dead_is_retried_on_a_new_one(autojump_clock, edge, sandbox):
    """The keep-alive race: the sandbox reads the next request and closes without a word. A GET is
    sent again on a new connection; the client never sees the dead one."""
    sandbox.scripts = [[FINE], [CLOSE], [FINE2]]
    assert await two_requests(edge, last(sandbox.port), sandbox.port) == [(200, b"fine"), (200, b"fine2")]
    assert (sandbox.connections, len(sandbox.requests)) == (2, 3)


@pytest.mark.parametrize(
    ("method", "data"),
    [
        pytest.param("POST", b"", id="POST: not idempotent"),
        pytest.param("PUT", b"data", id="PUT with a body: the body is gone"),
    ],
)
async def test_request_that_may_not_be_resent_gets_502_when_its_pooled_connection_is_dead(
    autojump_clock, edge, sandbox, method, data
):
    """The same race for a request that may have had its effect, or whose body was read: no resend, 502."""
    sandbox.scripts = [[FINE], [CLOSE], [FINE2]]
    got = await two_requests(edge, post(sandbox.port, data, method), sandbox.port)
    assert [status for status, _ in got] == [200, 502]
    assert (sandbox.connections, len(sandbox.requests)) == (1, 2)


async def test_sandbox_closing_after_its_answer_is_noticed_before_reuse(autojump_clock, edge, sandbox):
    """A sandbox that answers as keep-alive and then closes: the peek sees the EOF, so even a POST (which
    could not be retried) goes on a new connection."""
    sandbox.scripts = [[FINE, CLOSE], [FINE2]]
    assert await two_requests(edge, post(sandbox.port), sandbox.port) == [(200, b"fine"), (200, b"fine2")]
    assert (sandbox.connections, len(sandbox.requests)) == (2, 2)


async def test_second_response_nobody_asked_for_never_reaches_the_next_client(autojump_clock, edge, sandbox):
    """A sandbox that sends a second response a moment after the first: it sits on the idle pooled
    connection, the peek finds it, and the next request goes on a new connection (no desync)."""
    sandbox.scripts = [[FINE, 0.5, EVIL], [FINE2]]
    c = await edge.connect()
    await c.send(get(sandbox.port))
    assert (await c.read_response()).body == b"fine"
    await trio.sleep(1)
    await c.send(last(sandbox.port))
    assert (await c.read_response()).body == b"fine2"
    assert await c.read_to_eof() == b""
    await released(edge, c)
    assert sandbox.connections == 2
