"""Which sandbox addresses a write accepts: pure, no sockets."""

from __future__ import annotations

import pytest

from edge.catalog.model import validate_address
from edge.errors import ValidationError

REFUSED = [
    # label, address, words the reason must contain
    ("IPv4 unspecified", "0.0.0.0", "unspecified"),
    ("IPv4 this-network range", "0.1.2.3", "unspecified"),
    ("IPv6 unspecified", "::", "unspecified"),
    ("IPv4-mapped unspecified", "::ffff:0.0.0.0", "unspecified"),
    ("cloud metadata address", "169.254.169.254", "link-local"),
    ("IPv4 link-local", "169.254.0.1", "link-local"),
    ("IPv4-mapped metadata address", "::ffff:169.254.169.254", "link-local"),
    ("IPv4-mapped metadata address, hex form", "::ffff:a9fe:a9fe", "link-local"),
    ("IPv6 link-local", "fe80::1", "link-local"),
    ("IPv6 link-local with a zone ID", "fe80::1%eth0", "zone ID"),
    ("global IPv6 with a zone ID", "2001:db8::1%1", "zone ID"),
    ("IPv4 limited broadcast", "255.255.255.255", "broadcast"),
    ("IPv4-mapped broadcast", "::ffff:255.255.255.255", "broadcast"),
    ("IPv4 multicast", "224.0.0.1", "multicast"),
    ("IPv4 multicast, top of range", "239.255.255.250", "multicast"),
    ("IPv4-mapped multicast", "::ffff:224.0.0.251", "multicast"),
    ("IPv6 multicast", "ff02::1", "multicast"),
    ("IPv4-compatible IPv6 (deprecated)", "::169.254.169.254", "IPv4-compatible"),
    ("a host name", "localhost", "not an IP address"),
    ("an address with a port", "127.0.0.2:80", "not an IP address"),
    ("an integer", 2130706433, "not an IP address"),
    ("IPv4 with leading zeros", "127.000.0.2", "not an IP address"),
]


@pytest.mark.parametrize("label, address, words", REFUSED, ids=[r[0] for r in REFUSED])
def test_addresses_that_are_no_sandbox_are_refused(label, address, words):
    """Each refused address is a ValidationError on `address` whose reason says why."""
    with pytest.raises(ValidationError) as info:
        validate_address(address)
    assert info.value.field == "address", label
    assert words in info.value.reason and repr(address) in info.value.reason, (label, info.value.reason)


ACCEPTED = [
    # label, address, as stored
    ("IPv4 loopback other than the edge's own", "127.0.0.2", "127.0.0.2"),
    ("IPv4 loopback", "127.0.0.1", "127.0.0.1"),
    ("IPv6 loopback", "::1", "::1"),
    ("IPv6 loopback, long form", "0:0:0:0:0:0:0:1", "::1"),
    ("IPv4-mapped loopback", "::ffff:127.0.0.2", "::ffff:7f00:2"),
    ("private IPv4", "10.0.3.17", "10.0.3.17"),
    ("private IPv4, 192.168", "192.168.1.20", "192.168.1.20"),
    ("IPv4 just past the link-local range", "169.255.0.1", "169.255.0.1"),
    ("IPv4 just below multicast", "223.255.255.254", "223.255.255.254"),
    ("IPv4 1.0.0.0, just past 0/8", "1.0.0.0", "1.0.0.0"),
    ("unique local IPv6", "fd00::7", "fd00::7"),
    ("global IPv6, upper case", "2001:DB8::A", "2001:db8::a"),
]


@pytest.mark.parametrize("label, address, stored", ACCEPTED, ids=[r[0] for r in ACCEPTED])
def test_sandbox_addresses_are_accepted_and_normalized(label, address, stored):
    """Loopback, private and global unicast addresses pass, in their normal form."""
    assert validate_address(address) == stored, label
