"""What one client or one sandbox can hold, and what the edge takes back, on real sockets.

Connection caps (in all and per client address), a client leaving while its sandbox thinks, the
memory of a partial head, and catalog changes that revoke exchanges and tunnels in flight.
"""

from __future__ import annotations

import hashlib
import tracemalloc

import pytest
import trio

from edge.catalog.model import Sandbox
from edge.metrics import STATS
from tests.conftest import BOTH_LANES
from tests.scripted import Scripted

pytestmark = [pytest.mark.trio, pytest.mark.parametrize("lane", BOTH_LANES, indirect=True)]

UPGRADE_101 = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\nConnection: upgrade\r\n\r\n"


async def closed_within(stream: trio.SocketStream, seconds: float) -> bytes:
    """Everything the edge sends until it closes; fails if it is still open after `seconds`."""
    out = b""
    with trio.fail_after(seconds):
        while True:
            try:
                chunk = await stream.receive_some(65536)
            except trio.BrokenResourceError:
                return out
            if not chunk:
                return out
            out += chunk


async def connect(edge, source: str = "127.0.0.1") -> trio.SocketStream:
    sock = trio.socket.socket()
    await sock.bind((source, 0))
    await sock.connect(("127.0.0.1", edge.port))
    return trio.SocketStream(sock)


async def is_served(stream: trio.SocketStream, edge, port: int) -> bool:
    """Send a request to the `gamma` backend; True when an answer comes, False when closed at once."""
    try:
        await stream.send_all(f"GET / HTTP/1.1\r\nHost: {edge.host(port, 'gamma')}\r\n\r\n".encode())
        with trio.fail_after(5):
            return (await stream.receive_some(65536)).startswith(b"HTTP/1.1 ")
    except trio.BrokenResourceError:
        return False


OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


@pytest.fixture
async def scripted(nursery):
    return await Scripted().start(nursery)


async def test_connections_past_max_connections_are_closed_at_once_and_counted(make_edge, scripted):
    """http.max_connections = 3, all three busy: the 4th connection is closed unanswered; once one
    leaves, a new one is served."""
    edge = await make_edge([Sandbox("gamma", "127.0.0.4")], http={"max_connections": 3, "max_connections_per_ip": 3})
    scripted.scripts = [[1.5, OK] for _ in range(3)] + [[OK] for _ in range(3)]
    before = STATS.http_connections_rejected["total"]
    held = [await connect(edge) for _ in range(3)]
    for stream in held:  # each waits for its slow answer: busy, not reclaimable
        await stream.send_all(f"GET / HTTP/1.1\r\nHost: {edge.host(scripted.port, 'gamma')}\r\n\r\n".encode())
    await trio.sleep(0.2)
    extra = await connect(edge, "127.0.0.5")  # another address: the total cap is what refuses it
    assert await closed_within(extra, 1) == b""
    assert STATS.http_connections_rejected["total"] == before + 1
    await held[1].aclose()  # the edge notices within a deadline tick (1 s) and frees the slot
    with trio.fail_after(3):
        while not await is_served(await connect(edge), edge, scripted.port):
            await trio.sleep(0.1)


async def test_at_the_cap_waiting_connections_make_room_for_new_ones(make_edge, scripted):
    """Three connections that sent nothing hold every slot: a new client (from another address) is
    served, and waiting ones are closed to make room (counted), as nginx reuses idle keep-alive
    connections. Without it, idle sockets from a few addresses lock everyone out until head_timeout."""
    edge = await make_edge([Sandbox("gamma", "127.0.0.4")], http={"max_connections": 3, "max_connections_per_ip": 3})
    scripted.scripts = [[OK]]
    rejected, reclaimed = STATS.http_connections_rejected["total"], STATS.http_idle_reclaimed
    idle = []
    for _ in range(3):
        idle.append(await connect(edge))
        await trio.sleep(0.02)
    assert await is_served(await connect(edge, "127.0.0.5"), edge, scripted.port)
    assert STATS.http_connections_rejected["total"] == rejected
    assert STATS.http_idle_reclaimed > reclaimed
    assert await closed_within(idle[0], 1) == b""


async def test_one_address_cannot_take_every_slot(make_edge, scripted):
    """max_connections_per_ip = 2: a third from 127.0.0.1 is closed, one from 127.0.0.5 is served."""
    edge = await make_edge([Sandbox("gamma", "127.0.0.4")], http={"max_connections": 10, "max_connections_per_ip": 2})
    scripted.scripts = [[OK]]
    before = STATS.http_connections_rejected["per_ip"]
    _held = [await connect(edge) for _ in range(2)]
    assert await closed_within(await connect(edge), 2) == b""
    assert STATS.http_connections_rejected["per_ip"] == before + 1
    assert await is_served(await connect(edge, "127.0.0.5"), edge, scripted.port)


async def test_client_leaving_while_the_sandbox_thinks_frees_its_slot_at_once(make_edge, scripted):
    """A sandbox limited to 2 that never answers: both clients leave, and within ~1 s a third gets in
    (not 429); the sandbox sees its connections closed; the exchanges count as 499s."""
    edge = await make_edge(
        [Sandbox("gamma", "127.0.0.4", max_connections=2)],
        http={"response_head_timeout": 300.0, "keepalive_timeout": 4.0},
    )
    scripted.scripts = [[60.0], [60.0], [OK]]
    gone_before = STATS.http_requests[4]  # 499s count as 4xx
    for _ in range(2):
        stream = await connect(edge)
        await stream.send_all(f"GET /slow HTTP/1.1\r\nHost: {edge.host(scripted.port, 'gamma')}\r\n\r\n".encode())
        await trio.sleep(0.1)
        await stream.aclose()
    with trio.fail_after(2.5):
        while STATS.http_requests[4] < gone_before + 2:
            await trio.sleep(0.05)
    assert await is_served(await connect(edge), edge, scripted.port)


async def test_partial_request_head_costs_about_its_own_size(make_edge, scripted):
    """200 connections each holding 60 KB of an unfinished head: about 60 KB each, not twice that."""
    edge = await make_edge([Sandbox("gamma", "127.0.0.4")])
    head = f"GET / HTTP/1.1\r\nHost: {edge.host(scripted.port, 'gamma')}\r\nX-Pad: ".encode() + b"a" * 60_000
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        streams = []
        for _ in range(200):
            stream = await connect(edge)
            await stream.send_all(head)
            streams.append(stream)
        await trio.sleep(0.3)
        per_connection = (tracemalloc.get_traced_memory()[0] - base) / 200
    finally:
        tracemalloc.stop()
    assert per_connection < 1.3 * len(head), per_connection


# --- revocation: a catalog change cuts what it withdraws --------------------------------------------

CHANGES = [
    pytest.param(lambda edge, s: edge.remove("gamma"), id="removed"),
    pytest.param(lambda edge, s: edge.add("gamma", "127.0.0.5"), id="moved"),
    pytest.param(lambda edge, s: edge.add("gamma", "127.0.0.4", public=False, token_hash="a" * 64), id="made-private"),
]


@pytest.mark.parametrize("change", CHANGES)
async def test_catalog_change_cuts_an_open_tunnel_within_a_second(make_edge, scripted, change):
    """A tunnel after 101 keeps echoing until the sandbox is removed, moved or made private: then it closes."""
    edge = await make_edge([Sandbox("gamma", "127.0.0.4")])
    scripted.scripts = [[UPGRADE_101, 60.0]]
    stream = await connect(edge)
    await stream.send_all(
        f"GET /ws HTTP/1.1\r\nHost: {edge.host(scripted.port, 'gamma')}\r\n"
        "Connection: upgrade\r\nUpgrade: echo\r\n\r\n".encode()
    )
    with trio.fail_after(5):
        assert (await stream.receive_some(65536)).startswith(b"HTTP/1.1 101")
    revoked = STATS.http_revoked
    change(edge, scripted)
    await closed_within(stream, 1.0)
    assert STATS.http_revoked == revoked + 1


async def test_token_rotation_cuts_a_private_sandboxs_tunnel(make_edge, scripted):
    """Rotating the token of a private sandbox closes the tunnel opened with the old one."""
    token = "t" * 43
    digest = hashlib.sha256(token.encode()).hexdigest()
    edge = await make_edge([Sandbox("gamma", "127.0.0.4", public=False, token_hash=digest)])
    scripted.scripts = [[UPGRADE_101, 60.0]]
    stream = await connect(edge)
    await stream.send_all(
        f"GET /ws HTTP/1.1\r\nHost: {edge.host(scripted.port, 'gamma')}\r\n"
        f"e2b-traffic-access-token: {token}\r\nConnection: upgrade\r\nUpgrade: echo\r\n\r\n".encode()
    )
    with trio.fail_after(5):
        assert (await stream.receive_some(65536)).startswith(b"HTTP/1.1 101")
    edge.add("gamma", "127.0.0.4", public=False, token_hash="b" * 64)
    await closed_within(stream, 1.0)


async def test_unrelated_catalog_change_leaves_tunnels_alone(make_edge, scripted):
    """A new max_connections or another sandbox added: the open tunnel stays."""
    edge = await make_edge([Sandbox("gamma", "127.0.0.4")])
    scripted.scripts = [[UPGRADE_101, 60.0]]
    stream = await connect(edge)
    await stream.send_all(
        f"GET /ws HTTP/1.1\r\nHost: {edge.host(scripted.port, 'gamma')}\r\n"
        "Connection: upgrade\r\nUpgrade: echo\r\n\r\n".encode()
    )
    with trio.fail_after(5):
        assert (await stream.receive_some(65536)).startswith(b"HTTP/1.1 101")
    edge.add("gamma", "127.0.0.4", max_connections=5)
    edge.add("other", "127.0.0.6")
    with trio.move_on_after(0.5) as waited:
        await stream.receive_some(65536)
    assert waited.cancelled_caught  # nothing came, nothing closed


async def test_catalog_change_cuts_an_exchange_waiting_for_its_answer(make_edge, scripted):
    """A request whose sandbox is still thinking is cut when the sandbox is removed, not retried."""
    edge = await make_edge([Sandbox("gamma", "127.0.0.4")])
    scripted.scripts = [[60.0], [OK]]
    stream = await connect(edge)
    await stream.send_all(f"GET /slow HTTP/1.1\r\nHost: {edge.host(scripted.port, 'gamma')}\r\n\r\n".encode())
    await trio.sleep(0.2)
    edge.remove("gamma")
    assert await closed_within(stream, 1.0) == b""
    assert len(scripted.requests) == 1
