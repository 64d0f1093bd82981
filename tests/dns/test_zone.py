"""Zones: the RFC 4592 lookup and finding a name's zone."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from dnslib import QTYPE, DNSLabel

from edge.dns.zone import Zones, key_of, lookup
from edge.dns.zonefile import parse_zone, synthesize
from tests.dns.support import ZONE

ZONE_WITH_CHAIN = ZONE + 'alias IN CNAME ns1\n_acme-challenge.deep.x IN TXT "t"\n'


def zone(text: str = ZONE_WITH_CHAIN):
    return parse_zone(text, origin="sandbox.localhost", filename="t.zone")


Q = "sandbox.localhost"


@pytest.mark.parametrize(
    "label, qname, qtype, answers, negative, nxdomain",
    [
        ("wildcard covers one label", f"3000-abc.{Q}", "A", ["127.0.0.1"], False, False),
        ("wildcard covers several labels", f"a.b.c.{Q}", "AAAA", ["::1"], False, False),
        ("wildcard does not cover the apex", Q, "A", [], True, False),
        ("explicit name wins for itself", f"ns1.{Q}", "A", ["127.0.0.2"], False, False),
        ("explicit name without the type is NODATA", f"ns1.{Q}", "AAAA", [], True, False),
        ("explicit name shadows the names below it", f"x.ns1.{Q}", "A", [], True, True),
        ("_acme-challenge answers its TXT", f"_acme-challenge.{Q}", "TXT", ['"token"'], False, False),
        ("below _acme-challenge is NXDOMAIN", f"a._acme-challenge.{Q}", "A", [], True, True),
        ("empty non-terminal exists (NODATA)", f"x.{Q}", "A", [], True, False),
        ("below an empty non-terminal is NXDOMAIN", f"y.x.{Q}", "A", [], True, True),
        ("unknown type is NODATA", f"a.{Q}", "TYPE65400", [], True, False),
        ("ANY gets one RRset", f"a.{Q}", "ANY", ["127.0.0.1"], False, False),
        (
            "CNAME is followed in the zone",
            f"alias.{Q}",
            "A",
            ["ns1.sandbox.localhost.", "127.0.0.2"],
            False,
            False,
        ),
        ("CNAME asked for itself", f"alias.{Q}", "CNAME", ["ns1.sandbox.localhost."], False, False),
    ],
)
def test_lookup_follows_rfc_4592(label, qname, qtype, answers, negative, nxdomain):
    """Lookup: wildcard coverage, explicit names, NODATA and NXDOMAIN (RFC 4592 section 3.3.1)."""
    qt = int(qtype[4:]) if qtype.startswith("TYPE") else getattr(QTYPE, qtype)
    found = lookup(zone(), DNSLabel(qname), qt)
    assert [str(r.rdata) for r in found.answers] == answers
    assert (found.negative, found.nxdomain) == (negative, nxdomain)


def test_lookup_keeps_the_question_letter_case():
    """The answer's owner is the question's name in the question's exact letter case (0x20)."""
    found = lookup(zone(), DNSLabel("3000-DeMo.SandBox.LOCALHOST"), QTYPE.A)
    assert found.answers[0].rname.label == (b"3000-DeMo", b"SandBox", b"LOCALHOST")


def test_wildcard_answers_share_one_rate_limit_key():
    """Random labels under the wildcard map to the `*` node, the rate-limiting key."""
    z = zone()
    keys = {lookup(z, DNSLabel(f"{i}-r{i}.{Q}"), QTYPE.A).source for i in range(20)}
    assert keys == {(b"*",) + z.key}


def test_negative_ttl_is_min_of_soa_ttl_and_minimum():
    """RFC 2308: the negative TTL is min(SOA TTL, SOA MINIMUM)."""
    assert zone().negative_ttl == 30
    z = parse_zone("$TTL 20\n@ SOA ns1 h 1 2 3 4 300\n@ NS ns1\n", origin=Q, filename="t")
    assert z.negative_ttl == 20


def test_zones_find_the_longest_apex():
    """A name belongs to the zone with the longest matching apex; other names to none."""
    outer = synthesize("example.test", ["10.0.0.1"])
    inner = synthesize("in.example.test", ["10.0.0.2"])
    zones = Zones([outer, inner])
    assert zones.find(key_of(DNSLabel("a.in.example.test"))) is inner
    assert zones.find(key_of(DNSLabel("a.example.test"))) is outer
    assert zones.find(key_of(DNSLabel("example.org"))) is None
    assert zones.find(key_of(DNSLabel("xexample.test"))) is None


def test_zone_module_does_not_import_zonefile():
    """zone.py (records, lookup) stands below zonefile.py (files -> zones): no import back up, even lazily."""
    import edge.dns.zone

    tree = ast.parse(Path(edge.dns.zone.__file__).read_text())
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    imported |= {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    assert not any(name and name.startswith("edge.dns.zonefile") for name in imported)
