"""Routing and rewriting through a real edge to real backends on distinct loopback addresses."""

from __future__ import annotations

import json

import pytest
import trio

from edge.catalog.model import Sandbox
from tests.conftest import BOTH_LANES, curl, echo_headers, parse_responses, raw_exchange, read_to_eof

# Every test here runs in both lanes: plain exchanges through the fast lane, and all through h11.
pytestmark = pytest.mark.parametrize("lane", BOTH_LANES, indirect=True)


async def test_request_reaches_the_sandbox_named_in_the_host(edge, backend, backend3):
    """3000-alpha goes to alpha's address and 3000-beta to beta's, each on the port in the host."""
    a = await curl(edge.url(backend.port, "alpha", "/echo"))
    b = await curl(edge.url(backend3.port, "beta", "/echo"))
    assert json.loads(a.stdout)["backend"] == "b2"
    assert json.loads(b.stdout)["backend"] == "b3"


async def test_host_is_case_insensitive_and_may_end_with_a_dot(edge, backend):
    """RFC 4343: host names compare without regard to case; a trailing dot names the same host."""
    host = f"{backend.port}-ALPHA.Sandbox.LocalHost.:{edge.port}"
    data = await raw_exchange(edge.port, f"GET /echo HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
    [(status, _, body)] = parse_responses(data)
    assert status == 200 and json.loads(body)["backend"] == "b2"


async def test_keep_alive_requests_are_each_routed_on_their_own_host(edge, backend, backend3):
    """Two requests on one connection, for two sandboxes, reach two backends."""
    req = (
        f"GET /echo HTTP/1.1\r\nHost: {edge.host(backend.port, 'alpha')}\r\n\r\n"
        f"GET /echo HTTP/1.1\r\nHost: {edge.host(backend3.port, 'beta')}\r\nConnection: close\r\n\r\n"
    ).encode()
    # Send the second only after the first answer: keep-alive, not pipelining.
    stream = await trio.open_tcp_stream("127.0.0.1", edge.port)
    first, second = req.split(b"\r\n\r\n", 1)
    await stream.send_all(first + b"\r\n\r\n")
    got = b""
    while b"b2" not in got:
        got += await stream.receive_some(65536)
    await stream.send_all(second)
    got = await read_to_eof(stream, into=got)
    responses = parse_responses(got)
    assert [json.loads(r[2])["backend"] for r in responses] == ["b2", "b3"]


async def test_pipelined_requests_are_each_routed_on_their_own_host(edge, backend, backend3):
    """Pipelined requests for different sandboxes, sent in one write, are answered in order by each."""
    hosts = [edge.host(backend.port, "alpha"), edge.host(backend3.port, "beta"), edge.host(backend.port, "alpha")]
    req = "".join(f"GET /echo?i={i} HTTP/1.1\r\nHost: {h}\r\n\r\n" for i, h in enumerate(hosts))
    req += f"GET /echo?i=3 HTTP/1.1\r\nHost: {hosts[1]}\r\nConnection: close\r\n\r\n"
    responses = parse_responses(await raw_exchange(edge.port, req.encode()))
    docs = [json.loads(r[2]) for r in responses]
    assert [(d["backend"], d["target"]) for d in docs] == [
        ("b2", "/echo?i=0"),
        ("b3", "/echo?i=1"),
        ("b2", "/echo?i=2"),
        ("b3", "/echo?i=3"),
    ]


async def test_absolute_form_target_is_used_and_sent_upstream_in_origin_form(edge, backend):
    """GET http://host/path: routed on the URL's host, the sandbox sees /path."""
    host = edge.host(backend.port, "alpha")
    data = await raw_exchange(
        edge.port, f"GET http://{host}/echo?q=1 HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode()
    )
    [(status, _, body)] = parse_responses(data)
    assert status == 200 and json.loads(body)["target"] == "/echo?q=1"


async def test_absolute_form_target_that_disagrees_with_host_is_refused(edge, backend, backend3):
    """An absolute URL naming one sandbox with a Host naming another: 400, nothing forwarded."""
    a, b = edge.host(backend.port, "alpha"), edge.host(backend3.port, "beta")
    data = await raw_exchange(edge.port, f"GET http://{a}/echo HTTP/1.1\r\nHost: {b}\r\n\r\n".encode())
    [(status, headers, body)] = parse_responses(data)
    assert status == 400 and "different hosts" in json.loads(body)["message"]
    assert backend.requests == [] and backend3.requests == []


@pytest.mark.parametrize(
    "label, host, reason",
    [
        ("no port", "alpha.sandbox.localhost", "<port>-<sandbox>"),
        ("port zero", "0-alpha.sandbox.localhost", "port"),
        ("leading zero", "080-alpha.sandbox.localhost", "port"),
        ("port too large", "65536-alpha.sandbox.localhost", "port"),
        ("port not digits", "http-alpha.sandbox.localhost", "port"),
        ("empty id", "3000-.sandbox.localhost", "sandbox ID"),
        ("foreign domain", "3000-alpha.example.com", "domain"),
        ("apex", "sandbox.localhost", "domain"),
        ("extra label", "a.3000-alpha.sandbox.localhost", "no further labels"),
        ("ip address", "127.0.0.1", "domain"),
    ],
)
async def test_malformed_host_gets_400_with_an_explanation(edge, label, host, reason):
    """Each malformed host gets 400 and a message that says what is wrong."""
    data = await raw_exchange(edge.port, f"GET / HTTP/1.1\r\nHost: {host}:{edge.port}\r\n\r\n".encode())
    [(status, headers, body)] = parse_responses(data)
    assert status == 400, label
    assert reason in json.loads(body)["message"], label


async def test_sandbox_id_with_dashes_is_split_at_the_first_dash(make_edge, backend):
    """A UUID-like ID keeps every '-' after the first: the port is only the leading digits."""
    sid = "4f1c-9a2b-77"
    edge = await make_edge([Sandbox(sid, "127.0.0.2")])
    res = await curl(edge.url(backend.port, sid, "/echo"))
    assert json.loads(res.stdout)["backend"] == "b2"


async def test_host_passes_unchanged_without_a_mask(edge, backend):
    """No mask: the sandbox sees the public host as the client sent it."""
    res = await curl(edge.url(backend.port, "alpha", "/echo"))
    seen = echo_headers(res.stdout)
    assert seen["host"] == [edge.host(backend.port, "alpha")]


async def test_masked_host_replaces_port_placeholder(make_edge, backend):
    """With mask localhost:${PORT}, Host is localhost:<port> and X-Forwarded-Host the original."""
    edge = await make_edge([Sandbox("alpha", "127.0.0.2", mask_request_host="localhost:${PORT}")])
    res = await curl(edge.url(backend.port, "alpha", "/echo"))
    seen = echo_headers(res.stdout)
    assert seen["host"] == [f"localhost:{backend.port}"]
    assert seen["x-forwarded-host"] == [edge.host(backend.port, "alpha")]


async def test_forwarded_headers_are_set_and_client_values_dropped(edge, backend):
    """X-Forwarded-For is the peer, -Proto the edge's scheme; spoofed values never reach the sandbox."""
    res = await curl(
        "-H",
        "X-Forwarded-For: 6.6.6.6",
        "-H",
        "X-Forwarded-Proto: https",
        "-H",
        "X-Forwarded-Host: evil",
        "-H",
        "Forwarded: for=6.6.6.6",
        "-H",
        "X-Real-IP: 6.6.6.6",
        edge.url(backend.port, "alpha", "/echo"),
    )
    seen = echo_headers(res.stdout)
    assert seen["x-forwarded-for"] == ["127.0.0.1"]
    assert seen["x-forwarded-proto"] == ["http"]
    assert seen["x-forwarded-host"] == [edge.host(backend.port, "alpha")]
    assert "forwarded" not in seen and "x-real-ip" not in seen


async def test_hop_by_hop_request_headers_are_removed(edge, backend):
    """Connection and the headers it names, Keep-Alive, Proxy-*, TE, Trailer and Upgrade do not pass."""
    host = edge.host(backend.port, "alpha")
    req = (
        f"GET /echo HTTP/1.1\r\nHost: {host}\r\nConnection: keep-alive, X-Private\r\nX-Private: s\r\n"
        "Keep-Alive: timeout=5\r\nProxy-Authorization: Basic eA==\r\nProxy-Connection: keep-alive\r\n"
        "TE: trailers\r\nTrailer: X-T\r\nUpgrade: h2c\r\nX-Kept: yes\r\n\r\n"
    )
    data = await raw_exchange(edge.port, req.encode(), timeout=1.0)
    status, _, body = parse_responses(data)[0]
    seen = echo_headers(body)
    for name in (
        "connection",
        "x-private",
        "keep-alive",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "upgrade",
    ):
        assert name not in seen, name
    assert seen["x-kept"] == ["yes"]


async def test_hop_by_hop_response_headers_are_removed(edge, backend):
    """The sandbox's Connection-named and hop-by-hop headers do not reach the client."""
    res = await curl("-D", "-", "-o", "/dev/null", edge.url(backend.port, "alpha", "/hop"))
    head = res.stdout.decode().lower()
    for name in ("x-secret:", "keep-alive:", "proxy-authenticate:", "trailer:", "upgrade:"):
        assert name not in head, name


async def test_upstream_connections_are_reused_after_clean_exchanges(edge, backend):
    """Ten sequential requests from ten client connections share one pooled upstream connection."""
    for _ in range(10):
        await curl(edge.url(backend.port, "alpha", "/echo"))
    assert len(backend.requests) == 10
    assert backend.connections == 1


async def test_upstream_connection_that_said_close_is_not_reused(edge, backend):
    """A response with Connection: close retires its upstream connection."""
    for _ in range(3):
        await curl(edge.url(backend.port, "alpha", "/close"))
    assert backend.connections == 3


async def test_catalog_snapshot_change_reroutes_the_next_request(edge, backend, backend3):
    """Moving a sandbox to another address takes effect on the next request of the same connection."""
    host = edge.host(backend.port, "alpha")
    stream = await trio.open_tcp_stream("127.0.0.1", edge.port)
    await stream.send_all(f"GET /echo HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    got = b""
    while b"}" not in got:
        got += await stream.receive_some(65536)
    # beta's backend listens on another port; move alpha to 127.0.0.3 and ask for that port
    edge.add("alpha", "127.0.0.3")
    host3 = edge.host(backend3.port, "alpha")
    await stream.send_all(f"GET /echo HTTP/1.1\r\nHost: {host3}\r\nConnection: close\r\n\r\n".encode())
    got = await read_to_eof(stream, into=got)
    assert [json.loads(r[2])["backend"] for r in parse_responses(got)] == ["b2", "b3"]


async def test_head_request_gets_headers_without_a_body(edge, backend):
    """HEAD is forwarded and the answer's Content-Length kept, with no body bytes."""
    host = edge.host(backend.port, "alpha")
    data = await raw_exchange(
        edge.port,
        (
            f"HEAD /echo HTTP/1.1\r\nHost: {host}\r\n\r\n"
            f"GET /echo HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
        ).encode(),
    )
    assert data.count(b"HTTP/1.1 200") == 2
    assert data.index(b"HTTP/1.1 200", 5) < data.index(b"{")  # no body after the HEAD answer


async def test_http10_client_gets_a_close_delimited_answer(edge, backend):
    """An HTTP/1.0 request is forwarded and answered; the connection closes after it."""
    host = edge.host(backend.port, "alpha")
    data = await raw_exchange(edge.port, f"GET /echo HTTP/1.0\r\nHost: {host}\r\n\r\n".encode())
    assert data.startswith(b"HTTP/1.1 200") and b'"backend": "b2"' in data


async def test_pooled_connection_dropped_by_the_sandbox_is_retried_for_a_get(edge, backend):
    """A sandbox that drops a keep-alive connection right after answering: the next GET, sent at once
    on the dead pooled connection, is retried on a fresh one and succeeds."""
    first = await curl(edge.url(backend.port, "alpha", "/then-close"))
    second = await curl(edge.url(backend.port, "alpha", "/echo"))
    assert json.loads(first.stdout)["backend"] == "b2" and json.loads(second.stdout)["backend"] == "b2"
    assert backend.connections == 2


async def test_pooled_connection_dropped_while_idle_is_not_used_for_a_post(edge, backend):
    """After a pause, a POST (never retried) does not go out on a connection the sandbox closed."""
    await curl(edge.url(backend.port, "alpha", "/then-close"))
    await trio.sleep(0.3)
    res = await curl("--data", "x", edge.url(backend.port, "alpha", "/echo"))
    assert json.loads(res.stdout)["body_len"] == 1


async def test_sandbox_on_an_ipv6_address_is_reached(make_edge, nursery):
    """A sandbox whose address is ::1 is reached over IPv6."""
    from tests.backends import Backend

    b6 = await Backend("v6").start(nursery, "::1")
    edge = await make_edge([Sandbox("six", "::1")])
    res = await curl(edge.url(b6.port, "six", "/echo"))
    assert json.loads(res.stdout)["backend"] == "v6"


async def test_edge_listening_on_ipv6_serves(make_edge, backend):
    """`http.listen = "[::1]:0"`: clients reach the edge over IPv6."""
    edge = await make_edge([Sandbox("alpha", "127.0.0.2")], http={"listen": "[::1]:0"})
    res = await curl(
        "--resolve", f"{backend.port}-alpha.sandbox.localhost:{edge.port}:::1", edge.url(backend.port, "alpha", "/echo")
    )
    doc = json.loads(res.stdout)
    assert doc["backend"] == "b2" and dict(doc["headers"])["x-forwarded-for"] == "::1"
