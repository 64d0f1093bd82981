"""Private sandboxes: the traffic access token by header, by link then cookie, and over WebSockets."""

from __future__ import annotations

import json
import socket
import subprocess
import sys

import pytest
import trio
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from edge.catalog.model import Sandbox
from edge.catalog.ops import hash_token
from tests.conftest import BOTH_LANES, REPO, curl, echo_headers, parse_responses, raw_exchange

# Every test here runs in both lanes: plain exchanges through the fast lane, and all through h11.
pytestmark = pytest.mark.parametrize("lane", BOTH_LANES, indirect=True)

TOKEN = "s3cret-token-for-tests_0123456789abcdefghij"


@pytest.fixture
async def private_edge(make_edge, backend):
    return await make_edge([Sandbox("priv", "127.0.0.2", public=False, token_hash=hash_token(TOKEN)),
                            Sandbox("open", "127.0.0.2")])


def _url(edge, backend, path="/echo"):
    return edge.url(backend.port, "priv", path)


async def test_private_sandbox_without_token_gets_403_missing(private_edge, backend):
    """No token anywhere: 403 saying one is required, and nothing reaches the sandbox."""
    res = await curl("-i", _url(private_edge, backend))
    head, body = res.stdout.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 403")
    doc = json.loads(body)
    assert doc["error"] == "missing_token" and doc["sandboxId"] == "priv" and "token is required" in doc["message"]
    assert backend.requests == []


async def test_private_sandbox_with_wrong_token_gets_403_invalid(private_edge, backend):
    """A wrong token: 403 saying it is invalid, as JSON for code and HTML for a browser."""
    res = await curl("-H", "e2b-traffic-access-token: nope", _url(private_edge, backend))
    assert json.loads(res.stdout)["error"] == "invalid_token"
    page = await curl("-H", "X-Edge-Access-Token: nope", "-H", "Accept: text/html", "-H", "Sec-Fetch-Mode: navigate",
                      _url(private_edge, backend))
    assert b"The traffic access token is invalid" in page.stdout and b"<!doctype html>" in page.stdout
    assert backend.requests == []


@pytest.mark.parametrize("header", ["e2b-traffic-access-token", "X-Edge-Access-Token"])
async def test_token_header_opens_the_sandbox_and_is_not_forwarded(private_edge, backend, header):
    """Either header carries the token; the sandbox never sees it."""
    res = await curl("-H", f"{header}: {TOKEN}", _url(private_edge, backend))
    seen = echo_headers(res.stdout)
    assert json.loads(res.stdout)["backend"] == "b2"
    assert header.lower() not in seen and TOKEN not in res.stdout.decode()


async def test_token_link_sets_a_host_cookie_and_redirects_without_the_parameter(private_edge, backend):
    """?edge_token=... answers 303 to the same URL minus the parameter, with an HttpOnly Lax host cookie."""
    res = await curl("-i", _url(private_edge, backend, f"/echo?a=1&edge_token={TOKEN}&b=2"))
    head = res.stdout.split(b"\r\n\r\n", 1)[0].decode()
    assert head.startswith("HTTP/1.1 303")
    lines = {line.split(":", 1)[0].lower(): line.split(":", 1)[1].strip() for line in head.split("\r\n")[1:]}
    assert lines["location"] == "/echo?a=1&b=2"
    cookie = lines["set-cookie"]
    assert cookie.startswith(f"edge_access_token={TOKEN};")
    attrs = {a.strip().split("=")[0].lower() for a in cookie.split(";")[1:]}
    assert attrs == {"path", "httponly", "samesite"} and "SameSite=Lax" in cookie
    assert "domain" not in cookie.lower()  # exactly this host
    assert backend.requests == []


async def test_cookie_from_the_link_opens_the_sandbox_and_is_not_forwarded(private_edge, backend, tmp_path):
    """curl with a cookie jar follows the link like a browser: cookie set, later requests pass, token hidden."""
    jar = tmp_path / "jar"
    res = await curl("-L", "-c", str(jar), "-b", str(jar), "-b", "theme=dark",
                     _url(private_edge, backend, f"/echo?edge_token={TOKEN}"))
    doc = json.loads(res.stdout)
    assert doc["target"] == "/echo"
    again = await curl("-b", str(jar), _url(private_edge, backend, "/echo?x=1"))
    doc = json.loads(again.stdout)
    seen = echo_headers(again.stdout)
    assert doc["target"] == "/echo?x=1"
    assert TOKEN not in again.stdout.decode() and "edge_access_token" not in again.stdout.decode()
    assert all("edge_token" not in r["target"] for r in backend.requests)
    # another host (another port) does not get the cookie: it was scoped to exactly that host
    other = await curl("-b", str(jar), private_edge.url(backend.port + 1, "priv", "/"))
    assert json.loads(other.stdout)["error"] == "missing_token"
    assert "cookie" not in seen or "edge_access_token" not in seen["cookie"][0]


async def test_other_cookies_pass_while_the_token_cookie_is_removed(private_edge, backend):
    """Only our cookie is taken out of the Cookie header."""
    res = await curl("-H", f"Cookie: a=1; edge_access_token={TOKEN}; b=2", _url(private_edge, backend))
    assert echo_headers(res.stdout)["cookie"] == ["a=1; b=2"]


async def test_token_parameter_on_a_post_is_accepted_and_stripped(private_edge, backend):
    """A non-GET with ?edge_token is not redirected (a 303 would turn it into a GET): served, parameter gone."""
    res = await curl("-X", "POST", "--data", "x", _url(private_edge, backend, f"/echo?edge_token={TOKEN}&k=v"))
    assert json.loads(res.stdout)["target"] == "/echo?k=v"


async def test_cookie_is_secure_when_edge_serves_https(make_edge, backend):
    """Behind TLS (scheme = https), the cookie gets Secure."""
    edge = await make_edge([Sandbox("priv", "127.0.0.2", public=False, token_hash=hash_token(TOKEN))],
                           http={"scheme": "https"})
    res = await curl("-i", edge.url(backend.port, "priv", f"/?edge_token={TOKEN}"))
    assert b"; Secure" in res.stdout.split(b"\r\n\r\n")[0]


async def test_public_sandbox_needs_no_token(private_edge, backend):
    """The same backend as a public sandbox answers without any token."""
    res = await curl(private_edge.url(backend.port, "open", "/echo"))
    assert json.loads(res.stdout)["backend"] == "b2"


async def test_websocket_upgrade_with_the_cookie_passes_and_without_is_refused(private_edge, nursery):
    """A browser's WebSocket carries the cookie: it passes; without it, 403 before any tunnel."""
    proc = subprocess.Popen([sys.executable, "-m", "tests.ws_echo", "127.0.0.2"], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        port = int(proc.stdout.readline())
        uri = f"ws://{private_edge.host(port, 'priv')}/headers"

        def talk(headers):
            sock = socket.create_connection(("127.0.0.1", private_edge.port))
            try:
                with connect(uri, sock=sock, additional_headers=headers) as ws:
                    seen = json.loads(ws.recv(timeout=5))
                    ws.send("ping")
                    return seen, ws.recv(timeout=5)
            except InvalidStatus as exc:
                return exc.response.status_code, json.loads(exc.response.body)["error"]

        assert await trio.to_thread.run_sync(talk, {}) == (403, "missing_token")
        seen, echo = await trio.to_thread.run_sync(talk, {"Cookie": f"edge_access_token={TOKEN}"})
        assert echo == "ping"
        assert all(TOKEN not in v for _, v in seen)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


async def test_connection_limit_answers_429_past_it(make_edge, backend):
    """max_connections=1: while one request is in flight, a second gets 429; afterwards it passes."""
    edge = await make_edge([Sandbox("lim", "127.0.0.2", max_connections=1)])
    slow_done = trio.Event()
    results = {}

    async def slow():
        results["slow"] = await curl(edge.url(backend.port, "lim", "/slow?delay=1"))
        slow_done.set()

    async with trio.open_nursery() as n:
        n.start_soon(slow)
        await trio.sleep(0.3)
        res = await curl("-i", edge.url(backend.port, "lim", "/echo"))
        head, body = res.stdout.split(b"\r\n\r\n", 1)
        assert head.startswith(b"HTTP/1.1 429")
        doc = json.loads(body)
        assert doc == {"sandboxId": "lim", "port": backend.port, "code": 429, "error": "too_many_connections",
                       "message": "The sandbox has reached its limit of 1 concurrent connections"}
    assert json.loads(results["slow"].stdout)["backend"] == "b2"
    after = await curl(edge.url(backend.port, "lim", "/echo"))
    assert json.loads(after.stdout)["backend"] == "b2"


async def test_token_never_appears_in_the_access_log(make_edge, backend, caplog):
    """Token, cookie and query string are absent from the access line."""
    import logging

    from edge import log as edge_log

    edge = await make_edge([Sandbox("priv", "127.0.0.2", public=False, token_hash=hash_token(TOKEN))], access_log=True)
    was = edge_log.ACCESS.disabled
    edge_log.ACCESS.disabled = False
    try:
        with caplog.at_level(logging.INFO, logger="edge.access"):
            await curl("-H", f"e2b-traffic-access-token: {TOKEN}", "-H", f"Cookie: edge_access_token={TOKEN}",
                       "-H", "Authorization: Bearer abc", edge.url(backend.port, "priv", f"/echo?edge_token={TOKEN}"))
    finally:
        edge_log.ACCESS.disabled = was
    records = [r for r in caplog.records if r.name == "edge.access"]
    assert records
    for r in records:
        text = json.dumps(r.fields)
        assert TOKEN not in text and "Bearer" not in text and "edge_token" not in text


async def test_a_wrong_token_header_next_to_a_right_one_is_refused(private_edge, backend):
    """A wrong token next to a right one is not a way in: the one used must itself be valid."""
    host = private_edge.host(backend.port, "priv")
    req = (f"GET /echo HTTP/1.1\r\nHost: {host}\r\nX-Edge-Access-Token: {TOKEN}\r\n"
           f"e2b-traffic-access-token: wrong\r\nConnection: close\r\n\r\n")
    [(status, _, body)] = parse_responses(await raw_exchange(private_edge.port, req.encode()))
    assert status == 403 and json.loads(body)["error"] == "invalid_token"
