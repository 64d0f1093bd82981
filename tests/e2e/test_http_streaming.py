"""Bodies both ways: streaming, server-sent events, early answers and broken bodies."""

from __future__ import annotations

import json

import pytest
import trio

from edge.catalog.model import Sandbox
from tests.conftest import BOTH_LANES, curl, parse_responses, raw_exchange, read_to_eof

# Every test here runs in both lanes: plain exchanges through the fast lane, and all through h11.
pytestmark = pytest.mark.parametrize("lane", BOTH_LANES, indirect=True)


async def test_server_sent_events_reach_the_client_as_each_is_sent(edge, backend):
    """Each event arrives about when the sandbox sent it, not when the stream ends."""
    host = edge.host(backend.port, "alpha")
    stream = await trio.open_tcp_stream("127.0.0.1", edge.port)
    await stream.send_all(
        f"GET /sse?n=4&gap=0.4 HTTP/1.1\r\nHost: {host}\r\nAccept: text/event-stream\r\n\r\n".encode()
    )
    t0 = trio.current_time()
    arrivals = []
    got = b""
    with trio.fail_after(10):
        while len(arrivals) < 4:
            chunk = await stream.receive_some(65536)
            assert chunk
            got += chunk
            while got.count(b"data: event") > len(arrivals):
                arrivals.append(trio.current_time() - t0)
    # Event i is sent at 0.4*i s; with buffering all four would arrive together at ~1.2 s.
    assert arrivals[0] < 0.35
    assert 0.3 < arrivals[1] < 0.75 and 0.7 < arrivals[2] < 1.15
    await stream.aclose()


async def test_chunked_upload_is_streamed_to_the_sandbox(edge, backend):
    """A chunked request body of 8 MiB reaches the sandbox whole, re-framed by h11."""
    payload = b"y" * (8 << 20)
    host = edge.host(backend.port, "alpha")
    body = b"".join(
        b"%x\r\n%s\r\n" % (len(payload[i : i + 100000]), payload[i : i + 100000])
        for i in range(0, len(payload), 100000)
    )
    req = (
        f"POST /upload HTTP/1.1\r\nHost: {host}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n".encode()
        + body
        + b"0\r\n\r\n"
    )
    [(status, _, resp)] = parse_responses(await raw_exchange(edge.port, req, timeout=20))
    assert status == 200 and json.loads(resp)["body_len"] == len(payload)


async def test_body_split_across_many_small_reads_arrives_whole(edge, backend):
    """A Content-Length body sent a few bytes at a time is forwarded intact."""
    host = edge.host(backend.port, "alpha")
    stream = await trio.open_tcp_stream("127.0.0.1", edge.port)
    await stream.send_all(
        f"POST /echo HTTP/1.1\r\nHost: {host}\r\nContent-Length: 300\r\nConnection: close\r\n\r\n".encode()
    )
    for _ in range(30):
        await stream.send_all(b"z" * 10)
        await trio.sleep(0.005)
    got = await read_to_eof(stream, 5)
    [(status, _, body)] = parse_responses(got)
    assert status == 200 and json.loads(body)["body_len"] == 300


async def test_client_sending_the_next_request_early_is_served_in_order(edge, backend):
    """A POST with its body and the next request in the same write: both answered, in order."""
    host = edge.host(backend.port, "alpha")
    req = (
        f"POST /echo?a HTTP/1.1\r\nHost: {host}\r\nContent-Length: 5\r\n\r\nhello"
        f"GET /echo?b HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    ).encode()
    docs = [json.loads(r[2]) for r in parse_responses(await raw_exchange(edge.port, req))]
    assert [(d["target"], d["body_len"]) for d in docs] == [("/echo?a", 5), ("/echo?b", 0)]


async def test_expect_100_continue_is_answered_by_the_edge(edge, backend):
    """curl's Expect: 100-continue upload does not wait a second for a 100 from the sandbox."""
    t0 = trio.current_time()
    res = await curl(
        "-H", "Expect: 100-continue", "--data-binary", "x" * 2000, edge.url(backend.port, "alpha", "/echo")
    )
    doc = json.loads(res.stdout)
    assert doc["body_len"] == 2000
    assert "expect" not in {h[0] for h in doc["headers"]}
    assert trio.current_time() - t0 < 0.9  # curl waits 1 s when no 100 comes


async def test_sandbox_answering_before_the_upload_ends_reaches_the_client(edge, backend):
    """A 413 sent before the body is read reaches the client; the connection then closes."""
    host = edge.host(backend.port, "alpha")
    stream = await trio.open_tcp_stream("127.0.0.1", edge.port)
    await stream.send_all(f"POST /early HTTP/1.1\r\nHost: {host}\r\nContent-Length: 100000000\r\n\r\n".encode())
    await stream.send_all(b"a" * 65536)
    got = b""
    with trio.fail_after(5):
        while b"\r\n\r\nno" not in got:
            chunk = await stream.receive_some(65536)
            assert chunk
            got += chunk
    assert got.startswith(b"HTTP/1.1 413")


async def test_sandbox_closing_mid_body_truncates_the_client_response(edge, backend):
    """A body cut short upstream is cut short downstream: the client never sees a complete message."""
    res = await curl(edge.url(backend.port, "alpha", "/truncate"), check=False)
    assert res.returncode == 18  # CURLE_PARTIAL_FILE
    # and the edge keeps serving
    ok = await curl(edge.url(backend.port, "alpha", "/echo"))
    assert json.loads(ok.stdout)["backend"] == "b2"


async def test_client_disconnecting_mid_download_frees_the_upstream(make_edge, backend):
    """A client that goes away mid-stream does not leave the sandbox connection in the pool."""
    edge = await make_edge([Sandbox("alpha", "127.0.0.2")])
    host = edge.host(backend.port, "alpha")
    stream = await trio.open_tcp_stream("127.0.0.1", edge.port)
    await stream.send_all(f"GET /bytes?n=200000000 HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    await stream.receive_some(65536)
    await stream.aclose()
    await trio.sleep(0.3)
    res = await curl(edge.url(backend.port, "alpha", "/echo"))
    assert json.loads(res.stdout)["backend"] == "b2"
    assert backend.connections == 2  # the broken one was not reused


# --- zero-copy splice of large Content-Length bodies (http.splice_threshold, 256 KiB by default) ----

MIB = 1 << 20


async def test_spliced_downloads_reuse_both_connections(edge, backend):
    """Two 4 MiB downloads then a small request on one client connection: all whole, one upstream."""
    host = edge.host(backend.port, "alpha")
    req = (
        f"GET /bytes?n={4 * MIB} HTTP/1.1\r\nHost: {host}\r\n\r\n" * 2
        + f"GET /echo HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    responses = parse_responses(await raw_exchange(edge.port, req.encode(), timeout=20))
    assert [(r[0], len(r[2])) for r in responses[:2]] == [(200, 4 * MIB), (200, 4 * MIB)]
    assert json.loads(responses[2][2])["backend"] == "b2"
    assert backend.connections == 1


async def test_spliced_upload_then_pipelined_request_on_the_same_write(edge, backend):
    """A 2 MiB body and the next request in one write: the splice stops exactly at the body's end."""
    host = edge.host(backend.port, "alpha")
    body = b"u" * (2 * MIB)
    req = (
        f"POST /upload HTTP/1.1\r\nHost: {host}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        + body
        + f"GET /echo?after HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode()
    )
    docs = [json.loads(r[2]) for r in parse_responses(await raw_exchange(edge.port, req, timeout=20))]
    assert [(d["target"], d["body_len"]) for d in docs] == [("/upload", 2 * MIB), ("/echo?after", 0)]
    assert backend.connections == 1


async def test_spliced_upload_split_across_slow_writes(edge, backend):
    """A large body arriving in pieces with pauses is spliced whole."""
    host = edge.host(backend.port, "alpha")
    stream = await trio.open_tcp_stream("127.0.0.1", edge.port)
    size = 3 * MIB
    await stream.send_all(
        f"PUT /upload HTTP/1.1\r\nHost: {host}\r\nContent-Length: {size}\r\nConnection: close\r\n\r\n".encode()
    )
    for _ in range(6):
        await stream.send_all(b"p" * (size // 6))
        await trio.sleep(0.05)
    got = await read_to_eof(stream, 10)
    [(status, _, body)] = parse_responses(got)
    assert status == 200 and json.loads(body)["body_len"] == size


async def test_sandbox_closing_mid_spliced_body_truncates_the_client_response(edge, backend):
    """A 10 MiB promise broken after 1 MiB: the client sees a short body, and the edge keeps serving."""
    res = await curl(
        "-o",
        "/dev/null",
        "-w",
        "%{size_download}",
        edge.url(backend.port, "alpha", f"/truncate?n={10 * MIB}&send={MIB}"),
        check=False,
    )
    assert res.returncode == 18 and int(res.stdout) == MIB
    ok = await curl(edge.url(backend.port, "alpha", "/echo"))
    assert json.loads(ok.stdout)["backend"] == "b2"


async def test_client_leaving_mid_spliced_download_frees_everything(edge, backend):
    """A client that reads 1 MiB of 200 MiB and closes: the upstream is dropped, the edge serves on."""
    host = edge.host(backend.port, "alpha")
    stream = await trio.open_tcp_stream("127.0.0.1", edge.port)
    await stream.send_all(f"GET /bytes?n={200 * MIB} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    got = 0
    while got < MIB:
        got += len(await stream.receive_some(65536))
    await stream.aclose()
    await trio.sleep(0.3)
    res = await curl(edge.url(backend.port, "alpha", "/echo"))
    assert json.loads(res.stdout)["backend"] == "b2" and backend.connections == 2


async def test_splicing_off_moves_the_same_bytes(make_edge, backend):
    """With splice_threshold = 0 large bodies go through h11 and arrive the same."""
    from edge.catalog.model import Sandbox

    edge = await make_edge([Sandbox("alpha", "127.0.0.2")], http={"splice_threshold": 0})
    res = await curl(
        "-o", "/dev/null", "-w", "%{size_download}", edge.url(backend.port, "alpha", f"/bytes?n={5 * MIB}")
    )
    assert int(res.stdout) == 5 * MIB


@pytest.mark.parametrize("size", [100_000, 4 * MIB], ids=["through h11", "spliced"])
async def test_sandbox_dropping_an_upload_gets_502(edge, backend, size):
    """The sandbox closes while the body is on its way: the client gets 502, not a silent close."""
    host = edge.host(backend.port, "alpha")
    stream = await trio.open_tcp_stream("127.0.0.1", edge.port)
    await stream.send_all(f"POST /drop HTTP/1.1\r\nHost: {host}\r\nContent-Length: {size}\r\n\r\n".encode())
    got = b""
    with trio.fail_after(10):
        try:
            await stream.send_all(b"d" * size)
        except trio.BrokenResourceError:
            pass
        while b"\r\n\r\n" not in got:
            chunk = await stream.receive_some(65536)
            if not chunk:
                break
            got += chunk
    assert got.startswith(b"HTTP/1.1 502"), got[:100]


async def test_smuggling_after_a_spliced_exchange_still_closes_the_connection(edge, backend):
    """A spliced exchange's bookkeeping does not carry over: after an upload and a download both
    spliced, a CL+TE request gets 400 and the connection ends; the request behind it is never served."""
    host = edge.host(backend.port, "alpha")
    req = (
        f"POST /bytes?n={2 * MIB} HTTP/1.1\r\nHost: {host}\r\nContent-Length: {2 * MIB}\r\n\r\n{'b' * (2 * MIB)}"
        f"POST /echo HTTP/1.1\r\nHost: {host}\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
        f"GET /echo?smuggled HTTP/1.1\r\nHost: {host}\r\n\r\n"
    )
    responses = parse_responses(await raw_exchange(edge.port, req.encode(), timeout=5))
    assert [r[0] for r in responses] == [200, 400]
    assert not any("smuggled" in r["target"] for r in backend.requests)


@pytest.mark.parametrize("size", [100_000, 4 * MIB], ids=["through h11", "spliced"])
async def test_stalled_upload_gets_408(make_edge, backend, size):
    """An upload that stops moving for body_idle_timeout gets 408, on either body path."""
    from edge.catalog.model import Sandbox

    edge = await make_edge([Sandbox("alpha", "127.0.0.2")], http={"body_idle_timeout": 0.5})
    host = edge.host(backend.port, "alpha")
    stream = await trio.open_tcp_stream("127.0.0.1", edge.port)
    await stream.send_all(
        f"POST /upload HTTP/1.1\r\nHost: {host}\r\nContent-Length: {size}\r\n\r\n".encode() + b"s" * 1000
    )
    got = await read_to_eof(stream, 5)
    assert got.startswith(b"HTTP/1.1 408"), got[:80]
