"""The PROXY protocol on a listener: the client address a TCP load balancer passes in front of the
stream, v1 (text) and v2 (binary), on plain and TLS listeners; and the pure parser's table."""

from __future__ import annotations

import json
import socket
import ssl
import struct

import pytest
import trio

from edge.catalog.model import Sandbox
from edge.errors import BadRequest
from edge.http import proxyproto
from edge.metrics import STATS
from tests.conftest import parse_responses
from tests.tlsutil import TestCA


def v2(src: str, dst: str = "127.0.0.1", sport: int = 51000, dport: int = 80, command: int = 1) -> bytes:
    if ":" in src:
        body = (
            socket.inet_pton(socket.AF_INET6, src)
            + socket.inet_pton(socket.AF_INET6, "::1")
            + struct.pack("!HH", sport, dport)
        )
        family = 0x21
    else:
        body = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!HH", sport, dport)
        family = 0x11
    return proxyproto.V2_SIGNATURE + bytes([0x20 | command, family]) + struct.pack("!H", len(body)) + body


PARSE = [
    ("v1 TCP4", b"PROXY TCP4 203.0.113.7 127.0.0.1 51000 80\r\nGET", (43, "203.0.113.7")),
    ("v1 TCP6", b"PROXY TCP6 2001:db8::7 ::1 51000 80\r\n", (37, "2001:db8::7")),
    ("v1 UNKNOWN keeps the peer", b"PROXY UNKNOWN\r\n", (15, None)),
    ("v1 not yet whole", b"PROXY TCP4 203.0.", None),
    ("v2 IPv4", v2("203.0.113.9") + b"GET", (28, "203.0.113.9")),
    ("v2 IPv6", v2("2001:db8::9"), (52, "2001:db8::9")),
    ("v2 LOCAL keeps the peer", v2("203.0.113.9", command=0), (28, None)),
    ("v2 not yet whole", v2("203.0.113.9")[:20], None),
]


@pytest.mark.parametrize(("label", "data", "want"), PARSE, ids=[row[0] for row in PARSE])
def test_proxy_headers_are_read_exactly(label, data, want):
    """Header length and address; None while more bytes are needed."""
    assert proxyproto.parse(data) == want


REFUSED = [
    ("plain HTTP instead", b"GET / HTTP/1.1\r\n\r\n"),
    ("v1 bad family", b"PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n"),
    ("v1 bad address", b"PROXY TCP4 1.2.3.999 5.6.7.8 1 2\r\n"),
    ("v1 address of the other family", b"PROXY TCP4 2001:db8::1 ::1 1 2\r\n"),
    ("v1 too long", b"PROXY TCP4 " + b"1" * 120),
    ("v2 wrong version", proxyproto.V2_SIGNATURE + b"\x10\x11\x00\x0c" + b"\x00" * 12),
]


@pytest.mark.parametrize(("label", "data"), REFUSED, ids=[row[0] for row in REFUSED])
def test_what_is_no_proxy_header_is_refused(label, data):
    with pytest.raises(BadRequest):
        proxyproto.parse(data)


async def _ask(port: int, prefix: bytes, host: str) -> dict:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(prefix + f"GET /echo HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        out = b""
        with trio.fail_after(5):
            while chunk := await stream.receive_some(65536):
                out += chunk
    [(status, _, body)] = parse_responses(out)
    assert status == 200
    return {k: v for k, v in json.loads(body)["headers"]}


@pytest.mark.trio
async def test_client_address_comes_from_the_proxy_header(make_edge, backend):
    """v1 and v2 on the plain listener: the sandbox is told the balancer's client, not the balancer."""
    edge = await make_edge([Sandbox("demo", "127.0.0.2")], http={"proxy_protocol": True})
    host = edge.host(backend.port, "demo")
    assert (await _ask(edge.port, b"PROXY TCP4 203.0.113.7 127.0.0.1 51000 80\r\n", host))[
        "x-forwarded-for"
    ] == "203.0.113.7"
    assert (await _ask(edge.port, v2("198.51.100.4"), host))["x-forwarded-for"] == "198.51.100.4"


@pytest.mark.trio
async def test_connection_without_a_proxy_header_is_closed(make_edge, backend):
    """proxy_protocol on: a client that speaks HTTP straight away is closed and counted."""
    edge = await make_edge([Sandbox("demo", "127.0.0.2")], http={"proxy_protocol": True})
    before = STATS.http_proxy_header_errors
    stream = await trio.open_tcp_stream("127.0.0.1", edge.port)
    async with stream:
        await stream.send_all(f"GET /echo HTTP/1.1\r\nHost: {edge.host(backend.port, 'demo')}\r\n\r\n".encode())
        with trio.fail_after(3):
            try:
                assert await stream.receive_some(100) == b""
            except trio.BrokenResourceError:
                pass
    assert STATS.http_proxy_header_errors == before + 1


@pytest.mark.trio
async def test_only_trusted_proxies_may_send_one(make_edge, backend):
    """With http.trusted_proxies set, a PROXY header from another address is refused."""
    edge = await make_edge(
        [Sandbox("demo", "127.0.0.2")], http={"proxy_protocol": True, "trusted_proxies": ["10.0.0.0/8"]}
    )
    stream = await trio.open_tcp_stream("127.0.0.1", edge.port)
    async with stream:
        await stream.send_all(b"PROXY TCP4 203.0.113.7 127.0.0.1 51000 80\r\nGET / HTTP/1.1\r\n\r\n")
        with trio.fail_after(3):
            try:
                assert await stream.receive_some(100) == b""
            except trio.BrokenResourceError:
                pass


@pytest.mark.trio
async def test_proxy_header_in_front_of_tls(make_edge, backend, tmp_path):
    """https.proxy_protocol: the header comes before the ClientHello; the handshake and request go on."""
    ca = TestCA(tmp_path)
    cert, key = ca.issue(["*.sandbox.localhost"], "pp")
    edge = await make_edge(
        [Sandbox("demo", "127.0.0.2")],
        https={"listen": "127.0.0.1:0", "proxy_protocol": True, "certs": [{"cert": str(cert), "key": str(key)}]},
    )
    host = f"{backend.port}-demo.sandbox.localhost"

    def talk() -> bytes:
        ctx = ssl.create_default_context(cafile=str(ca.path))
        with socket.create_connection(("127.0.0.1", edge.tls_port)) as raw:
            raw.sendall(v2("192.0.2.55"))
            with ctx.wrap_socket(raw, server_hostname=host) as tls:
                tls.sendall(f"GET /echo HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
                out = b""
                while chunk := tls.recv(65536):
                    out += chunk
                return out

    [(status, _, body)] = parse_responses(await trio.to_thread.run_sync(talk))
    assert status == 200
    assert {k: v for k, v in json.loads(body)["headers"]}["x-forwarded-for"] == "192.0.2.55"
