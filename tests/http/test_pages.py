"""Error pages: E2B's JSON shape, HTML for browsers, CORS on both."""

import json

import pytest

from edge.errors import BadHost, PortNotOpen, SandboxNotFound, UpstreamTimeout
from edge.http.pages import render_error, wants_html


@pytest.mark.parametrize(
    "label, headers, html",
    [
        ("no headers", None, False),
        ("curl", [(b"accept", b"*/*")], False),
        ("browser navigation", [(b"accept", b"text/html,*/*"), (b"sec-fetch-mode", b"navigate")], True),
        ("old browser, html accept", [(b"accept", b"text/html")], True),
        ("fetch from a page", [(b"accept", b"text/html"), (b"sec-fetch-mode", b"cors")], False),
        ("xhr", [(b"x-requested-with", b"XMLHttpRequest"), (b"accept", b"text/html")], False),
    ],
)
def test_html_only_for_browser_navigations(label, headers, html):
    """The page form follows Accept, Sec-Fetch-Mode and X-Requested-With."""
    assert wants_html(headers) is html, label


@pytest.mark.parametrize(
    "exc, status, doc",
    [
        (SandboxNotFound("abc", 3000), 502, {"sandboxId": "abc", "port": 3000, "message": "The sandbox was not found"}),
        (
            PortNotOpen("abc", 8000),
            502,
            {"sandboxId": "abc", "port": 8000, "message": "The sandbox is running but port 8000 is not open"},
        ),
        (UpstreamTimeout("abc", 80, "connect"), 504, {"sandboxId": "abc", "port": 80}),
        (
            BadHost("The host must start with <port>-<sandbox>"),
            400,
            {"message": "The host must start with <port>-<sandbox>"},
        ),
    ],
)
def test_json_error_keeps_e2b_shape(exc, status, doc):
    """JSON errors carry sandboxId, port, message and code as E2B's edge does."""
    got_status, headers, body = render_error(exc, None)
    parsed = json.loads(body)
    assert got_status == status and parsed["code"] == status
    assert {k: parsed[k] for k in doc} == doc
    assert (b"content-length", str(len(body)).encode()) in headers


def test_html_error_escapes_what_it_shows():
    """Values shown in the HTML page are escaped."""
    _, headers, body = render_error(BadHost("<script>x</script>"), [(b"accept", b"text/html")])
    assert b"<script>" not in body and b"&lt;script&gt;" in body
    assert (b"content-type", b"text/html; charset=utf-8") in headers


def test_cors_allows_the_requesting_origin():
    """Access-Control-Allow-Origin echoes Origin, or * without one; Vary says so."""
    _, headers, _ = render_error(SandboxNotFound("a"), [(b"origin", b"https://x.example")])
    assert (b"access-control-allow-origin", b"https://x.example") in headers
    _, headers, _ = render_error(SandboxNotFound("a"), None)
    assert (b"access-control-allow-origin", b"*") in headers
