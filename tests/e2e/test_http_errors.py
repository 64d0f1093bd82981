"""Error answers (E2B's codes, JSON or HTML, CORS) and the smuggling defences, over real sockets."""

from __future__ import annotations

import json

import pytest
import trio

from edge.catalog.model import Sandbox
from tests.conftest import BOTH_LANES, curl, parse_responses, raw_exchange, read_to_eof

# Every test here runs in both lanes: plain exchanges through the fast lane, and all through h11.
pytestmark = pytest.mark.parametrize("lane", BOTH_LANES, indirect=True)

BROWSER = ["-H", "Accept: text/html,application/xhtml+xml", "-H", "Sec-Fetch-Mode: navigate"]


def _free_port() -> int:
    import socket

    s = socket.socket()
    s.bind(("127.0.0.2", 0))
    port = s.getsockname()[1]
    s.close()
    return port


async def test_unknown_sandbox_gets_502_sandbox_not_found_as_json(edge):
    """An ID not in the catalog: 502 with E2B's JSON shape."""
    res = await curl("-i", edge.url(3000, "ghost", "/x"))
    head, body = res.stdout.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 502")
    assert json.loads(body) == {
        "sandboxId": "ghost",
        "port": 3000,
        "message": "The sandbox was not found",
        "code": 502,
        "error": "sandbox_not_found",
    }


async def test_unknown_sandbox_gets_an_html_page_in_a_browser(edge):
    """A browser navigation gets a self-contained HTML page with the same message."""
    res = await curl("-i", *BROWSER, edge.url(3000, "ghost", "/"))
    head, body = res.stdout.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 502") and b"content-type: text/html" in head.lower()
    assert b"<!doctype html>" in body and b"The sandbox was not found" in body and b"ghost" in body
    assert b"<script" not in body and b"http" not in body.split(b"<body>")[1]  # no external resources


async def test_fetch_and_xhr_get_json_even_when_accepting_html(edge):
    """X-Requested-With or a non-navigation Sec-Fetch-Mode means code is asking: JSON."""
    for extra in (["-H", "X-Requested-With: XMLHttpRequest"], ["-H", "Sec-Fetch-Mode: cors"]):
        res = await curl("-H", "Accept: text/html,*/*", *extra, edge.url(3000, "ghost", "/"))
        assert json.loads(res.stdout)["code"] == 502


async def test_closed_port_gets_502_port_not_open_after_a_short_retry(edge):
    """A port nobody listens on: 502 saying the sandbox runs but port N is not open, after ~1 s of retries."""
    port = _free_port()
    t0 = trio.current_time()
    res = await curl(edge.url(port, "alpha", "/"))
    elapsed = trio.current_time() - t0
    doc = json.loads(res.stdout)
    assert doc["code"] == 502 and doc["port"] == port
    assert doc["message"] == f"The sandbox is running but port {port} is not open"
    assert 0.8 <= elapsed < 5  # it did retry (the bound is behaviour, not a benchmark)


async def test_port_that_opens_during_the_retry_window_is_reached(edge, nursery):
    """A server that starts listening within the retry window gets the request (E2B retries too)."""
    from tests.backends import Backend

    port = _free_port()

    async def late_start():
        await trio.sleep(0.4)
        await Backend("late").start(nursery, "127.0.0.2", port)

    nursery.start_soon(late_start)
    res = await curl(edge.url(port, "alpha", "/echo"))
    assert json.loads(res.stdout)["backend"] == "late"


async def test_slow_sandbox_gets_504(make_edge, backend):
    """No response head within response_head_timeout: 504."""
    edge = await make_edge([Sandbox("alpha", "127.0.0.2")], http={"response_head_timeout": 0.3})
    res = await curl("-i", edge.url(backend.port, "alpha", "/slow?delay=2"))
    assert res.stdout.startswith(b"HTTP/1.1 504")
    assert json.loads(res.stdout.split(b"\r\n\r\n", 1)[1])["code"] == 504


async def test_slow_sandbox_gets_504_after_a_chunked_upload_too(make_edge, backend):
    """The same deadline holds in the h11 lane (a chunked body is not plain), and the wait really ends."""
    edge = await make_edge([Sandbox("alpha", "127.0.0.2")], http={"response_head_timeout": 0.3})
    req = (
        f"POST /slow?delay=3 HTTP/1.1\r\nHost: {edge.host(backend.port, 'alpha')}\r\n"
        "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
    ).encode()
    with trio.fail_after(2):
        got = await raw_exchange(edge.port, req)
    assert got.startswith(b"HTTP/1.1 504")


async def test_connect_timeout_gets_504(make_edge):
    """A sandbox address that never answers a SYN within connect_timeout: 504."""
    # A listener whose backlog is full drops SYNs on Linux, so connect() hangs.
    import socket

    lsock = socket.socket()
    lsock.bind(("127.0.0.2", 0))
    lsock.listen(0)
    port = lsock.getsockname()[1]
    fillers = []
    try:
        for _ in range(4):
            s = socket.socket()
            s.setblocking(False)
            try:
                s.connect(("127.0.0.2", port))
            except BlockingIOError:
                pass
            fillers.append(s)
        edge = await make_edge([Sandbox("alpha", "127.0.0.2")], http={"connect_timeout": 0.3})
        res = await curl("-i", edge.url(port, "alpha", "/"))
        assert res.stdout.startswith(b"HTTP/1.1 504"), res.stdout[:100]
    finally:
        for s in fillers:
            s.close()
        lsock.close()


async def test_sandbox_that_closes_without_answering_gets_502(edge, nursery):
    """A server that accepts and closes: 502 upstream error, the edge keeps serving."""

    async def rude(stream):
        await stream.aclose()

    listeners = await nursery.start(trio.serve_tcp, rude, 0)
    # serve_tcp binds all addresses; the sandbox address 127.0.0.2 reaches it
    port = listeners[0].socket.getsockname()[1]
    res = await curl(edge.url(port, "alpha", "/"))
    doc = json.loads(res.stdout)
    assert doc["code"] == 502 and doc["error"] == "upstream_error"


async def test_error_answers_carry_cors_headers(edge):
    """Browser code on another origin can read the error: Allow-Origin echoes the Origin."""
    res = await curl("-i", "-H", "Origin: https://app.example", edge.url(3000, "ghost", "/"))
    head = res.stdout.split(b"\r\n\r\n", 1)[0].lower()
    assert b"access-control-allow-origin: https://app.example" in head
    assert b"vary: origin" in head


async def test_error_keeps_the_connection_when_the_request_was_complete(edge, backend):
    """A 502 for an unknown sandbox does not cost the keep-alive connection."""
    req = (
        f"GET / HTTP/1.1\r\nHost: {edge.host(3000, 'ghost')}\r\n\r\n"
        f"GET /echo HTTP/1.1\r\nHost: {edge.host(backend.port, 'alpha')}\r\nConnection: close\r\n\r\n"
    )
    responses = parse_responses(await raw_exchange(edge.port, req.encode()))
    assert [r[0] for r in responses] == [502, 200]


# --- smuggling and malformed requests --------------------------------------------------------------


@pytest.mark.parametrize(
    "label, head, status",
    [
        (
            "CL and TE together",
            "POST /echo HTTP/1.1\r\nHost: {h}\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            400,
        ),
        ("TE on HTTP/1.0", "POST /echo HTTP/1.0\r\nHost: {h}\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
        ("HTTP/2.0 on the request line", "GET /echo HTTP/2.0\r\nHost: {h}\r\n\r\n", 505),
        ("HTTP/1.2", "GET /echo HTTP/1.2\r\nHost: {h}\r\n\r\n", 505),
        ("underscore in a header name", "GET /echo HTTP/1.1\r\nHost: {h}\r\nX_Forwarded_For: 1.2.3.4\r\n\r\n", 400),
        ("space in a header name", "GET /echo HTTP/1.1\r\nHost: {h}\r\nX Bad: 1\r\n\r\n", 400),
        ("two Host headers", "GET /echo HTTP/1.1\r\nHost: {h}\r\nHost: {h}\r\n\r\n", 400),
        (
            "two Content-Lengths",
            "POST /echo HTTP/1.1\r\nHost: {h}\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
            400,
        ),
        (
            "transfer coding other than chunked",
            "POST /echo HTTP/1.1\r\nHost: {h}\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            501,
        ),
        ("no Host on HTTP/1.1", "GET /echo HTTP/1.1\r\n\r\n", 400),
        ("bad chunk size", "POST /echo HTTP/1.1\r\nHost: {h}\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400),
        ("CONNECT", "CONNECT {h} HTTP/1.1\r\nHost: {h}\r\n\r\n", 400),
    ],
)
async def test_smuggling_vector_is_refused_and_the_connection_closed(edge, backend, label, head, status):
    """Each vector gets its status, the connection is closed, and nothing reaches the sandbox."""
    h = edge.host(backend.port, "alpha")
    # a request after the bad one must never be served on this connection
    trailer = f"GET /echo?smuggled HTTP/1.1\r\nHost: {h}\r\n\r\n"
    data = await raw_exchange(edge.port, (head.format(h=h) + trailer).encode(), timeout=2.0)
    assert data.startswith(f"HTTP/1.1 {status}".encode()), (label, data[:80])
    assert len(parse_responses(data)) == 1, label
    assert b"connection: close" in data.lower(), label
    assert not any("smuggled" in r["target"] for r in backend.requests), label
    if label != "bad chunk size":
        assert backend.requests == [], label


async def test_head_over_64_kib_in_one_read_gets_431(edge, backend):
    """A 100 KiB head that arrives in one write is refused (h11's own limit misses it, h11 issue 182)."""
    h = edge.host(backend.port, "alpha")
    big = "".join(f"X-Fill-{i}: {'a' * 1000}\r\n" for i in range(90))
    data = await raw_exchange(edge.port, f"GET /echo HTTP/1.1\r\nHost: {h}\r\n{big}\r\n".encode())
    assert data.startswith(b"HTTP/1.1 431") and backend.requests == []


async def test_head_over_64_kib_in_small_reads_gets_431(edge, backend):
    """The same head trickled in small writes is refused as well."""
    h = edge.host(backend.port, "alpha")
    stream = await trio.open_tcp_stream("127.0.0.1", edge.port)
    await stream.send_all(f"GET /echo HTTP/1.1\r\nHost: {h}\r\n".encode())
    got = b""
    try:
        for i in range(200):
            await stream.send_all(f"X-Fill-{i}: {'a' * 1000}\r\n".encode())
    except trio.BrokenResourceError:
        pass
    with trio.move_on_after(3):
        while True:
            try:
                chunk = await stream.receive_some(65536)
            except trio.BrokenResourceError:
                break
            if not chunk:
                break
            got += chunk
    assert got.startswith(b"HTTP/1.1 431") and backend.requests == []


async def test_more_than_100_header_fields_gets_431(edge, backend):
    """101 small fields: 431, although the head is tiny."""
    h = edge.host(backend.port, "alpha")
    fields = "".join(f"X-F{i}: v\r\n" for i in range(101))
    data = await raw_exchange(edge.port, f"GET /echo HTTP/1.1\r\nHost: {h}\r\n{fields}\r\n".encode())
    assert data.startswith(b"HTTP/1.1 431") and backend.requests == []


async def test_slow_request_head_gets_408(make_edge, backend):
    """A head not complete within head_timeout (slowloris) gets 408 and the connection closes."""
    edge = await make_edge([Sandbox("alpha", "127.0.0.2")], http={"head_timeout": 0.3})
    stream = await trio.open_tcp_stream("127.0.0.1", edge.port)
    await stream.send_all(b"GET /echo HTTP/1.1\r\nHost: x")
    got = await read_to_eof(stream, 3)
    assert got.startswith(b"HTTP/1.1 408")


async def test_connection_that_never_sends_a_byte_is_closed_after_the_head_timeout(make_edge, backend):
    """A new connection that stays silent is closed after head_timeout (not keepalive_timeout), without
    an answer, as nginx does: there is no request to answer."""
    edge = await make_edge([Sandbox("alpha", "127.0.0.2")], http={"head_timeout": 0.3, "keepalive_timeout": 60})
    stream = await trio.open_tcp_stream("127.0.0.1", edge.port)
    with trio.fail_after(3):
        got = await read_to_eof(stream, 5)
    assert got == b""


async def test_idle_keep_alive_connection_is_closed_after_the_idle_timeout(make_edge, backend):
    """After an answer, a silent client is disconnected after keepalive_timeout."""
    edge = await make_edge([Sandbox("alpha", "127.0.0.2")], http={"keepalive_timeout": 0.3})
    stream = await trio.open_tcp_stream("127.0.0.1", edge.port)
    await stream.send_all(f"GET /echo HTTP/1.1\r\nHost: {edge.host(backend.port, 'alpha')}\r\n\r\n".encode())
    got = await read_to_eof(stream, 3)
    assert got.startswith(b"HTTP/1.1 200") and got.count(b"HTTP/1.1") == 1


async def test_bad_request_on_one_connection_does_not_disturb_another(edge, backend):
    """Garbage on one connection; a request on another still succeeds."""
    bad = await raw_exchange(edge.port, b"\x16\x03\x01\x00\xa5garbage\r\n\r\n")
    assert bad.startswith(b"HTTP/1.1 400")
    res = await curl(edge.url(backend.port, "alpha", "/echo"))
    assert json.loads(res.stdout)["backend"] == "b2"
