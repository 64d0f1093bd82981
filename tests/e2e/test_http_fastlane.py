"""The fast lane and its hand-overs to h11, on real sockets.

A scripted sandbox answers each request with exactly the bytes (and pauses) a test gives it, so a
response can be plain, split, chunked, too long or cut short on purpose. Which lane carried an
exchange is read from the edge's own counters (STATS.http_h11_exchanges).
"""

from __future__ import annotations

import json

import pytest
import trio

from edge.catalog.model import Sandbox
from edge.metrics import STATS
from tests.conftest import parse_responses
from tests.scripted import CLOSE, Scripted

pytestmark = pytest.mark.trio


@pytest.fixture
async def scripted(nursery):
    return await Scripted().start(nursery)


@pytest.fixture
async def edge4(make_edge, scripted, backend):
    return await make_edge([Sandbox("gamma", "127.0.0.4"), Sandbox("alpha", "127.0.0.2")])


def request(edge, port: int, sandbox: str = "gamma", path: str = "/", extra: str = "") -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: {edge.host(port, sandbox)}\r\n{extra}\r\n".encode()


async def read_until_closed(stream: trio.SocketStream, seconds: float = 5.0) -> bytes:
    """Everything until the edge closes; fails if it does not close within `seconds`."""
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


async def exchange(edge, data: bytes) -> bytes:
    stream = await trio.open_tcp_stream("127.0.0.1", edge.port)
    async with stream:
        await stream.send_all(data)
        return await read_until_closed(stream)


def h11_counts() -> dict[str, int]:
    return dict(STATS.http_h11_exchanges)


OK = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok"


async def test_plain_exchanges_never_reach_h11(edge4, scripted):
    """Plain requests answered with Content-Length: all served, and h11 carried none of them."""
    before = h11_counts()
    scripted.scripts = [[OK], [OK], [OK]]
    data = request(edge4, scripted.port) * 2 + request(edge4, scripted.port, extra="Connection: close\r\n")
    got = parse_responses(await exchange(edge4, data))
    assert [(status, body) for status, _, body in got] == [(200, b"ok")] * 3
    assert h11_counts() == before
    assert scripted.connections == 1


async def test_connection_close_request_is_answered_then_closed(edge4, scripted):
    """`Connection: close`: the answer says so and the edge closes right after it."""
    scripted.scripts = [[OK]]
    got = await exchange(edge4, request(edge4, scripted.port, extra="Connection: close\r\n"))
    [(status, headers, body)] = parse_responses(got)
    assert (status, body, headers.get("connection")) == (200, b"ok", "close")


async def test_http10_request_is_answered_then_closed(edge4, scripted):
    """An HTTP/1.0 request gets its answer and the connection closes (edge keeps no 1.0 alive)."""
    scripted.scripts = [[OK]]
    got = await exchange(edge4, f"GET / HTTP/1.0\r\nHost: {edge4.host(scripted.port, 'gamma')}\r\n\r\n".encode())
    assert got.startswith(b"HTTP/1.1 200") and got.endswith(b"\r\n\r\nok")


async def test_small_post_body_arriving_with_its_head_is_forwarded_whole(edge4, backend):
    """A POST whose body came with its head goes to the sandbox intact, on the fast lane."""
    before = h11_counts()
    body = b'{"name": "value"}'
    data = (
        f"POST /echo HTTP/1.1\r\nHost: {edge4.host(backend.port, 'alpha')}\r\nContent-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    ).encode() + body
    [(status, _, answer)] = parse_responses(await exchange(edge4, data))
    assert status == 200 and json.loads(answer)["body_len"] == len(body)
    assert h11_counts() == before


async def test_response_head_split_across_reads_goes_to_h11_and_the_next_comes_back(edge4, scripted):
    """A head in two pieces is finished by h11; the next exchange on the connection is fast again."""
    before = h11_counts()
    scripted.scripts = [[b"HTTP/1.1 200 OK\r\nContent-Le", 0.1, b"ngth: 5\r\n\r\nsplit"], [OK]]
    data = request(edge4, scripted.port) + request(edge4, scripted.port, extra="Connection: close\r\n")
    got = parse_responses(await exchange(edge4, data))
    assert [(status, body) for status, _, body in got] == [(200, b"split"), (200, b"ok")]
    after = h11_counts()
    assert after["response"] == before["response"] + 1 and after["request"] == before["request"]
    assert scripted.connections == 1


async def test_chunked_response_is_relayed_by_h11_and_the_connection_lives_on(edge4, scripted):
    """A chunked answer (not plain) arrives whole, and the next request reuses both connections."""
    chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
    scripted.scripts = [[chunked], [OK]]
    data = request(edge4, scripted.port) + request(edge4, scripted.port, extra="Connection: close\r\n")
    got = parse_responses(await exchange(edge4, data))
    assert [(status, body) for status, _, body in got] == [(200, b"abcde"), (200, b"ok")]
    assert scripted.connections == 1


async def test_early_hints_reach_the_client_before_the_answer(edge4, scripted):
    """A 103 before the final answer is passed on (h11 handles 1xx), then the answer itself."""
    scripted.scripts = [[b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n", 0.05, OK]]
    got = await exchange(edge4, request(edge4, scripted.port, extra="Connection: close\r\n"))
    assert got.startswith(b"HTTP/1.1 103") and b"link: </a.css>; rel=preload" in got.lower()
    assert got.endswith(b"\r\n\r\nok")


async def test_body_arriving_after_the_head_in_pieces_is_relayed_and_the_upstream_reused(edge4, scripted):
    """Head first, then the body in two writes: the client gets all of it; the upstream is pooled."""
    scripted.scripts = [[b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n", 0.05, b"01234", 0.05, b"56789"], [OK]]
    data = request(edge4, scripted.port) + request(edge4, scripted.port, extra="Connection: close\r\n")
    got = parse_responses(await exchange(edge4, data))
    assert [(status, body) for status, _, body in got] == [(200, b"0123456789"), (200, b"ok")]
    assert scripted.connections == 1


async def test_sandbox_sending_more_than_its_content_length_loses_that_connection(edge4, scripted):
    """Bytes past Content-Length: the client gets exactly the declared body; the upstream is not reused."""
    scripted.scripts = [[b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokEXTRA"], [OK]]
    data = request(edge4, scripted.port) + request(edge4, scripted.port, extra="Connection: close\r\n")
    got = parse_responses(await exchange(edge4, data))
    assert [(status, body) for status, _, body in got] == [(200, b"ok"), (200, b"ok")]
    assert scripted.connections == 2


async def test_sandbox_closing_mid_body_closes_the_client_connection(edge4, scripted):
    """10 bytes promised, 5 sent, then close: the client sees the head, 5 bytes and the close."""
    scripted.scripts = [[b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n", 0.05, b"01234", CLOSE]]
    got = await exchange(edge4, request(edge4, scripted.port))
    assert got.startswith(b"HTTP/1.1 200") and got.endswith(b"\r\n\r\n01234")


async def test_error_answer_keeps_the_connection_for_the_next_request(edge4, scripted):
    """A 502 for an unknown sandbox, then a plain request on the same connection: both answered."""
    scripted.scripts = [[OK]]
    data = request(edge4, scripted.port, sandbox="nosuch") + request(
        edge4, scripted.port, extra="Connection: close\r\n"
    )
    got = parse_responses(await exchange(edge4, data))
    assert [status for status, _, _ in got] == [502, 200]


async def test_request_head_split_across_reads_is_served_by_h11(edge4, scripted):
    """A request head in two writes: h11 reads it (counted as such) and the answer is right."""
    before = h11_counts()
    scripted.scripts = [[OK]]
    raw = request(edge4, scripted.port, extra="Connection: close\r\n")
    stream = await trio.open_tcp_stream("127.0.0.1", edge4.port)
    async with stream:
        await stream.send_all(raw[:10])
        await trio.sleep(0.05)
        await stream.send_all(raw[10:])
        got = await read_until_closed(stream)
    assert parse_responses(got)[0][2] == b"ok"
    assert h11_counts()["request"] == before["request"] + 1


async def test_response_without_length_is_read_to_its_close(edge4, scripted):
    """A close-delimited answer (no length) reaches the client whole, re-framed by h11."""
    scripted.scripts = [[b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil-close", CLOSE]]
    got = parse_responses(await exchange(edge4, request(edge4, scripted.port, extra="Connection: close\r\n")))
    assert [(status, body) for status, _, body in got] == [(200, b"until-close")]


async def test_leftover_bytes_on_a_pooled_connection_make_it_stale_not_a_502(edge4, scripted):
    """A sandbox that ran past its Content-Length mid-stream: the next GET finds junk on the pooled
    connection, which is dropped, and the GET retried on a new one."""
    scripted.scripts = [[b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\n", 0.05, b"ab", 0.05, b"cdJUNK"], [OK], [OK]]
    data = request(edge4, scripted.port) + request(edge4, scripted.port, extra="Connection: close\r\n")
    got = parse_responses(await exchange(edge4, data))
    assert [(status, body) for status, _, body in got] == [(200, b"abcd"), (200, b"ok")]
    assert scripted.connections == 2


async def test_fast_lane_off_sends_plain_exchanges_through_h11(make_edge, scripted):
    """http.fast_lane = false: the same plain request is carried by h11 (counted as such) and answered alike."""
    edge = await make_edge([Sandbox("gamma", "127.0.0.4")], http={"fast_lane": False})
    before = h11_counts()
    scripted.scripts = [[OK]]
    got = parse_responses(await exchange(edge, request(edge, scripted.port, extra="Connection: close\r\n")))
    assert [(status, body) for status, _, body in got] == [(200, b"ok")]
    assert h11_counts()["request"] == before["request"] + 1
