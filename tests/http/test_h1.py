"""The fast lane's head reader (edge/http/h1.py) against the reference, h11.

The rule under test: a head h1 accepts is one h11 (plus request.check_request) accepts and reads the
same way; everything else is None, so h11 sees it. Tables name the cases; a seeded differential fuzz
looks for the ones nobody thought of.
"""

from __future__ import annotations

import random

import h11
import pytest

from edge.errors import EdgeError
from edge.http.h1 import parse_request, parse_response, request_bytes, response_bytes
from edge.http.headers import connection_tokens
from edge.http.request import check_request

MAX_BYTES, MAX_FIELDS = 65536, 100

BASE = (
    b"GET /api/items?page=2 HTTP/1.1\r\n"
    b"Host: 3000-abc.sandbox.localhost:8080\r\n"
    b"User-Agent: curl/8.0\r\n"
    b"Accept: */*\r\n"
    b"Cookie: a=1; b=2\r\n"
    b"\r\n"
)


def h1_request(raw: bytes):
    end = raw.find(b"\r\n\r\n")
    return parse_request(raw, end, MAX_BYTES, MAX_FIELDS) if end >= 0 else None


def h11_request(raw: bytes):
    """(method, target, version, headers, body) as h11 + check_request read it, or None if refused."""
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_BYTES)
    conn.receive_data(raw)
    try:
        event = conn.next_event()
        if type(event) is not h11.Request:
            return None
        headers = list(event.headers)
        check_request(event, headers, MAX_BYTES, MAX_FIELDS)
        body = b""
        while True:
            nxt = conn.next_event()
            if type(nxt) is h11.Data:
                body += nxt.data
            elif type(nxt) is h11.EndOfMessage:
                break
            else:
                return None
    except (h11.RemoteProtocolError, EdgeError):
        return None
    return event.method, event.target, event.http_version, headers, body


def read_the_same(raw: bytes) -> None:
    """Assert: if the fast lane takes `raw` (h1 reads a plain head and the body is all there), h11 takes
    it too and reads the same request from it."""
    head = h1_request(raw)
    if head is None or len(raw) < head.end + head.length:
        return
    ref = h11_request(raw)
    assert ref is not None, f"h1 accepted what h11 refuses: {raw!r}"
    method, target, version, headers, body = ref
    assert (head.method, head.target, head.version, head.headers) == (method, target, version, headers), raw
    assert head.tokens == connection_tokens(headers), raw
    assert raw[head.end : head.end + head.length] == body, raw


@pytest.mark.parametrize(
    ("label", "raw"),
    [
        ("no fields but Host", b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"),
        ("browser-like", BASE),
        ("HTTP/1.0 without Host", b"GET / HTTP/1.0\r\n\r\n"),
        ("spaces and tabs around values", b"GET / HTTP/1.1\r\nHost:   a \t\r\nX-A:\tb c\r\n\r\n"),
        ("empty value", b"GET / HTTP/1.1\r\nHost: a\r\nX-Empty:\r\n\r\n"),
        ("obs-text in a value", b"GET / HTTP/1.1\r\nHost: a\r\nX-Name: caf\xc3\xa9\r\n\r\n"),
        ("body with its head", b"POST /f HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello"),
        ("mixed-case names", b"GET / HTTP/1.1\r\nHOST: a\r\ncOnTeNt-LeNgTh: 0\r\n\r\n"),
        ("keep-alive token", b"GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive\r\n\r\n"),
        ("two Connection fields", b"GET / HTTP/1.1\r\nHost: a\r\nConnection: x-a\r\nConnection: Close , x-b\r\n\r\n"),
    ],
)
def test_plain_request_is_read_as_h11_reads_it(label, raw):
    """Heads every client sends are taken by the fast lane, and read exactly as h11 reads them."""
    assert h1_request(raw) is not None, label
    read_the_same(raw)


@pytest.mark.parametrize(
    ("label", "raw"),
    [
        ("chunked body", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
        ("expect 100-continue", b"PUT / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n"),
        ("upgrade", b"GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"),
        ("two Hosts", b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"),
        ("two Content-Lengths", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx"),
        ("signed Content-Length", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +1\r\n\r\nx"),
        ("obs-fold", b"GET / HTTP/1.1\r\nHost: a\r\nX-A: b\r\n c\r\n\r\n"),
        ("underscore in a name", b"GET / HTTP/1.1\r\nHost: a\r\nX_A: b\r\n\r\n"),
        ("space before the colon", b"GET / HTTP/1.1\r\nHost : a\r\n\r\n"),
        ("absolute-form target", b"GET http://a/ HTTP/1.1\r\nHost: a\r\n\r\n"),
        ("asterisk target", b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n"),
        ("CONNECT", b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n"),
        ("HTTP/2.0", b"GET / HTTP/2.0\r\nHost: a\r\n\r\n"),
        ("bare LF inside", b"GET / HTTP/1.1\r\nHost: a\nX: b\r\n\r\n"),
        ("control character in a value", b"GET / HTTP/1.1\r\nHost: a\r\nX: b\x01c\r\n\r\n"),
        ("no Host on HTTP/1.1", b"GET / HTTP/1.1\r\nAccept: */*\r\n\r\n"),
        ("too many fields", b"GET / HTTP/1.1\r\nHost: a\r\n" + b"X: y\r\n" * 100 + b"\r\n"),
        ("head over the limit", b"GET / HTTP/1.1\r\nHost: a\r\nX: " + b"y" * MAX_BYTES + b"\r\n\r\n"),
        ("lower-case version", b"GET / http/1.1\r\nHost: a\r\n\r\n"),
        ("two spaces in the request line", b"GET  / HTTP/1.1\r\nHost: a\r\n\r\n"),
    ],
)
def test_request_that_is_not_plain_is_left_to_h11(label, raw):
    """Anything outside the plain subset is None: h11 reads it, and answers it if it is wrong."""
    assert h1_request(raw) is None, label


MUTATIONS = [
    b" ",
    b"\t",
    b"\r",
    b"\n",
    b"\r\n",
    b":",
    b"_",
    b"\x00",
    b"\x7f",
    b"\xff",
    b"a",
    b"0",
    b",",
    b"Content-Length: 3\r\n",
    b"Transfer-Encoding: chunked\r\n",
    b"Host: b\r\n",
    b"HTTP/1.0",
    b"/",
    b"Connection: close, X-A\r\n",
    b"Upgrade",
]


def mutate(rng: random.Random, raw: bytes) -> bytes:
    for _ in range(rng.randint(1, 3)):
        i = rng.randrange(len(raw) + 1)
        op = rng.random()
        if op < 0.4:
            raw = raw[:i] + rng.choice(MUTATIONS) + raw[i:]
        elif op < 0.7:
            raw = raw[:i] + raw[i + rng.randint(1, 4) :]
        else:
            raw = raw[:i] + rng.choice(MUTATIONS) + raw[i + 1 :]
    return raw


def test_fuzzed_requests_h1_accepts_are_read_the_same_by_h11():
    """20,000 mutated heads (seeded): whatever h1 takes, h11 takes too and reads the same way."""
    rng = random.Random(20261126)
    seeds = [BASE, b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc", b"GET / HTTP/1.0\r\n\r\n"]
    taken = 0
    for _ in range(20_000):
        raw = mutate(rng, rng.choice(seeds))
        read_the_same(raw)
        taken += h1_request(raw) is not None
    assert taken > 1000  # the fuzz exercised the accepting side, not only refusals


# --- responses ----------------------------------------------------------------------------------


def h11_response(raw: bytes, method: bytes = b"GET"):
    """(status, reason-less headers, body) as an h11 client that sent `method` reads `raw`, or None."""
    conn = h11.Connection(h11.CLIENT)
    conn.send(h11.Request(method=method, target="/", headers=[("Host", "a")]))
    conn.send(h11.EndOfMessage())
    conn.receive_data(raw)
    try:
        event = conn.next_event()
        if type(event) is not h11.Response:
            return None
        body = b""
        while True:
            nxt = conn.next_event()
            if type(nxt) is h11.Data:
                body += nxt.data
            elif type(nxt) is h11.EndOfMessage or nxt is h11.NEED_DATA:
                break  # the whole body, or as much of it as `raw` holds
            else:
                return None
    except h11.RemoteProtocolError:
        return None
    return event.status_code, list(event.headers), body


def h1_response(raw: bytes, method: bytes = b"GET"):
    end = raw.find(b"\r\n\r\n")
    return parse_response(raw, end, method == b"HEAD") if end >= 0 else None


@pytest.mark.parametrize(
    ("label", "raw", "method", "length"),
    [
        ("Content-Length", b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", b"GET", 2),
        ("no reason phrase", b"HTTP/1.1 404\r\nContent-Length: 0\r\n\r\n", b"GET", 0),
        ("HEAD ignores the length", b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n", b"HEAD", 0),
        ("204 without a length", b"HTTP/1.1 204 No Content\r\nServer: x\r\n\r\n", b"GET", 0),
        ("304 with a length", b"HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n", b"GET", 0),
        ("HTTP/1.0 answer", b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok", b"GET", 2),
    ],
)
def test_plain_response_is_read_as_h11_reads_it(label, raw, method, length):
    """Status, fields and body length agree with h11's reading of the same bytes."""
    head = h1_response(raw, method)
    assert head is not None and head.length == length, label
    status, headers, body = h11_response(raw, method)
    assert (head.status, head.headers) == (status, headers)
    assert raw[head.end : head.end + head.length] == body


@pytest.mark.parametrize(
    ("label", "raw"),
    [
        ("chunked", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
        ("read to close", b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n"),
        ("1xx", b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"),
        ("101", b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n"),
        ("two lengths", b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"),
        ("list length", b"HTTP/1.1 200 OK\r\nContent-Length: 1, 1\r\n\r\n"),
        ("HTTP/2", b"HTTP/2 200\r\nContent-Length: 0\r\n\r\n"),
        ("status 600", b"HTTP/1.1 600 Odd\r\nContent-Length: 0\r\n\r\n"),
    ],
)
def test_response_that_is_not_plain_is_left_to_h11(label, raw):
    assert h1_response(raw) is None, label


def test_response_keepalive_follows_version_and_connection_close():
    """HTTP/1.1 stays open unless it says close; HTTP/1.0 never does."""
    assert h1_response(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n").keepalive
    assert not h1_response(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n").keepalive
    assert not h1_response(b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n").keepalive


def test_fuzzed_responses_h1_accepts_are_read_the_same_by_h11():
    """20,000 mutated answers (seeded): whatever h1 takes, h11 takes too, with the same status and body."""
    rng = random.Random(7)
    seeds = [
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello",
        b"HTTP/1.1 204 No Content\r\nDate: x\r\n\r\n",
    ]
    taken = 0
    for _ in range(20_000):
        raw = mutate(rng, rng.choice(seeds))
        head = h1_response(raw)
        if head is None:
            continue
        taken += 1
        ref = h11_response(raw)
        assert ref is not None, raw
        assert (head.status, head.headers) == ref[:2], raw
        assert head.tokens == connection_tokens(head.headers), raw
        assert raw[head.end : head.end + head.length] == ref[2][: head.length], raw
    assert taken > 1000


def test_written_heads_read_back_through_h11():
    """request_bytes and response_bytes produce heads h11 reads back field for field."""
    fields = [(b"host", b"a"), (b"x-forwarded-for", b"127.0.0.1"), (b"content-length", b"0")]
    server = h11.Connection(h11.SERVER)
    server.receive_data(request_bytes(b"GET", b"/p?q=1", fields))
    req = server.next_event()
    assert (req.method, req.target, req.http_version, list(req.headers)) == (b"GET", b"/p?q=1", b"1.1", fields)
    client = h11.Connection(h11.CLIENT)
    client.send(h11.Request(method="GET", target="/", headers=[("Host", "a")]))
    client.send(h11.EndOfMessage())
    client.receive_data(response_bytes(b"HTTP/1.1 201 Created\r\n", [(b"content-length", b"0")]))
    resp = client.next_event()
    assert (resp.status_code, resp.reason, list(resp.headers)) == (201, b"Created", [(b"content-length", b"0")])
