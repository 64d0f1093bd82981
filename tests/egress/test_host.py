"""The name an HTTP request is for (edge/egress/host.py)."""

from __future__ import annotations

import pytest

from edge.egress.host import NEED_MORE, Head, NotHttp, read_head

NAMED = [
    ("Host", b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n", "example.com"),
    ("Host with a port", b"GET / HTTP/1.1\r\nHost: example.com:8080\r\n\r\n", "example.com"),
    ("case and trailing dot", b"GET / HTTP/1.1\r\nhOsT:  WWW.Example.COM. \r\n\r\n", "www.example.com"),
    (
        "absolute target wins over Host",
        b"GET http://api.example.com/x HTTP/1.1\r\nHost: other.example\r\n\r\n",
        "api.example.com",
    ),
    (
        "absolute target with userinfo and port",
        b"GET http://u:p@api.example.com:81/ HTTP/1.1\r\n\r\n",
        "api.example.com",
    ),
    ("bare LF line ends", b"GET / HTTP/1.0\nHost: example.com\n\n", "example.com"),
    ("a body after the head", b"POST / HTTP/1.1\r\nHost: a.example\r\nContent-Length: 2\r\n\r\nhi", "a.example"),
]


@pytest.mark.parametrize(("label", "data", "name"), NAMED, ids=[c[0] for c in NAMED])
def test_request_head_names_its_host(label: str, data: bytes, name: str) -> None:
    """The name the destination server will use: the absolute target's, else Host's."""
    found = read_head(data)
    assert isinstance(found, Head)
    assert found.name == name


UNNAMED = [
    ("no Host", b"GET / HTTP/1.0\r\n\r\n"),
    ("two Host fields", b"GET / HTTP/1.1\r\nHost: a.example\r\nHost: b.example\r\n\r\n"),
    ("whitespace before the colon", b"GET / HTTP/1.1\r\nHost : a.example\r\n\r\n"),
    ("obsolete line folding", b"GET / HTTP/1.1\r\nHost: a.example\r\nX: 1\r\n 2\r\n\r\n"),
    ("IPv4 literal", b"GET / HTTP/1.1\r\nHost: 192.0.2.10\r\n\r\n"),
    ("IPv6 literal", b"GET / HTTP/1.1\r\nHost: [2001:db8::1]:80\r\n\r\n"),
    ("bad characters", b"GET / HTTP/1.1\r\nHost: a_b!.example\r\n\r\n"),
    ("bad port", b"GET / HTTP/1.1\r\nHost: a.example:x\r\n\r\n"),
]


@pytest.mark.parametrize(("label", "data"), UNNAMED, ids=[c[0] for c in UNNAMED])
def test_head_without_a_usable_name(label: str, data: bytes) -> None:
    """A head is read, but there is no name to match domains against: decided by CIDR."""
    found = read_head(data)
    assert isinstance(found, Head)
    assert found.name is None


def test_fields_the_refusal_page_needs_are_kept() -> None:
    """Accept and Sec-Fetch-Mode choose HTML or JSON; Origin goes into the CORS header."""
    found = read_head(b"GET / HTTP/1.1\r\nHost: a.example\r\nAccept: text/html\r\nOrigin: http://o\r\nX: y\r\n\r\n")
    assert isinstance(found, Head)
    assert found.headers == ((b"accept", b"text/html"), (b"origin", b"http://o"))


def test_head_in_pieces_needs_more_until_its_empty_line() -> None:
    """Read by read: NEED_MORE for every prefix of the head."""
    data = b"GET /path HTTP/1.1\r\nHost: example.com\r\nAccept: */*\r\n\r\n"
    for end in range(len(data)):
        assert read_head(data[:end]) is NEED_MORE, end
    assert read_head(data).name == "example.com"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "data",
    [b"SSH-2.0-OpenSSH_9.2\r\n", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\n", b"HELLO\r\n\r\n"],
    ids=["ssh", "tls", "not a request line"],
)
def test_what_is_no_http_request_is_not_http(data: bytes) -> None:
    assert isinstance(read_head(data), NotHttp)


def test_a_head_past_the_limit_is_not_http() -> None:
    """A head that never ends is given up at max_bytes, not waited for."""
    assert isinstance(read_head(b"GET / HTTP/1.1\r\nX: " + b"a" * 2000, max_bytes=1024), NotHttp)
