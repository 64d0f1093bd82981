"""WebSocket tunnels through the edge, with the `websockets` library on both ends."""

from __future__ import annotations

import json
import socket
import subprocess
import sys

import pytest
import trio
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from edge.catalog.model import Sandbox
from tests.conftest import REPO, parse_responses, raw_exchange


@pytest.fixture
def ws_backend():
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.ws_echo", "127.0.0.3"], cwd=REPO, stdout=subprocess.PIPE, text=True
    )
    port = int(proc.stdout.readline())
    yield port
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture
async def ws_edge(make_edge):
    return await make_edge([Sandbox("wsbox", "127.0.0.3", mask_request_host="localhost:${PORT}")])


def _uri(edge, port, path="/"):
    return f"ws://{edge.host(port, 'wsbox')}{path}"


def _sock(edge):
    """glibc does not resolve *.localhost (curl and browsers do): connect to the edge by address."""
    return socket.create_connection(("127.0.0.1", edge.port))


async def test_websocket_echoes_text_and_binary(ws_edge, ws_backend):
    """Text and binary messages go through the tunnel and come back unchanged."""

    def talk():
        with connect(_uri(ws_edge, ws_backend), sock=_sock(ws_edge)) as ws:
            ws.send("hello")
            text = ws.recv(timeout=5)
            ws.send(b"\x00\x01\xfe\xff")
            binary = ws.recv(timeout=5)
        return text, binary

    assert await trio.to_thread.run_sync(talk) == ("hello", b"\x00\x01\xfe\xff")


async def test_websocket_carries_a_16_mib_message(ws_edge, ws_backend):
    """A 16 MiB binary message crosses the tunnel both ways intact."""
    payload = bytes(range(256)) * (1 << 16)

    def talk():
        with connect(_uri(ws_edge, ws_backend), sock=_sock(ws_edge), max_size=64 << 20) as ws:
            ws.send(payload)
            return ws.recv(timeout=30)

    assert await trio.to_thread.run_sync(talk) == payload


async def test_websocket_upgrade_gets_the_same_header_rewrite(ws_edge, ws_backend):
    """The upgrade request is masked and gets X-Forwarded-* like any request."""

    def talk():
        with connect(
            _uri(ws_edge, ws_backend, "/headers"),
            sock=_sock(ws_edge),
            additional_headers={"X-Forwarded-For": "6.6.6.6"},
        ) as ws:
            return json.loads(ws.recv(timeout=5))

    headers = dict(await trio.to_thread.run_sync(talk))
    assert headers["host"] == f"localhost:{ws_backend}"
    assert headers["x-forwarded-host"] == ws_edge.host(ws_backend, "wsbox")
    assert headers["x-forwarded-for"] == "127.0.0.1"
    assert headers["upgrade"] == "websocket" and headers["connection"].lower() == "upgrade"


async def test_server_side_close_reaches_the_client(ws_edge, ws_backend):
    """The sandbox closing the WebSocket closes it for the client, with its code."""

    def talk():
        with connect(_uri(ws_edge, ws_backend, "/close"), sock=_sock(ws_edge)) as ws:
            ws.send("bye")
            assert ws.recv(timeout=5) == "bye"
            try:
                ws.recv(timeout=5)
            except ConnectionClosed as exc:
                return exc.rcvd.code
        return None

    assert await trio.to_thread.run_sync(talk) == 4000


async def test_client_side_close_closes_the_sandbox_side(ws_edge, nursery):
    """When the client goes away, the tunnel's sandbox socket is closed too."""
    closed = trio.Event()
    port_box = []

    async def upstream(stream):
        # A hand-made sandbox: answer 101, then wait for EOF from the edge.
        data = b""
        while b"\r\n\r\n" not in data:
            data += await stream.receive_some(4096)
        await stream.send_all(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
        while await stream.receive_some(4096):
            pass
        closed.set()

    listeners = await nursery.start(trio.serve_tcp, upstream, 0)
    port_box.append(listeners[0].socket.getsockname()[1])
    host = ws_edge.host(port_box[0], "wsbox")
    stream = await trio.open_tcp_stream("127.0.0.1", ws_edge.port)
    await stream.send_all(
        f"GET / HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n".encode()
    )
    got = await stream.receive_some(4096)
    assert got.startswith(b"HTTP/1.1 101")
    await stream.aclose()
    with trio.fail_after(5):
        await closed.wait()


async def test_bytes_after_the_upgrade_head_are_passed_on_first(ws_edge, nursery):
    """Bytes the client sent right behind its upgrade request, and bytes the sandbox sent right
    behind its 101, both reach the other side before anything else."""
    seen = []

    async def upstream(stream):
        data = b""
        while b"\r\n\r\n" not in data:
            data += await stream.receive_some(4096)
        head, _, early = data.partition(b"\r\n\r\n")
        # one write: the 101 and the first bytes of the new protocol
        await stream.send_all(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x-raw\r\nConnection: Upgrade\r\n\r\nSERVER-FIRST"
        )
        while len(early) < len(b"CLIENT-EARLY"):
            early += await stream.receive_some(4096)
        seen.append(early)

    listeners = await nursery.start(trio.serve_tcp, upstream, 0)
    host = ws_edge.host(listeners[0].socket.getsockname()[1], "wsbox")
    req = f"GET / HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\nUpgrade: x-raw\r\n\r\nCLIENT-EARLY".encode()
    data = await raw_exchange(ws_edge.port, req, timeout=2)
    assert data.startswith(b"HTTP/1.1 101") and data.endswith(b"\r\n\r\nSERVER-FIRST")
    assert seen == [b"CLIENT-EARLY"]


async def test_refused_upgrade_leaves_a_plain_http_connection(ws_edge, backend):
    """After a non-101 answer to an upgrade, the next request on the connection is routed on its own."""
    ws_edge.add("alpha", "127.0.0.2")
    a = ws_edge.host(backend.port, "alpha")
    req = (
        f"GET /echo?up HTTP/1.1\r\nHost: {a}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
        f"GET /echo?next HTTP/1.1\r\nHost: {a}\r\nConnection: close\r\n\r\n"
    )
    responses = parse_responses(await raw_exchange(ws_edge.port, req.encode()))
    assert [json.loads(r[2])["target"] for r in responses] == ["/echo?up", "/echo?next"]


async def test_upgrade_to_unknown_sandbox_gets_the_json_error(ws_edge):
    """A WebSocket client asking for a sandbox that does not exist gets 502, not a hang."""

    def talk():
        try:
            with connect(f"ws://{ws_edge.host(3000, 'ghost')}/", sock=_sock(ws_edge), open_timeout=5):
                return None
        except InvalidStatus as exc:
            return exc.response.status_code, json.loads(exc.response.body)["message"]

    assert await trio.to_thread.run_sync(talk) == (502, "The sandbox was not found")
