"""Proxy details operators expect from nginx, Caddy or Traefik: redirects of masked sandboxes, CORS
preflights to private sandboxes, Retry-After on 429, a health endpoint for load balancers."""

from __future__ import annotations

import json

import pytest
import trio

from edge.catalog.model import Sandbox
from tests.conftest import BOTH_LANES, curl, parse_responses
from tests.scripted import Scripted

pytestmark = [pytest.mark.trio, pytest.mark.parametrize("lane", BOTH_LANES, indirect=True)]


async def raw(edge, data: bytes) -> list:
    stream = await trio.open_tcp_stream("127.0.0.1", edge.port)
    async with stream:
        await stream.send_all(data)
        out = b""
        with trio.fail_after(5):
            while chunk := await stream.receive_some(65536):
                out += chunk
    return parse_responses(out)


async def test_masked_sandbox_redirect_points_at_the_public_host(make_edge, nursery):
    """A sandbox behind `localhost:${PORT}` redirects to http://localhost:<port>/next: the client gets
    the public URL instead (Location and Refresh)."""
    sandbox = await Scripted().start(nursery)
    edge = await make_edge([Sandbox("web", "127.0.0.4", mask_request_host="localhost:${PORT}")])
    masked = f"localhost:{sandbox.port}"
    sandbox.scripts = [
        [
            f"HTTP/1.1 302 Found\r\nLocation: http://{masked}/next\r\nRefresh: 0; url=http://{masked}/r\r\n"
            "Content-Length: 0\r\n\r\n".encode()
        ]
    ]
    host = edge.host(sandbox.port, "web")
    [(status, headers, _)] = await raw(edge, f"GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
    assert status == 302
    assert headers["location"] == f"http://{host}/next"
    assert headers["refresh"] == f"0; url=http://{host}/r"
    assert sandbox.requests[0].split(b"\r\n")[1].lower() == f"host: {masked}".encode()


async def test_cors_preflight_to_a_private_sandbox_is_answered_by_the_edge(make_edge, backend):
    """OPTIONS with Access-Control-Request-Method: 204 with the CORS headers the page needs to send
    the token header; the sandbox never sees it; the real request still needs the token."""
    edge = await make_edge([Sandbox("secret", "127.0.0.2", public=False, token_hash="0" * 64)])
    res = await curl(
        "-i",
        "-X",
        "OPTIONS",
        "-H",
        "Origin: https://app.example",
        "-H",
        "Access-Control-Request-Method: POST",
        "-H",
        "Access-Control-Request-Headers: e2b-traffic-access-token, content-type",
        edge.url(backend.port, "secret", "/api"),
    )
    head = res.stdout.decode().split("\r\n\r\n")[0].lower()
    assert head.startswith("http/1.1 204")
    assert "access-control-allow-origin: https://app.example" in head
    assert "access-control-allow-methods: post" in head
    assert "access-control-allow-headers: e2b-traffic-access-token, content-type" in head
    assert not backend.requests
    res = await curl(
        "-s",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "-X",
        "POST",
        "-H",
        "Origin: https://app.example",
        edge.url(backend.port, "secret", "/api"),
    )
    assert res.stdout == b"403"


async def test_too_many_connections_says_when_to_retry(make_edge, nursery):
    """429 carries Retry-After."""
    sandbox = await Scripted().start(nursery)
    edge = await make_edge([Sandbox("one", "127.0.0.4", max_connections=1)])
    sandbox.scripts = [[2.0, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"]]
    host = edge.host(sandbox.port, "one")
    busy = await trio.open_tcp_stream("127.0.0.1", edge.port)
    await busy.send_all(f"GET /slow HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    await trio.sleep(0.2)
    [(status, headers, _)] = await raw(edge, f"GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
    assert (status, headers.get("retry-after")) == (429, "1")
    await busy.aclose()


async def test_health_endpoint_answers_on_a_host_that_is_no_sandbox(make_edge, backend):
    """GET /_edge/health by IP (a load balancer's check) is 200 ok; on a sandbox Host the path is the sandbox's."""
    edge = await make_edge([Sandbox("demo", "127.0.0.2")])
    res = await curl("-s", "-w", "\n%{http_code}", f"http://127.0.0.1:{edge.port}/_edge/health")
    body, status = res.stdout.decode().rsplit("\n", 1)
    assert status == "200" and json.loads(body) == {"status": "ok"}
    res = await curl("-s", edge.url(backend.port, "demo", "/_edge/health"))
    assert json.loads(res.stdout)["target"] == "/_edge/health"  # the sandbox answered


async def test_access_line_names_user_agent_request_id_and_the_edges_error(make_edge, backend):
    """The client's User-Agent and X-Request-Id are logged and the id reaches the sandbox; without
    one the edge makes one (forwarded too); an answer of the edge's own logs its error code."""
    from edge.accesslog import ACCESS_LOG

    edge = await make_edge([Sandbox("demo", "127.0.0.2")], access_log=True)
    ACCESS_LOG.take()
    res = await curl("-s", "-A", "probe/1.0", "-H", "X-Request-Id: abc-123", edge.url(backend.port, "demo", "/echo"))
    seen = {k: v for k, v in json.loads(res.stdout)["headers"]}
    assert seen["x-request-id"] == "abc-123"
    res = await curl("-s", edge.url(backend.port, "demo", "/echo"))
    made = {k: v for k, v in json.loads(res.stdout)["headers"]}["x-request-id"]
    await curl("-s", edge.url(backend.port, "nosuch", "/"), check=False)
    first, second, third = [json.loads(line) for line in ACCESS_LOG.take().splitlines()][-3:]
    assert (first["user_agent"], first["request_id"], first["error"]) == ("probe/1.0", "abc-123", None)
    assert second["request_id"] == made and len(made) > 8
    assert third["error"] == "sandbox_not_found" and third["status"] == 502


async def test_trusted_proxy_extends_x_forwarded_for(make_edge, backend):
    """From an address in http.trusted_proxies, X-Forwarded-For is extended; from anyone else replaced."""
    edge = await make_edge([Sandbox("demo", "127.0.0.2")], http={"trusted_proxies": ["127.0.0.0/8"]})
    res = await curl("-s", "-H", "X-Forwarded-For: 203.0.113.7", edge.url(backend.port, "demo", "/echo"))
    assert {k: v for k, v in json.loads(res.stdout)["headers"]}["x-forwarded-for"] == "203.0.113.7, 127.0.0.1"
    other = await make_edge([Sandbox("demo", "127.0.0.2")], http={"trusted_proxies": ["10.0.0.0/8"]})
    res = await curl("-s", "-H", "X-Forwarded-For: 203.0.113.7", other.url(backend.port, "demo", "/echo"))
    assert {k: v for k, v in json.loads(res.stdout)["headers"]}["x-forwarded-for"] == "127.0.0.1"
