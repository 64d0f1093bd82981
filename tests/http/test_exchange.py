"""The two reuse rules (exchange.py) as tables, and the facts they read, as the h11 lane sets them.

`client_may_continue`: may the client connection read another request? `upstream_may_return`: may
the sandbox connection go back to the pool? Each answers from its own facts only: what the client
did never decides the sandbox connection's fate, nor the other way round.
"""

from __future__ import annotations

import itertools
from types import SimpleNamespace

import h11
import pytest

from edge.http.exchange import CLOSE, NEXT, Exchange, client_may_continue, upstream_may_return
from edge.http.h11lane import settle, settle_upstream


def exchange(**facts) -> Exchange:
    return Exchange(SimpleNamespace(h=None, buffered=b""), 0.0, **facts)  # type: ignore[arg-type]


WHOLE = {"req_keepalive": True, "request_done": True, "response_done": True}
POOLABLE = {"resp_keepalive": True, "upstream_done": True}


@pytest.mark.parametrize(
    ("facts", "expected"),
    [
        pytest.param(WHOLE, True, id="keep-alive, both messages whole"),
        pytest.param({**WHOLE, "req_keepalive": False}, False, id="Connection: close or HTTP/1.0"),
        pytest.param({**WHOLE, "request_done": False}, False, id="request body left unread (early answer)"),
        pytest.param({**WHOLE, "response_done": False}, False, id="answer cut short"),
        pytest.param({**WHOLE, "revoked": True}, False, id="revoked by a catalog change"),
        pytest.param({}, False, id="a new exchange: nothing known yet"),
        pytest.param(
            {**WHOLE, "resp_keepalive": False, "upstream_done": False},
            True,
            id="the sandbox said close: the client goes on",
        ),
    ],
)
def test_client_may_continue(facts, expected):
    assert client_may_continue(exchange(**facts)) is expected


@pytest.mark.parametrize(
    ("facts", "expected"),
    [
        pytest.param(POOLABLE, True, id="one whole response, keep-alive"),
        pytest.param({**POOLABLE, "resp_keepalive": False}, False, id="the sandbox said close (or HTTP/1.0)"),
        pytest.param({**POOLABLE, "upstream_done": False}, False, id="not one whole response, or bytes after it"),
        pytest.param({**POOLABLE, "revoked": True}, False, id="revoked by a catalog change"),
        pytest.param({}, False, id="a new exchange: nothing known yet"),
        pytest.param(
            {**POOLABLE, "req_keepalive": False, "request_done": False, "response_done": False},
            True,
            id="the client said close or left: the sandbox connection is still good",
        ),
    ],
)
def test_upstream_may_return(facts, expected):
    assert upstream_may_return(exchange(**facts)) is expected


FACTS = ["req_keepalive", "request_done", "response_done", "resp_keepalive", "upstream_done", "revoked"]


@pytest.mark.parametrize(
    "values",
    list(itertools.product([False, True], repeat=len(FACTS))),
    ids=lambda v: "".join("1" if x else "0" for x in v),
)
def test_each_rule_reads_its_own_facts_and_nothing_else(values):
    """Every combination: each rule is the conjunction of its own facts, blind to the other side's."""
    f = dict(zip(FACTS, values, strict=True))
    ex = exchange(**f)
    assert client_may_continue(ex) is (
        f["req_keepalive"] and f["request_done"] and f["response_done"] and not f["revoked"]
    )
    assert upstream_may_return(ex) is (f["resp_keepalive"] and f["upstream_done"] and not f["revoked"])


def test_a_new_exchange_starts_from_nothing():
    """Nothing carries over from one exchange to the next: every fact starts false."""
    ex = exchange()
    assert not any(getattr(ex, name) for name in FACTS + ["spliced_up", "spliced_down"])
    assert ex.upstream is None and ex.pump_error is None and ex.status == 0


# --- the facts, read off h11's state machines (h11lane.settle, settle_upstream) ------------------------

GET = b"GET / HTTP/1.1\r\nHost: 1-a.sandbox.localhost\r\n\r\n"
POST = b"POST / HTTP/1.1\r\nHost: 1-a.sandbox.localhost\r\nContent-Length: 10\r\n\r\n"


def server_that_read(data: bytes) -> h11.Connection:
    """Our side of the client connection, having read `data` up to the request's head (and its body
    if there), and answered 200 with a whole body."""
    h = h11.Connection(h11.SERVER)
    h.receive_data(data)
    assert type(h.next_event()) is h11.Request
    while True:
        event = h.next_event()
        if event is h11.NEED_DATA or type(event) is h11.EndOfMessage:
            break
    h.send(h11.Response(status_code=200, headers=[(b"content-length", b"2")]))
    h.send(h11.Data(data=b"ok"))
    h.send(h11.EndOfMessage())
    return h


def settled(h: h11.Connection, **facts) -> tuple:
    ex = exchange(req_keepalive=True, **facts)
    ex.client.h = h
    outcome = settle(ex)
    return outcome, ex.request_done, ex.response_done, ex.client.buffered, ex.client.h


def test_settle_hands_back_pipelined_bytes_and_lets_go_of_h11():
    outcome, request_done, response_done, buffered, h = settled(server_that_read(GET + b"GET /next"))
    assert (outcome, request_done, response_done, buffered, h) == (NEXT, True, True, b"GET /next", None)


def test_settle_closes_when_the_request_body_was_not_read():
    outcome, request_done, response_done, _, _ = settled(server_that_read(POST + b"12345"))
    assert (outcome, request_done, response_done) == (CLOSE, False, True)


def test_settle_counts_a_spliced_request_body_as_read():
    """h11 never saw a spliced body: it still waits for it, but the request ended whole."""
    outcome, request_done, _, _, _ = settled(server_that_read(POST), spliced_up=True)
    assert (outcome, request_done) == (NEXT, True)


def client_that_sent(request: bytes, response: bytes, body_sent: bool = True) -> SimpleNamespace:
    """The sandbox side's h11 state: sent `request` (its body too, unless not `body_sent`), and read
    `response` as far as it goes."""
    conn = h11.Connection(h11.CLIENT)
    method = request.split(b" ")[0]
    headers = [(b"host", b"x")] + ([(b"content-length", b"10")] if method == b"POST" else [])
    conn.send(h11.Request(method=method, target=b"/", headers=headers))
    if body_sent:
        if method == b"POST":
            conn.send(h11.Data(data=b"x" * 10))
        conn.send(h11.EndOfMessage())
    conn.receive_data(response)
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA or type(event) in (h11.EndOfMessage, h11.ConnectionClosed):
            break
    return SimpleNamespace(h11=conn)


OK2 = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


@pytest.mark.parametrize(
    ("request_", "response", "body_sent", "spliced_down", "expected"),
    [
        pytest.param(GET, OK2, True, False, True, id="whole request, whole response"),
        pytest.param(GET, OK2 + b"HTTP/1.1 200", True, False, False, id="bytes after the response"),
        pytest.param(GET, OK2[:-1], True, False, False, id="response body not read to its end"),
        pytest.param(POST, OK2, False, False, False, id="request body not sent whole (early answer)"),
        pytest.param(
            GET, b"HTTP/1.1 200 OK\r\nContent-Length: 300000\r\n\r\n", True, True, True, id="response body spliced"
        ),
    ],
)
def test_settle_upstream(request_, response, body_sent, spliced_down, expected):
    ex = exchange(spliced_down=spliced_down)
    settle_upstream(ex, client_that_sent(request_, response, body_sent))  # type: ignore[arg-type]
    assert ex.upstream_done is expected
