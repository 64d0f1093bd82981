"""The [egress] section's checks (edge/egress/config.py), and SO_ORIGINAL_DST's answer (original.py)."""

from __future__ import annotations

import socket
import struct

import pytest

from edge.egress.config import EgressConfig, check, parse_resolver
from edge.egress.original import parse_sockaddr
from edge.errors import ConfigError


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("", None),
        ("203.0.113.53", ("203.0.113.53", 53)),
        ("203.0.113.53:5353", ("203.0.113.53", 5353)),
        ("[2001:db8::53]:5300", ("2001:db8::53", 5300)),
        ("2001:db8::53", ("2001:db8::53", 53)),
        ("[2001:db8::53]", ("2001:db8::53", 53)),
    ],
)
def test_resolver_is_addr_and_optional_port(text: str, parsed: tuple[str, int] | None) -> None:
    assert parse_resolver(text) == parsed


@pytest.mark.parametrize("text", ["dns.example", "203.0.113.53:0", "203.0.113.53:x", "[2001:db8::53", "1.2.3.4:70000"])
def test_bad_resolver_is_a_config_error(text: str) -> None:
    with pytest.raises(ConfigError, match="egress.resolver"):
        parse_resolver(text)


def test_bad_allow_private_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="egress.allow_private"):
        check(EgressConfig(allow_private=("10.0.0.0/33",)))
    check(EgressConfig(allow_private=("10.20.0.0/16",), resolver="203.0.113.53"))


def test_original_destination_from_sockaddr_in_and_in6() -> None:
    """sa_family in host order, port and address in network order, as getsockopt returns them."""
    v4 = struct.pack("=H", socket.AF_INET) + struct.pack("!H", 443) + socket.inet_aton("198.51.100.10") + b"\0" * 8
    assert parse_sockaddr(v4) == ("198.51.100.10", 443)
    addr6 = socket.inet_pton(socket.AF_INET6, "2001:db8::1")
    v6 = struct.pack("=H", socket.AF_INET6) + struct.pack("!HI", 80, 0) + addr6 + b"\0" * 4
    assert parse_sockaddr(v6) == ("2001:db8::1", 80)
    mapped = (
        struct.pack("=H", socket.AF_INET6)
        + struct.pack("!HI", 80, 0)
        + b"\0" * 10
        + b"\xff\xff"
        + bytes([192, 0, 2, 1])
        + b"\0" * 4
    )
    assert parse_sockaddr(mapped) == ("192.0.2.1", 80)


def test_the_egress_section_loads_from_the_config_and_is_checked_there() -> None:
    """`[egress]` is part of edge's Config: an empty listen is none, a listen an address, a bad value refused."""
    from edge.config import Listen, load

    assert load(None, env={}, overrides={"egress": {"listen": ""}}).egress.listen is None
    loaded = load(None, env={}, overrides={"egress": {"listen": "[::]:15001", "resolver": "203.0.113.53:5353"}})
    assert loaded.egress.listen == Listen("::", 15001) and loaded.egress.resolver == "203.0.113.53:5353"
    with pytest.raises(ConfigError, match="egress.allow_private"):
        load(None, env={}, overrides={"egress": {"allow_private": ["not a cidr"]}})
    with pytest.raises(ConfigError, match="unknown config key egress.listn"):
        load(None, env={}, overrides={"egress": {"listn": "[::]:15001"}})
