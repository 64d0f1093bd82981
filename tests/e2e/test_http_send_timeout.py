"""A peer that stops reading cannot hold anything: every write has http.send_timeout.

A client that stops reading a 100 MiB download, and a sandbox that stops reading a 100 MiB upload,
each release the sandbox connection, the sandbox's slot (max_connections = 1 here) and the
descriptors within send_timeout plus a second; meanwhile other clients are served normally.
"""

from __future__ import annotations

import os
import socket
from functools import partial

import pytest
import trio

from edge.catalog.model import Sandbox
from tests.conftest import BOTH_LANES

pytestmark = [pytest.mark.trio, pytest.mark.parametrize("lane", BOTH_LANES, indirect=True)]

SEND_TIMEOUT = 1.0
MiB = 1 << 20


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def small_request_works(edge, port: int, sandbox: str = "other") -> bool:
    stream = await trio.open_tcp_stream("127.0.0.1", edge.port)
    async with stream:
        await stream.send_all(
            f"GET /echo HTTP/1.1\r\nHost: {edge.host(port, sandbox)}\r\nConnection: close\r\n\r\n".encode()
        )
        with trio.fail_after(2):
            return (await stream.receive_some(65536)).startswith(b"HTTP/1.1 200")


async def served_within(seconds: float, edge, port: int, sandbox: str) -> float:
    """Seconds until a request to `sandbox` is answered 200 (not 429), polling."""
    t0 = trio.current_time()
    with trio.fail_after(seconds):
        while True:
            stream = await trio.open_tcp_stream("127.0.0.1", edge.port)
            async with stream:
                await stream.send_all(
                    f"GET /echo HTTP/1.1\r\nHost: {edge.host(port, sandbox)}\r\nConnection: close\r\n\r\n".encode()
                )
                if (await stream.receive_some(65536)).startswith(b"HTTP/1.1 200"):
                    return trio.current_time() - t0
            await trio.sleep(0.05)


@pytest.mark.parametrize("splice", [True, False], ids=["spliced", "copied"])
async def test_client_that_stops_reading_a_download_releases_everything(make_edge, backend, backend3, splice):
    """GET 100 MiB, read the head, stop reading: within send_timeout + 1 s the slot and the
    descriptors are back, and other clients were served all along."""
    edge = await make_edge(
        [Sandbox("big", "127.0.0.2", max_connections=1), Sandbox("other", "127.0.0.3")],
        # Pooled sandbox connections are reaped fast, so that the count of descriptors tells.
        http={"send_timeout": SEND_TIMEOUT, "splice_threshold": 262144 if splice else 0, "upstream_idle_timeout": 0.2},
    )
    assert await small_request_works(edge, backend3.port)
    before = open_fds()
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    stalled = trio.socket.from_stdlib_socket(sock)
    await stalled.connect(("127.0.0.1", edge.port))
    await stalled.send(f"GET /bytes?n={100 * MiB} HTTP/1.1\r\nHost: {edge.host(backend.port, 'big')}\r\n\r\n".encode())
    assert (await stalled.recv(4096)).startswith(b"HTTP/1.1 200")
    # Now stop reading. The slot is taken while the edge waits for room to write.
    await trio.sleep(0.3)
    assert await small_request_works(edge, backend3.port)  # others are served meanwhile
    waited = await served_within(SEND_TIMEOUT + 1.5, edge, backend.port, "big")
    assert waited <= SEND_TIMEOUT + 1.5
    with trio.fail_after(2):
        while open_fds() > before + 1:  # + our own stalled socket
            await trio.sleep(0.05)
    sock.close()


async def _never_reads(stream: trio.SocketStream, accepted: list) -> None:
    """A sandbox that reads the request head and then stops reading (and never answers)."""
    accepted.append(stream)
    await stream.receive_some(4096)
    await trio.sleep_forever()


async def slot_taken(edge, port: int) -> bool:
    """True when a request to `sink` is refused at once with 429 (its one slot is in use)."""
    stream = await trio.open_tcp_stream("127.0.0.1", edge.port)
    async with stream:
        await stream.send_all(f"GET / HTTP/1.1\r\nHost: {edge.host(port, 'sink')}\r\n\r\n".encode())
        with trio.move_on_after(0.3):
            return (await stream.receive_some(65536)).startswith(b"HTTP/1.1 429")
    return False  # admitted: the sandbox (which never answers) has it now


async def test_sandbox_that_stops_reading_an_upload_releases_everything(make_edge, nursery, backend3):
    """POST 100 MiB to a sandbox that stops reading: within send_timeout + 1 s the edge gives up on
    it (504), and the slot and the edge's descriptors are back."""
    accepted: list = []
    listeners = await nursery.start(
        partial(trio.serve_tcp, partial(_never_reads, accepted=accepted), 0, host="127.0.0.5")
    )
    port = listeners[0].socket.getsockname()[1]
    edge = await make_edge(
        [Sandbox("sink", "127.0.0.5", max_connections=1), Sandbox("other", "127.0.0.3")],
        http={"send_timeout": SEND_TIMEOUT, "response_head_timeout": 60.0},
    )
    assert await small_request_works(edge, backend3.port)
    before = open_fds()
    client = await trio.open_tcp_stream("127.0.0.1", edge.port)
    await client.send_all(
        f"POST /up HTTP/1.1\r\nHost: {edge.host(port, 'sink')}\r\nContent-Length: {100 * MiB}\r\n\r\n".encode()
    )
    answer = b""

    async def upload_then_read() -> None:
        nonlocal answer
        chunk = b"u" * MiB
        try:
            with trio.move_on_after(SEND_TIMEOUT + 3):
                for _ in range(100):
                    await client.send_all(chunk)
        except trio.BrokenResourceError:
            pass
        try:
            with trio.move_on_after(2):
                while data := await client.receive_some(65536):
                    answer += data
        except trio.BrokenResourceError:
            pass

    async with trio.open_nursery() as inner:
        inner.start_soon(upload_then_read)
        await trio.sleep(0.3)
        assert await small_request_works(edge, backend3.port)  # others are served meanwhile
        assert await slot_taken(edge, port)  # the stalled upload holds the sandbox's one slot
        t0 = trio.current_time()
        with trio.fail_after(SEND_TIMEOUT + 1.5):
            while await slot_taken(edge, port):
                await trio.sleep(0.05)
        assert trio.current_time() - t0 <= SEND_TIMEOUT + 1.5
    assert answer.startswith(b"HTTP/1.1 504") or answer == b"", answer[:300]
    await client.aclose()
    for stream in accepted:
        await stream.aclose()
    with trio.fail_after(2):  # the edge's client socket, sandbox socket and pipes are closed
        while open_fds() > before:
            await trio.sleep(0.05)
