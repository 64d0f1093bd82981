"""A sandbox connection carries the next request only when nothing at all followed the last response.

The probe: a sandbox answers `/big` with its body and then, unasked, a second response
(`SMUGGLED-BYTES`). Client A fetches `/big`; clients B and C then each send a request on new client
connections. If the edge pools that sandbox connection, B reads the smuggled answer and C reads B's
(response desynchronisation). Every case runs in both lanes, with the body spliced and not, chunked
and not, and with the stray bytes in the same write as the body's end or a moment later.
"""

from __future__ import annotations

import pytest
import trio

from edge.catalog.model import Sandbox
from tests.conftest import BOTH_LANES, parse_responses
from tests.scripted import Scripted

pytestmark = [pytest.mark.trio, pytest.mark.parametrize("lane", BOTH_LANES, indirect=True)]

SMUGGLED = b"HTTP/1.1 200 OK\r\nContent-Length: 14\r\n\r\nSMUGGLED-BYTES"


def answer(text: bytes) -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(text), text)


def big_response(size: int, chunked: bool) -> list:
    body = b"x" * size
    if chunked:
        return [b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", b"%x\r\n%s\r\n0\r\n\r\n" % (size, body)]
    return [b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size, body]


CASES = [
    pytest.param(300_000, False, 0.0, id="spliced-content-length"),
    pytest.param(100_000, False, 0.0, id="content-length-read-in-pieces"),
    pytest.param(100_000, False, 0.05, id="content-length-stray-bytes-a-moment-later"),
    pytest.param(300_000, False, 0.05, id="spliced-stray-bytes-a-moment-later"),
    pytest.param(2, False, 0.0, id="small-content-length"),
    pytest.param(100_000, True, 0.0, id="chunked"),
    pytest.param(100_000, True, 0.05, id="chunked-stray-bytes-a-moment-later"),
]


async def get(port: int, host: str, path: str) -> tuple[int, bytes]:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        out = b""
        with trio.fail_after(10):
            while chunk := await stream.receive_some(1 << 16):
                out += chunk
    [(status, _, body)] = parse_responses(out)
    return status, body


@pytest.mark.parametrize(("size", "chunked", "pause"), CASES)
async def test_bytes_after_a_response_never_reach_another_client(make_edge, nursery, size, chunked, pause):
    """A, B and C in turn: each gets its own answer; the stray response is dropped with its connection."""
    sandbox = await Scripted().start(nursery)
    edge = await make_edge([Sandbox("gamma", "127.0.0.4")])
    big = big_response(size, chunked)
    stray = [pause, SMUGGLED] if pause else []
    big[-1] += b"" if pause else SMUGGLED
    sandbox.scripts = [big + stray, [answer(b"answer-for-B")], [answer(b"answer-for-C")]]
    host = edge.host(sandbox.port, "gamma")

    status, body = await get(edge.port, host, "/big")
    assert (status, len(body)) == (200, size)
    await trio.sleep(pause + 0.1)  # the stray bytes have arrived by now
    assert await get(edge.port, host, "/b") == (200, b"answer-for-B")
    assert await get(edge.port, host, "/c") == (200, b"answer-for-C")
    assert [r.split(b" ")[1] for r in sandbox.requests] == [b"/big", b"/b", b"/c"]
