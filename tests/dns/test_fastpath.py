"""The wildcard fast path: the same bytes as the dnslib path, from templates, or no answer at all."""

from __future__ import annotations

import dns.flags
import dns.message
import pytest

from edge.dns.answer import answer
from edge.dns.fastpath import FastPath
from edge.dns.zone import Zones
from edge.dns.zonefile import parse_zone
from tests.dns.support import ZONE

ZONES = Zones([parse_zone(ZONE, origin="sandbox.localhost", filename="t.zone")])
FAST = FastPath.build(ZONES)
Q = "sandbox.localhost"


def wire(name, rdtype="A", flags=dns.flags.RD, **kw) -> bytes:
    query = dns.message.make_query(name, rdtype, **kw)
    query.flags = flags
    return query.to_wire()


@pytest.mark.parametrize(
    "label, packet",
    [
        ("A", wire(f"3000-abc.{Q}")),
        ("AAAA", wire(f"3000-abc.{Q}", "AAAA")),
        ("mixed case kept", wire("3000-AbC.SandBox.LocalHost")),
        ("several labels", wire(f"a.b.c.{Q}")),
        ("RD clear", wire(f"a.{Q}", flags=0)),
        ("CD set", wire(f"a.{Q}", flags=dns.flags.CD)),
        ("RD and CD", wire(f"a.{Q}", flags=dns.flags.CD | dns.flags.RD)),
        ("AD in the query is cleared", wire(f"a.{Q}", flags=dns.flags.AD)),
        ("EDNS", wire(f"a.{Q}", use_edns=0)),
        ("EDNS with DO", wire(f"a.{Q}", use_edns=0, want_dnssec=True)),
        ("EDNS with an option", wire(f"a.{Q}", use_edns=0, options=[dns.edns.GenericOption(65001, b"x")])),
        ("EDNS small payload", wire(f"a.{Q}", "AAAA", use_edns=0, payload=100)),
    ],
)
def test_fast_path_gives_the_same_bytes_as_the_dnslib_path(label, packet):
    """For wildcard A/AAAA, the template reply equals answer()'s reply byte for byte, and its RRL key."""
    fast = FAST.answer(packet)
    assert fast is not None
    assert fast == answer(packet, ZONES)


@pytest.mark.parametrize(
    "label, packet",
    [
        ("explicit name", wire(f"ns1.{Q}")),
        ("below an explicit name", wire(f"x.ns1.{Q}")),
        ("below _acme-challenge", wire(f"x._acme-challenge.{Q}")),
        ("literal *", wire(f"*.{Q}")),
        ("apex", wire(Q)),
        ("other type", wire(f"a.{Q}", "TXT")),
        ("out of zone", wire("a.example.com")),
        ("suffix not on a label boundary", wire("a.xsandbox.localhost")),
        ("class CH", wire(f"a.{Q}", rdclass="CH")),
        ("EDNS version 1", wire(f"a.{Q}", use_edns=1)),
        ("opcode NOTIFY", bytes([0, 0, 0x20]) + wire(f"a.{Q}")[3:]),
        ("a response", bytes([0, 0, 0x81]) + wire(f"a.{Q}")[3:]),
        ("trailing bytes", wire(f"a.{Q}") + b"\x00"),
        ("OPT cut short", wire(f"a.{Q}", use_edns=0)[:-3]),
        ("name over 255 bytes", wire(Q)[:12] + (b"\x3f" + b"a" * 63) * 4 + wire(Q)[12:]),
    ],
)
def test_fast_path_declines_what_it_is_not_sure_of(label, packet):
    """Anything but a plain wildcard A/AAAA query goes to the dnslib path."""
    assert FAST.answer(packet) is None


def test_fast_path_is_rebuilt_from_the_zone():
    """Templates come from the zone: another address in the zone, another answer."""
    text = ZONE.replace("*       IN A    127.0.0.1", "*       IN A    10.9.8.7")
    assert text != ZONE
    zones = Zones([parse_zone(text, origin=Q, filename="t")])
    reply = dns.message.from_wire(FastPath.build(zones).answer(wire(f"a.{Q}"))[0])
    assert [rd.to_text() for rd in reply.answer[0]] == ["10.9.8.7"]


def test_zone_without_wildcard_has_no_templates():
    """A zone without `*` has nothing on the fast path."""
    zones = Zones([parse_zone("$TTL 60\n@ SOA ns1 h 1 2 3 4 5\n@ NS ns1\n", origin=Q, filename="t")])
    assert FastPath.build(zones).answer(wire(f"a.{Q}")) is None


def test_names_of_a_sub_zone_without_wildcard_are_not_answered_from_the_parent():
    """A delegated-here sub-zone without `*` is never answered from its parent's templates."""
    child = parse_zone("$TTL 60\n@ SOA ns1 h 1 2 3 4 5\n@ NS ns1\n", origin=f"sub.{Q}", filename="c")
    zones = Zones([list(ZONES)[0], child])
    fast = FastPath.build(zones)
    assert fast.answer(wire(f"a.sub.{Q}")) is None
    assert answer(wire(f"a.sub.{Q}"), zones)[0][3] & 0xF == 3  # NXDOMAIN from the child zone
    assert fast.answer(wire(f"a.{Q}")) is not None
