"""Private sandboxes: the traffic access token by header, by link then cookie, and over WebSockets."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
from functools import partial

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
    return await make_edge(
        [Sandbox("priv", "127.0.0.2", public=False, token_hash=hash_token(TOKEN)), Sandbox("open", "127.0.0.2")]
    )


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
    page = await curl(
        "-H",
        "X-Edge-Access-Token: nope",
        "-H",
        "Accept: text/html",
        "-H",
        "Sec-Fetch-Mode: navigate",
        _url(private_edge, backend),
    )
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
    assert lines["location"] == f"http://{private_edge.host(backend.port, 'priv')}/echo?a=1&b=2"
    cookie = lines["set-cookie"]
    assert cookie.startswith(f"edge_access_token={TOKEN};")
    attrs = {a.strip().split("=")[0].lower() for a in cookie.split(";")[1:]}
    assert attrs == {"path", "httponly", "samesite"} and "SameSite=Lax" in cookie
    assert "domain" not in cookie.lower()  # exactly this host
    assert backend.requests == []


async def test_cookie_from_the_link_opens_the_sandbox_and_is_not_forwarded(private_edge, backend, tmp_path):
    """curl with a cookie jar follows the link like a browser: cookie set, later requests pass, token hidden."""
    jar = tmp_path / "jar"
    res = await curl(
        "-L",
        "-c",
        str(jar),
        "-b",
        str(jar),
        "-b",
        "theme=dark",
        _url(private_edge, backend, f"/echo?edge_token={TOKEN}"),
    )
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


async def test_cookie_is_a_secure_host_cookie_when_edge_serves_https(make_edge, backend):
    """Behind TLS (scheme = https), the cookie is `__Host-edge_access_token`: Secure, Path=/, no Domain, so
    no other host can set or overwrite it; the Location is https; that cookie then opens the sandbox."""
    edge = await make_edge(
        [Sandbox("priv", "127.0.0.2", public=False, token_hash=hash_token(TOKEN))], http={"scheme": "https"}
    )
    res = await curl("-i", edge.url(backend.port, "priv", f"/?edge_token={TOKEN}"))
    [(status, headers, _)] = parse_responses(res.stdout)
    assert status == 303 and headers["location"] == f"https://{edge.host(backend.port, 'priv')}/"
    assert headers["set-cookie"] == f"__Host-edge_access_token={TOKEN}; Path=/; HttpOnly; SameSite=Lax; Secure"
    res = await curl("-b", f"__Host-edge_access_token={TOKEN}", edge.url(backend.port, "priv", "/echo"))
    assert json.loads(res.stdout)["backend"] == "b2" and TOKEN not in res.stdout.decode()


async def test_public_sandbox_needs_no_token(private_edge, backend):
    """The same backend as a public sandbox answers without any token."""
    res = await curl(private_edge.url(backend.port, "open", "/echo"))
    assert json.loads(res.stdout)["backend"] == "b2"


async def test_websocket_upgrade_with_the_cookie_passes_and_without_is_refused(private_edge, nursery):
    """A browser's WebSocket carries the cookie: it passes; without it, 403 before any tunnel."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.ws_echo", "127.0.0.2"], cwd=REPO, stdout=subprocess.PIPE, text=True
    )
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
        assert doc == {
            "sandboxId": "lim",
            "port": backend.port,
            "code": 429,
            "error": "too_many_connections",
            "message": "The sandbox has reached its limit of 1 concurrent connections",
        }
    assert json.loads(results["slow"].stdout)["backend"] == "b2"
    after = await curl(edge.url(backend.port, "lim", "/echo"))
    assert json.loads(after.stdout)["backend"] == "b2"


async def test_token_never_appears_in_the_access_log(make_edge, backend):
    """Token, cookie and query string are absent from the access line."""
    from edge.accesslog import ACCESS_LOG

    edge = await make_edge([Sandbox("priv", "127.0.0.2", public=False, token_hash=hash_token(TOKEN))], access_log=True)
    ACCESS_LOG.take()
    await curl(
        "-H",
        f"e2b-traffic-access-token: {TOKEN}",
        "-H",
        f"Cookie: edge_access_token={TOKEN}",
        "-H",
        "Authorization: Bearer abc",
        edge.url(backend.port, "priv", f"/echo?edge_token={TOKEN}"),
    )
    lines = ACCESS_LOG.take().decode().splitlines()
    assert lines
    for text in lines:
        assert TOKEN not in text and "Bearer" not in text and "edge_token" not in text


@pytest.mark.parametrize(
    "label, target, extra",
    [
        (
            "a wrong header beside the right one",
            "/echo",
            f"X-Edge-Access-Token: {TOKEN}\r\ne2b-traffic-access-token: wrong",
        ),
        ("an empty link parameter beside a right header", "/echo?edge_token=", f"X-Edge-Access-Token: {TOKEN}"),
        (
            "a wrong link parameter beside a right cookie",
            "/echo?edge_token=wrong",
            f"Cookie: edge_access_token={TOKEN}",
        ),
        ("a tossed cookie before the right one", "/echo", f"Cookie: edge_access_token=junk; edge_access_token={TOKEN}"),
        ("a quoted cookie value", "/echo", f'Cookie: edge_access_token="{TOKEN}"'),
    ],
)
async def test_any_valid_credential_passes_and_the_others_are_ignored(private_edge, backend, label, target, extra):
    """One valid credential opens the sandbox whatever else was presented; none of them reaches it."""
    host = private_edge.host(backend.port, "priv")
    req = f"GET {target} HTTP/1.1\r\nHost: {host}\r\n{extra}\r\nConnection: close\r\n\r\n"
    [(status, _, body)] = parse_responses(await raw_exchange(private_edge.port, req.encode()))
    assert status == 200 and json.loads(body)["target"] == "/echo"
    seen = json.dumps(backend.requests[-1])
    assert TOKEN not in seen and "junk" not in seen and "wrong" not in seen


@pytest.mark.parametrize(
    "label, path, extra",
    [
        ("parameter name in upper case", f"/echo?EDGE_TOKEN={TOKEN}&k=v", ""),
        ("percent-encoded letter", f"/echo?%65dge_token={TOKEN}&k=v", ""),
        ("percent-encoded underscore, upper hex", f"/echo?EDGE%5Ftoken={TOKEN}&k=v", ""),
        ("; as the query separator", f"/echo?k=v;edge_token={TOKEN}", ""),
        ("PHP's . for _", f"/echo?edge.token={TOKEN}&k=v", ""),
        ("PHP / Rack array", f"/echo?edge_token[]={TOKEN}&k=v", ""),
        ("path parameter", f"/echo;edge_token={TOKEN}?k=v", ""),
        ("cookie with spaces around =", "/echo?k=v", f"Cookie: a=1; edge_access_token = {TOKEN}"),
        ("quoted cookie", "/echo?k=v", f'Cookie: a=1; edge_access_token="{TOKEN}"'),
        ("cookie name in upper case", "/echo?k=v", f"Cookie: a=1; EDGE_ACCESS_TOKEN={TOKEN}"),
        ("comma-separated cookie", "/echo?k=v", f"Cookie: a=1, edge_access_token={TOKEN}"),
        ("__Host- cookie", "/echo?k=v", f"Cookie: a=1; __Host-edge_access_token={TOKEN}"),
    ],
)
async def test_every_spelling_of_the_token_opens_the_sandbox_and_never_reaches_it(
    private_edge, backend, label, path, extra
):
    """Each spelling a browser or framework would read as edge's parameter or cookie is a credential and is
    stripped: the sandbox (which records what it received) never sees the token. POST, so a link is
    served rather than redirected."""
    host = private_edge.host(backend.port, "priv")
    lines = [
        f"POST {path} HTTP/1.1",
        f"Host: {host}",
        "Content-Length: 1",
        *([extra] if extra else []),
        "Connection: close",
    ]
    req = "\r\n".join(lines) + "\r\n\r\nx"
    [(status, _, body)] = parse_responses(await raw_exchange(private_edge.port, req.encode()))
    assert status == 200, body
    [record] = backend.requests
    assert record["target"] == "/echo?k=v"
    assert TOKEN not in json.dumps(record)
    assert [v for n, v in record["headers"] if n == "cookie"] in ([], ["a=1"])


@pytest.mark.parametrize("path", ["//evil.example/", "/\\evil.example/", "//evil.example/%2F.."])
async def test_token_link_redirect_never_leaves_the_host(private_edge, backend, path):
    """`GET //evil.example/?edge_token=T` (or `/\\evil.example/`) is redirected to an absolute URL on the
    same host, never to a scheme-relative `//evil.example/` a browser would follow off-site."""
    host = private_edge.host(backend.port, "priv")
    req = f"GET {path}?edge_token={TOKEN} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    [(status, headers, _)] = parse_responses(await raw_exchange(private_edge.port, req.encode()))
    assert status == 303
    assert headers["location"] == f"http://{host}{path}"
    assert backend.requests == []


class CookieSandbox:
    """A sandbox on 127.0.0.5 whose every answer carries the Set-Cookie headers a test gives it."""

    def __init__(self) -> None:
        self.set_cookies: list[str] = []
        self.heads: list[bytes] = []
        self.port = 0

    async def start(self, nursery) -> CookieSandbox:
        listeners = await nursery.start(partial(trio.serve_tcp, self._serve, 0, host="127.0.0.5"))
        self.port = listeners[0].socket.getsockname()[1]
        return self

    async def _serve(self, stream) -> None:
        buf = b""
        async with stream:
            while True:
                while b"\r\n\r\n" not in buf:
                    chunk = await stream.receive_some(65536)
                    if not chunk:
                        return
                    buf += chunk
                head, buf = buf.split(b"\r\n\r\n", 1)
                self.heads.append(head)
                lines = "".join(f"Set-Cookie: {c}\r\n" for c in self.set_cookies)
                await stream.send_all(f"HTTP/1.1 200 OK\r\n{lines}Content-Length: 2\r\n\r\nok".encode())


TOSSED = [
    "edge_access_token=junk; Domain=sandbox.localhost; Path=/",
    "EDGE_ACCESS_TOKEN=junk; Domain=sandbox.localhost",
    "__Host-edge_access_token=junk; Secure; Path=/",
    "edge_access_token =junk; Path=/echo",
]


@pytest.mark.parametrize("sandbox_id", ["open", "priv"])
async def test_no_sandbox_can_set_the_edge_cookie(make_edge, nursery, sandbox_id):
    """Cookie tossing: a sandbox's Set-Cookie naming edge's cookie (any case, either name) is dropped, for a
    public and a private sandbox alike; its other cookies reach the client."""
    sandbox = await CookieSandbox().start(nursery)
    sandbox.set_cookies = ["theme=dark; Path=/", *TOSSED, "session=1"]
    edge = await make_edge(
        [Sandbox("priv", "127.0.0.5", public=False, token_hash=hash_token(TOKEN)), Sandbox("open", "127.0.0.5")]
    )
    res = await curl("-i", "-H", f"X-Edge-Access-Token: {TOKEN}", edge.url(sandbox.port, sandbox_id, "/"))
    head = res.stdout.split(b"\r\n\r\n", 1)[0].decode()
    assert head.startswith("HTTP/1.1 200")
    cookies = [line.split(":", 1)[1].strip() for line in head.split("\r\n") if line.lower().startswith("set-cookie:")]
    assert cookies == ["theme=dark; Path=/", "session=1"]


async def test_a_browser_with_a_tossed_cookie_still_opens_the_private_sandbox(make_edge, nursery, backend, tmp_path):
    """A junk edge cookie that reached the browser anyway (set by a sibling page's JavaScript for the whole
    domain) does not lock it out: the browser sends both, the valid one passes, neither reaches the sandbox."""
    edge = await make_edge([Sandbox("priv", "127.0.0.2", public=False, token_hash=hash_token(TOKEN))])
    jar = tmp_path / "jar"
    await curl("-L", "-c", str(jar), "-b", str(jar), edge.url(backend.port, "priv", f"/echo?edge_token={TOKEN}"))
    host = edge.host(backend.port, "priv").split(":")[0]
    with open(jar, "a") as f:  # what document.cookie = "edge_access_token=junk; domain=sandbox.localhost" leaves
        f.write(".sandbox.localhost\tTRUE\t/\tFALSE\t0\tedge_access_token\tjunk\n")
    res = await curl("-v", "-b", str(jar), edge.url(backend.port, "priv", "/echo"))
    assert b"edge_access_token=junk" in res.stderr and host in res.stderr.decode()  # curl did send both
    doc = json.loads(res.stdout)
    assert doc["backend"] == "b2"
    assert TOKEN not in res.stdout.decode() and "junk" not in res.stdout.decode()


async def test_sandbox_is_told_the_edge_forwarding_headers_not_the_client_ones(make_edge, backend):
    """Spoofed X-Forwarded-Port, X-Real-IP, Forwarded, True-Client-IP... never reach the sandbox;
    X-Forwarded-Port is the edge's listener port and Via carries the edge's entry after the client's."""
    with socket.socket() as probe:  # a free port: X-Forwarded-Port is the configured listen port
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    edge = await make_edge(
        [Sandbox("priv", "127.0.0.2", public=False, token_hash=hash_token(TOKEN))], http={"listen": f"127.0.0.1:{port}"}
    )
    spoofed = [
        "X-Forwarded-Port: 1",
        "X-Forwarded-Server: evil",
        "X-Forwarded-Prefix: /evil",
        "X-Original-URL: /admin",
        "True-Client-IP: 6.6.6.6",
        "X-Client-IP: 6.6.6.6",
        "CF-Connecting-IP: 6.6.6.6",
        "Forwarded: for=6.6.6.6",
        "X-Real-IP: 6.6.6.6",
        "X-Original-Host: evil",
        "X-Rewrite-URL: /admin",
        "X-Forwarded-Scheme: https",
        "X-Forwarded-Ssl: on",
        "X-Host: evil",
        "Via: 1.0 fred",
    ]
    args = [a for h in spoofed for a in ("-H", h)]
    res = await curl(*args, "-H", f"X-Edge-Access-Token: {TOKEN}", edge.url(backend.port, "priv", "/echo"))
    seen = echo_headers(res.stdout)
    assert (
        "6.6.6.6" not in res.stdout.decode()
        and "evil" not in res.stdout.decode()
        and "/admin" not in res.stdout.decode()
    )
    assert seen["x-forwarded-port"] == [str(port)] and seen["x-forwarded-for"] == ["127.0.0.1"]
    assert "x-forwarded-ssl" not in seen and "x-forwarded-scheme" not in seen
    [via] = seen["via"]
    assert re.fullmatch(r"1\.0 fred, 1\.1 edge-[0-9a-f]{8}", via)
