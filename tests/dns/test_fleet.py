"""The fleet's serving edges as the wildcard's answer (edge/dns/fleet.py), through the same path as
the server (templates first, then edge.dns.answer), and the fleet's pure parts."""

from __future__ import annotations

import dns.message
import pytest

from edge.catalog.fleet import Node, serving_addresses
from edge.dns.fastpath import FastPath
from edge.dns.fleet import with_fleet
from edge.dns.respond import respond
from edge.dns.zone import Zones
from edge.dns.zonefile import parse_zone
from tests.dns.support import ZONE

D = "sandbox.localhost"


def zones() -> Zones:
    return Zones([parse_zone(ZONE, origin=D, filename="t.zone")])


def query(merged: Zones, name: str, rdtype: str) -> dns.message.Message:
    fast = FastPath.build(merged, 1232).answer
    out = respond(dns.message.make_query(name, rdtype).to_wire(), fast, merged, edns_size=1232)
    assert out.reply is not None
    return dns.message.from_wire(out.reply)


def answer(reply: dns.message.Message) -> tuple[list[str], list[int]]:
    return sorted(rd.to_text() for rrset in reply.answer for rd in rrset), [rrset.ttl for rrset in reply.answer]


CASES = [
    # label, fleet addresses, name, type, answers, TTLs
    ("no fleet yet: the zone file", (), f"3000-a.{D}", "A", ["127.0.0.1"], [60]),
    (
        "three edges",
        ("127.0.0.11", "127.0.0.12", "127.0.0.13"),
        f"3000-a.{D}",
        "A",
        ["127.0.0.11", "127.0.0.12", "127.0.0.13"],
        [2],
    ),
    ("IPv6 edge in AAAA", ("127.0.0.11", "2001:db8::1"), f"3000-a.{D}", "AAAA", ["2001:db8::1"], [2]),
    ("no IPv6 edge: AAAA is NODATA", ("127.0.0.11",), f"3000-a.{D}", "AAAA", [], []),
    ("explicit names keep their records", ("127.0.0.11",), f"ns1.{D}", "A", ["127.0.0.2"], [60]),
    ("deeper names under the wildcard too", ("127.0.0.11",), f"x.3000-a.{D}", "A", ["127.0.0.11"], [2]),
]


@pytest.mark.parametrize("label, fleet, name, rdtype, want, ttls", CASES, ids=[c[0] for c in CASES])
def test_the_wildcard_answers_with_the_serving_edges(label, fleet, name, rdtype, want, ttls):
    """Sandbox names resolve to the fleet's edges with the fleet's TTL; other names keep the zone file's."""
    got, got_ttls = answer(query(with_fleet(zones(), fleet, 2), name, rdtype))
    assert (got, got_ttls) == (want, ttls), label


def test_only_serving_edges_are_named_each_address_once():
    """Draining edges are left out; an address two nodes share is named once; IPv4 first."""
    nodes = (
        Node("a", ("127.0.0.11", "2001:db8::1"), "serving"),
        Node("b", ("127.0.0.12",), "draining"),
        Node("c", ("127.0.0.11", "127.0.0.13"), "serving"),
    )
    assert serving_addresses(nodes) == ("127.0.0.11", "127.0.0.13", "2001:db8::1")


def test_a_heartbeat_that_cannot_be_read_is_skipped():
    """A node key holding garbage (or a bad address) is not an edge."""
    assert Node.from_json("{") is None and Node.from_json('{"id": "x", "addresses": ["nope"]}') is None
    assert Node.from_json(Node("x", ("127.0.0.11",), "serving").to_json()) == Node("x", ("127.0.0.11",), "serving")
