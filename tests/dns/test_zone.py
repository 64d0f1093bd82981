"""Zone files: parsing, errors with file and line, and the RFC 4592 lookup."""

from __future__ import annotations

import subprocess
import sys

import pytest
from dnslib import QTYPE, DNSLabel

from edge.dns.zone import Zones, key_of, load_zones, lookup, parse_zone, synthesize, wildcard_addresses
from edge.errors import ZoneError
from tests.dns.support import ZONE

ZONE_WITH_CHAIN = ZONE + 'alias IN CNAME ns1\n_acme-challenge.deep.x IN TXT "t"\n'


def zone(text: str = ZONE_WITH_CHAIN):
    return parse_zone(text, origin="sandbox.localhost", filename="t.zone")


def test_shipped_zone_has_soa_ns_and_wildcards():
    """zones/sandbox.localhost.zone holds SOA, NS, * A 127.0.0.1 and * AAAA ::1."""
    from edge.config import SHIPPED_ZONES
    from edge.dns.zone import load_file

    z = load_file(SHIPPED_ZONES / "sandbox.localhost.zone")
    star = z.nodes[(b"*", b"sandbox", b"localhost")]
    assert [str(r.rdata) for r in star[QTYPE.A]] == ["127.0.0.1"]
    assert [str(r.rdata) for r in star[QTYPE.AAAA]] == ["::1"]
    assert QTYPE.SOA in z.nodes[z.key] and QTYPE.NS in z.nodes[z.key]


@pytest.mark.parametrize(
    "label, text",
    [
        ("parentheses span lines", "$TTL 60\n@ SOA ns1 h (\n 1 2 3\n 4 5 )\n@ NS ns1\n"),
        ("ttl units and class before ttl", "@ IN 1h SOA ns1 h 1 2 3 4 5\n@ NS ns1\n"),
        ("absolute names", "$TTL 60\nsandbox.localhost. SOA ns1.sandbox.localhost. h. 1 2 3 4 5\n@ NS ns1\n"),
        ("blank owner repeats the previous one", "$TTL 60\n@ SOA ns1 h 1 2 3 4 5\n  NS ns1\n"),
        ("comments and quoted semicolons", '$TTL 60 ; c\n@ SOA ns1 h 1 2 3 4 5 ; c\n@ NS ns1\nt TXT "a;b"\n'),
    ],
)
def test_zone_syntax_is_accepted(label, text):
    """BIND zone syntax edge supports parses into SOA and NS at the apex."""
    z = parse_zone(text, origin="sandbox.localhost", filename="t.zone")
    assert QTYPE.SOA in z.nodes[z.key] and QTYPE.NS in z.nodes[z.key]


OK_HEAD = "$TTL 60\n@ SOA ns1 h 1 2 3 4 5\n@ NS ns1\n"


@pytest.mark.parametrize(
    "label, text, line, reason",
    [
        ("bad IPv4", OK_HEAD + "x A 1.2.3.999\n", 4, "does not appear to be an IPv4 or IPv6 address"),
        ("IPv6 in A", OK_HEAD + "x A ::1\n", 4, "is not an IPv4 address"),
        ("unknown type", OK_HEAD + "x FOO bar\n", 4, "record type 'FOO' is not supported"),
        ("no data", OK_HEAD + "x A\n", 4, "A record with no data"),
        ("no TTL", "@ SOA ns1 h 1 2 3 4 5\n", 1, "no TTL"),
        ("out of zone", OK_HEAD + "www.example.com. A 1.2.3.4\n", 4, "outside the zone"),
        ("CNAME and other data", OK_HEAD + "x A 1.2.3.4\nx CNAME ns1\n", 5, "CNAME and other data"),
        ("label too long", OK_HEAD + "x" * 64 + " A 1.2.3.4\n", 4, "longer than 63"),
        ("unbalanced paren", OK_HEAD + "x TXT ( a\n", 4, "'(' without ')'"),
        ("$INCLUDE", OK_HEAD + "$INCLUDE other.zone\n", 4, "$INCLUDE is not supported"),
        ("other class", OK_HEAD + "x CH TXT a\n", 4, "class CH is not supported"),
        ("short SOA", "$TTL 60\n@ SOA ns1 h 1 2 3\n@ NS ns1\n", 2, "SOA takes"),
        ("no SOA", "$TTL 60\n@ NS ns1\n", 2, "no SOA record"),
        ("no NS", "$TTL 60\n@ SOA ns1 h 1 2 3 4 5\n", 2, "no NS record at the apex"),
        (
            "SOA for another domain",
            "$TTL 60\nexample.com. SOA ns1 h 1 2 3 4 5\n",
            2,
            "is not the zone's domain",
        ),
    ],
)
def test_zone_error_names_file_line_and_reason(label, text, line, reason):
    """A bad zone raises ZoneError carrying the file, the line and the reason."""
    with pytest.raises(ZoneError) as info:
        parse_zone(text, origin="sandbox.localhost", filename="t.zone")
    err = info.value
    assert (err.file, err.line) == ("t.zone", line)
    assert reason in err.reason
    assert err.message.startswith(f"t.zone:{line}: ")


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


@pytest.mark.parametrize(
    "label, http_host, addresses",
    [
        ("a specific IPv4 address", "10.1.2.3", ["10.1.2.3"]),
        ("a specific IPv6 address", "2001:db8::1", ["2001:db8::1"]),
        ("all IPv4 interfaces", "0.0.0.0", ["127.0.0.1", "::1"]),
        ("all IPv6 interfaces", "::", ["127.0.0.1", "::1"]),
    ],
)
def test_synthesized_wildcard_points_at_the_http_listener(label, http_host, addresses):
    """A synthesized zone's wildcard is the HTTP listener's address, loopback for 0.0.0.0 and ::."""
    assert wildcard_addresses(http_host) == addresses
    z = synthesize("example.test", wildcard_addresses(http_host))
    got = sorted(str(r.rdata) for rrset in z.nodes[(b"*",) + z.key].values() for r in rrset)
    assert got == sorted(addresses)


def test_domain_without_file_gets_a_synthesized_zone_and_a_log_line(tmp_path, caplog):
    """load_zones synthesizes a zone for a domain with no file, and says so."""
    caplog.set_level("INFO", "edge.dns")
    zones = load_zones(["other.test"], tmp_path, "127.0.0.1")
    assert len(zones) == 1
    assert "no file" in caplog.text and "synthesized" in caplog.text


def test_files_of_other_domains_are_not_loaded(tmp_path):
    """Only `<domain>.zone` for configured domains is read: samples and strangers are ignored."""
    (tmp_path / "example.com.zone.sample").write_text("garbage\n")
    (tmp_path / "stranger.test.zone").write_text("garbage\n")
    zones = load_zones(["sandbox.localhost"], tmp_path, "127.0.0.1")
    assert [z.apex.label for z in zones] == [(b"sandbox", b"localhost")]


def test_bad_file_at_start_raises(tmp_path):
    """At start, a zone file with an error is refused (ZoneError)."""
    (tmp_path / "sandbox.localhost.zone").write_text(OK_HEAD + "x A nope\n")
    with pytest.raises(ZoneError, match=r"sandbox.localhost.zone:4: "):
        load_zones(["sandbox.localhost"], tmp_path, "127.0.0.1")


def test_bad_file_on_reload_keeps_the_previous_zone(tmp_path, caplog):
    """On reload, a bad file leaves the previous zone in place and logs the error."""
    path = tmp_path / "sandbox.localhost.zone"
    path.write_text(ZONE)
    first = load_zones(["sandbox.localhost"], tmp_path, "127.0.0.1")
    path.write_text(OK_HEAD + "x A nope\n")
    second = load_zones(["sandbox.localhost"], tmp_path, "127.0.0.1", previous=first)
    assert list(second)[0] is list(first)[0]
    assert "sandbox.localhost.zone:4:" in caplog.text


@pytest.mark.parametrize(
    "label, text, code, output",
    [
        ("good file", ZONE, 0, "ok"),
        ("bad file", OK_HEAD + "x A nope\nx AAAA 1.2.3.4\n", 1, ":4: "),
    ],
)
def test_edge_zone_check_exit_code_and_output(tmp_path, label, text, code, output):
    """`edge zone check FILE` prints FILE:LINE: reason per error and exits 1, or 0 when fine."""
    path = tmp_path / "sandbox.localhost.zone"
    path.write_text(text)
    done = subprocess.run(
        [sys.executable, "-m", "edge", "zone", "check", str(path)], capture_output=True, text=True
    )
    assert done.returncode == code
    assert output in done.stdout + done.stderr
    if code:
        assert f"{path}:4: " in done.stderr and f"{path}:5: " in done.stderr


def test_shipped_sample_zone_checks_clean():
    """The commented sample zone for a public domain passes `edge zone check`."""
    from edge.config import SHIPPED_ZONES
    from edge.dns.zone import check_files

    assert check_files([str(SHIPPED_ZONES / "example.com.zone.sample")]) == 0
