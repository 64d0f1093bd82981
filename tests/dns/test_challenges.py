"""ACME DNS-01 values as TXT records: merged into the zones (pure), and served by a running DNS server
from the live catalog (dnspython, over UDP and TCP)."""

from __future__ import annotations

import time

import dns.message
import dns.rcode
import dns.rdatatype
import pytest
import trio
from dnslib import QTYPE, DNSRecord

from edge import config as config_mod
from edge.catalog.model import Challenge, Snapshot
from edge.catalog.store import LiveCatalog
from edge.dns.challenges import CHALLENGE_TTL, with_challenges
from edge.dns.fastpath import FastPath
from edge.dns.respond import respond
from edge.dns.server import serve
from edge.dns.zone import Zones
from edge.dns.zonefile import parse_zone, synthesize
from tests.dns.support import ZONE, ask

D = "sandbox.test"
NAME = f"_acme-challenge.{D}"
LATER = 4_000_000_000.0  # far in the future
NOW = 1_000_000_000.0


def zones() -> Zones:
    return Zones([synthesize(D, ["127.0.0.1"]), parse_zone(ZONE, origin="sandbox.localhost", filename="t.zone")])


def query(merged: Zones, name: str, rdtype: str = "TXT") -> dns.message.Message:
    """Ask the way the server does: the wildcard templates first, then edge.dns.answer."""
    fast = FastPath.build(merged, 1232).answer
    out = respond(dns.message.make_query(name, rdtype).to_wire(), fast, merged, edns_size=1232)
    assert out.reply is not None
    return dns.message.from_wire(out.reply)


def texts(reply: dns.message.Message) -> list[str]:
    return sorted(rd.to_text() for rrset in reply.answer for rd in rrset)


@pytest.mark.parametrize(
    "label, held, name, rdtype, rcode, answers",
    [
        ("no value: the wildcard answers A", [], NAME, "A", "NOERROR", ["127.0.0.1"]),
        ("no value: TXT is NODATA under the wildcard", [], NAME, "TXT", "NOERROR", []),
        ("one value", [(NAME, "v1")], NAME, "TXT", "NOERROR", ['"v1"']),
        ("two values at one name (D and *.D)", [(NAME, "v1"), (NAME, "v2")], NAME, "TXT", "NOERROR", ['"v1"', '"v2"']),
        ("a name holding values shadows the wildcard: A is NODATA", [(NAME, "v1")], NAME, "A", "NOERROR", []),
        ("below it is NXDOMAIN", [(NAME, "v1")], f"x.{NAME}", "TXT", "NXDOMAIN", []),
        ("other names keep the wildcard", [(NAME, "v1")], f"3000-a.{D}", "A", "NOERROR", ["127.0.0.1"]),
        ("a deeper name", [(f"_acme-challenge.a.{D}", "v3")], f"_acme-challenge.a.{D}", "TXT", "NOERROR", ['"v3"']),
        (
            "the zone file's own TXT joins the values",
            [("_acme-challenge.sandbox.localhost", "v4")],
            "_acme-challenge.sandbox.localhost",
            "TXT",
            "NOERROR",
            ['"token"', '"v4"'],
        ),
        (
            "a name in no zone is ignored",
            [("_acme-challenge.other.test", "v5")],
            "_acme-challenge.other.test",
            "TXT",
            "REFUSED",
            [],
        ),
    ],
)
def test_challenge_values_are_txt_records_under_the_zone_rules(label, held, name, rdtype, rcode, answers):
    """Values at _acme-challenge names answer TXT, shadow the wildcard, and follow NXDOMAIN/NODATA rules."""
    merged, _ = with_challenges(zones(), [Challenge(f, v, LATER) for f, v in held], NOW)
    reply = query(merged, name, rdtype)
    assert dns.rcode.to_text(reply.rcode()) == rcode
    assert texts(reply) == answers


def test_challenge_rrset_has_one_low_ttl():
    """Every record of the RRset, the zone file's included, has the challenge TTL (RFC 2181 5.2)."""
    held = [Challenge("_acme-challenge.sandbox.localhost", "v", LATER)]
    merged, _ = with_challenges(zones(), held, NOW)
    fast = FastPath.build(merged, 1232).answer
    out = respond(
        dns.message.make_query("_acme-challenge.sandbox.localhost", "TXT").to_wire(), fast, merged, edns_size=1232
    )
    assert [rr.ttl for rr in DNSRecord.parse(out.reply).rr] == [CHALLENGE_TTL, CHALLENGE_TTL]  # as sent, per record


def test_expired_values_are_left_out_and_the_first_expiry_is_reported():
    """A value past its expiry is not served; the earliest expiry of those served comes back."""
    held = [Challenge(NAME, "old", NOW - 1), Challenge(NAME, "a", NOW + 50), Challenge(NAME, "b", NOW + 20)]
    merged, first = with_challenges(zones(), held, NOW)
    assert texts(query(merged, NAME)) == ['"a"', '"b"'] and first == NOW + 20
    unchanged = zones()
    assert with_challenges(unchanged, [Challenge(NAME, "old", NOW - 1)], NOW) == (unchanged, None)


def test_a_cname_at_the_name_is_left_alone():
    """A challenge delegated by CNAME in the zone file gets no TXT beside the CNAME (RFC 1034 3.6.2)."""
    text = ZONE + "_acme-challenge.x IN CNAME elsewhere.example.\n"
    base = Zones([parse_zone(text, origin="sandbox.localhost", filename="t.zone")])
    merged, _ = with_challenges(base, [Challenge("_acme-challenge.x.sandbox.localhost", "v", LATER)], NOW)
    key = (b"_acme-challenge", b"x", b"sandbox", b"localhost")
    assert set(merged.find(key).nodes[key]) == {QTYPE.CNAME}
    reply = query(merged, "_acme-challenge.x.sandbox.localhost")
    assert [rrset.rdtype for rrset in reply.answer] == [dns.rdatatype.CNAME]


# --- a running server, the values coming from the live catalog ----------------------------------------


@pytest.fixture
async def served(nursery, tmp_path):
    dns_config = {"listen": "127.0.0.1:0", "zones": str(tmp_path), "zones_poll": 0.05, "synthesize": {D: ["127.0.0.1"]}}
    cfg = config_mod.load(env={}, overrides={"domains": [D], "dns": dns_config})
    live = LiveCatalog()
    bound = await nursery.start(serve, cfg, live)
    return bound[0], live


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_running_server_serves_catalog_values_at_once_and_drops_them(served, transport):
    """A catalog change adds and removes TXT values without a restart; the wildcard comes back after."""
    addr, live = served
    reply = await ask(transport, dns.message.make_query(NAME, "TXT"), addr)
    assert texts(reply) == [] and reply.rcode() == dns.rcode.NOERROR
    later = time.time() + 3600
    live.swap(Snapshot((), 1, [Challenge(NAME, "tok-1", later), Challenge(NAME, "tok-2", later)]))
    reply = await ask(transport, dns.message.make_query(NAME, "TXT"), addr)
    assert texts(reply) == ['"tok-1"', '"tok-2"'] and reply.answer[0].ttl == CHALLENGE_TTL
    live.swap(Snapshot((), 2))
    reply = await ask(transport, dns.message.make_query(NAME, "A"), addr)
    assert texts(reply) == ["127.0.0.1"]


async def test_running_server_stops_serving_a_value_when_it_expires(served):
    """A value whose lifetime ends is dropped by the server itself, with no catalog change."""
    addr, live = served
    live.swap(Snapshot((), 1, [Challenge(NAME, "short", time.time() + 0.3), Challenge(NAME, "long", time.time() + 60)]))
    assert texts(await ask("udp", dns.message.make_query(NAME, "TXT"), addr)) == ['"long"', '"short"']
    await trio.sleep(0.6)
    assert texts(await ask("udp", dns.message.make_query(NAME, "TXT"), addr)) == ['"long"']
