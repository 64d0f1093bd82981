"""Shared fixtures: an in-process edge on a free port, real backends, and raw socket clients."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import trio

from edge import config as config_mod
from edge.catalog.model import Sandbox, Snapshot
from edge.catalog.store import LiveCatalog
from edge.http.server import serve
from tests.backends import Backend

REPO = Path(__file__).resolve().parent.parent


class EdgeUnderTest:
    def __init__(self, port: int, live: LiveCatalog, config, tls_port: int | None = None) -> None:
        self.port = port
        #: The HTTPS listener's port, when the test configured one.
        self.tls_port = tls_port
        self.live = live
        self.config = config

    def add(self, sandbox_id: str, address: str, **kw) -> None:
        current = list(self.live.snapshot.by_id.values())
        current = [s for s in current if s.id != sandbox_id] + [Sandbox(sandbox_id, address, **kw)]
        self.live.swap(Snapshot(current, self.live.snapshot.version + 1))

    def remove(self, sandbox_id: str) -> None:
        current = [s for s in self.live.snapshot.by_id.values() if s.id != sandbox_id]
        self.live.swap(Snapshot(current, self.live.snapshot.version + 1))

    def host(self, port: int, sandbox_id: str) -> str:
        return f"{port}-{sandbox_id}.sandbox.localhost:{self.port}"

    def url(self, port: int, sandbox_id: str, path: str = "/") -> str:
        return f"http://{self.host(port, sandbox_id)}{path}"


@pytest.fixture
def lane(request) -> str:
    """Which lane carries plain exchanges: "fast" (the default) or "h11" (http.fast_lane = false).

    A module runs every test through both with
    `pytestmark = pytest.mark.parametrize("lane", BOTH_LANES, indirect=True)`."""
    return getattr(request, "param", "fast")


BOTH_LANES = ["fast", "h11"]


@pytest.fixture
def make_edge(nursery, tmp_path, lane):
    """Start an in-process edge: `await make_edge(http={...}, sandboxes=[...])`."""

    async def start(sandboxes=(), **overrides) -> EdgeUnderTest:
        raw = {
            "http": {"listen": "127.0.0.1:0", "fast_lane": lane == "fast"},
            "catalog": f"sqlite:///{tmp_path}/catalog.db",
            "access_log": False,
        }
        for key, value in overrides.items():
            if isinstance(value, dict):
                raw.setdefault(key, {}).update(value)
            else:
                raw[key] = value
        cfg = config_mod.load(env={}, overrides=raw)
        live = LiveCatalog(Snapshot(list(sandboxes), 1))
        bound = dict(await nursery.start(serve, cfg, live))  # {"http": (host, port), "https": ...}
        return EdgeUnderTest(bound["http"][1], live, cfg, bound.get("https", (None, None))[1])

    return start


@pytest.fixture
async def backend(nursery):
    return await Backend("b2").start(nursery, "127.0.0.2")


@pytest.fixture
async def backend3(nursery):
    return await Backend("b3").start(nursery, "127.0.0.3")


@pytest.fixture
async def edge(make_edge, backend, backend3):
    """An edge with sandbox `alpha` on 127.0.0.2 and `beta` on 127.0.0.3."""
    return await make_edge([Sandbox("alpha", "127.0.0.2"), Sandbox("beta", "127.0.0.3")])


async def read_to_eof(stream: trio.SocketStream, timeout: float = 5.0, into: bytes = b"") -> bytes:
    """Everything the server sends until it closes (a reset counts as a close), or until `timeout`."""
    out = bytearray(into)
    with trio.move_on_after(timeout):
        while True:
            try:
                chunk = await stream.receive_some(1 << 16)
            except trio.BrokenResourceError:
                break
            if not chunk:
                break
            out += chunk
    return bytes(out)


async def raw_exchange(port: int, data: bytes, *, timeout: float = 5.0, half_close: bool = False) -> bytes:
    """Send raw bytes to 127.0.0.1:port and read until the server closes (or `timeout`)."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(data)
        if half_close:
            await stream.send_eof()
        return await read_to_eof(stream, timeout)


def parse_responses(data: bytes) -> list[tuple[int, dict[str, str], bytes]]:
    """Split raw bytes into (status, headers, body) responses (Content-Length or chunked framed)."""
    import h11

    conn = h11.Connection(h11.CLIENT)
    out = []
    conn.receive_data(data)
    conn.receive_data(b"")
    status, headers, body = 0, {}, bytearray()
    while True:
        # pretend we sent a GET each time so h11 accepts the next response
        if conn.our_state is h11.IDLE:
            conn.send(h11.Request(method="GET", target="/", headers=[("host", "x")]))
            conn.send(h11.EndOfMessage())
        try:
            event = conn.next_event()
        except h11.RemoteProtocolError:
            break
        if type(event) is h11.Response:
            status, headers, body = event.status_code, {n.decode(): v.decode() for n, v in event.headers}, bytearray()
        elif type(event) is h11.InformationalResponse:
            out.append((event.status_code, {n.decode(): v.decode() for n, v in event.headers}, b""))
        elif type(event) is h11.Data:
            body += event.data
        elif type(event) is h11.EndOfMessage:
            out.append((status, headers, bytes(body)))
            if conn.our_state is h11.DONE and conn.their_state is h11.DONE:
                conn.start_next_cycle()
            else:
                break
        else:
            break
    return out


async def curl(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run the real curl; returns the completed process with stdout as bytes."""
    return await trio.run_process(
        ["curl", "-sS", "--max-time", "60", *args], capture_stdout=True, capture_stderr=True, check=check
    )


def echo_headers(body: bytes) -> dict[str, list[str]]:
    """The headers the backend saw, as name -> [values]."""
    doc = json.loads(body)
    out: dict[str, list[str]] = {}
    for name, value in doc["headers"]:
        out.setdefault(name, []).append(value)
    return out
