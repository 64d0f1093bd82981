"""The server name of a ClientHello, however its bytes are cut (edge/egress/sni.py)."""

from __future__ import annotations

import pytest

from edge.egress.sni import NEED_MORE, Hello, NotTls, read_hello
from tests.egress.hellos import built_hello, real_hello, refragment, server_name

REAL = real_hello("API.Example.com")
GREASE = (0x1A1A, b"")
GREASE2 = (0xFAFA, b"\x00")
SUPPORTED_VERSIONS = (43, b"\x04\x03\x04\x03\x03")

CASES = [
    ("openssl's own ClientHello, one record", REAL, "api.example.com"),
    ("openssl's, no server_name", real_hello(None), None),
    ("split over two records", refragment(REAL, [40]), "api.example.com"),
    ("split over many one-byte and odd records", refragment(REAL, [1, 1, 2, 3, 5, 8, 13, 21, 34]), "api.example.com"),
    ("record header cut from its handshake length", refragment(REAL, [3]), "api.example.com"),
    (
        "GREASE extensions around server_name",
        built_hello([GREASE, server_name(b"www.example.com"), GREASE2, SUPPORTED_VERSIONS]),
        "www.example.com",
    ),
    ("upper case and a trailing dot", built_hello([server_name(b"WWW.Example.COM.")]), "www.example.com"),
    ("no extensions at all (TLS 1.0 style)", built_hello(None, 0x0301), None),
    ("empty extensions", built_hello([]), None),
    ("empty session id", built_hello([server_name(b"a.example")], session_id=b""), "a.example"),
    (
        "a name_type other than host_name is skipped",
        built_hello([(0, b"\x00\x0c\x01\x00\x03abc\x00\x00\x03x.y")]),
        "x.y",
    ),
]


@pytest.mark.parametrize(("label", "data", "name"), CASES, ids=[c[0] for c in CASES])
def test_client_hello_names_its_server(label: str, data: bytes, name: str | None) -> None:
    """The whole ClientHello gives its name, in lower case without a trailing dot."""
    found = read_hello(data)
    assert isinstance(found, Hello), found
    assert found.name == name


@pytest.mark.parametrize("records", [REAL, refragment(REAL, [7, 100])], ids=["one record", "three records"])
def test_every_prefix_needs_more_until_the_last_byte(records: bytes) -> None:
    """Read by read, byte by byte: NEED_MORE for every prefix, the name with the last byte."""
    for end in range(len(records)):
        assert read_hello(records[:end]) is NEED_MORE, end
    assert read_hello(records) == Hello("api.example.com", 0x0303)


def test_bytes_after_the_client_hello_do_not_matter() -> None:
    """A client that sends more after its ClientHello (early data, a second record) is read the same."""
    assert read_hello(REAL + b"\x17\x03\x03\x00\x05hello").name == "api.example.com"  # type: ignore[union-attr]


def test_ip_literal_is_no_name_but_kept_for_the_log() -> None:
    """RFC 6066 forbids IP literals in server_name; one sent is no name to match domains against."""
    found = read_hello(built_hello([server_name(b"192.0.2.1")]))
    assert found == Hello(None, 0x0303, "192.0.2.1")


MALFORMED = [
    ("plain HTTP", b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n"),
    ("SSLv2 compatible hello", b"\x80\x2e\x01\x03\x01" + b"\x00" * 50),
    ("an alert record first", b"\x15\x03\x03\x00\x02\x02\x28"),
    ("an alert between two fragments", refragment(REAL, [40])[:45] + b"\x15\x03\x03\x00\x02\x02\x28"),
    ("record version 4.0", b"\x16\x04\x00\x00\x05" + b"\x01" * 5),
    ("empty record", b"\x16\x03\x01\x00\x00"),
    ("record over 2^14", b"\x16\x03\x01\x40\x01"),
    ("a ServerHello", b"\x16\x03\x03\x00\x04\x02\x00\x00\x00"),
    ("server_name twice", built_hello([server_name(b"a.example"), server_name(b"b.example")])),
    ("two host_names", built_hello([server_name(b"a.example", b"b.example")])),
    ("server_name list longer than its extension", built_hello([(0, b"\x00\x20\x00\x00\x03abc")])),
    ("odd cipher_suites", built_hello([server_name(b"a.example")], suites=b"\x13\x01\x13")),
    ("session id over 32 bytes", built_hello([], session_id=b"\x00" * 33)),
    ("empty host_name", built_hello([server_name(b"")])),
]


@pytest.mark.parametrize(("label", "data"), MALFORMED, ids=[c[0] for c in MALFORMED])
def test_what_is_no_client_hello_is_not_tls(label: str, data: bytes) -> None:
    """Anything else is NotTls: the connection is then decided without a name."""
    assert isinstance(read_hello(data), NotTls)


def test_a_client_hello_past_the_limit_is_not_read() -> None:
    """Past max_bytes the answer is NotTls, never an unbounded wait for more."""
    big = built_hello([server_name(b"a.example"), (21, b"\x00" * 3000)])
    assert isinstance(read_hello(big, max_bytes=1024), NotTls)
    assert isinstance(read_hello(big[:1500], max_bytes=1024), NotTls)
    assert read_hello(big).name == "a.example"  # type: ignore[union-attr]
