"""Zone files: parsing, errors with file and line, synthesized zones, loading and `edge zone check`."""

from __future__ import annotations

import subprocess
import sys

import pytest
from dnslib import QTYPE

from edge.dns.zonefile import load_zones, parse_zone, synthesize, wildcard_addresses
from edge.errors import ZoneError
from tests.dns.support import ZONE


def test_shipped_zone_has_soa_ns_and_wildcards():
    """zones/sandbox.localhost.zone holds SOA, NS, * A 127.0.0.1 and * AAAA ::1."""
    from edge.config import SHIPPED_ZONES
    from edge.dns.zonefile import load_file

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
    done = subprocess.run([sys.executable, "-m", "edge", "zone", "check", str(path)], capture_output=True, text=True)
    assert done.returncode == code
    assert output in done.stdout + done.stderr
    if code:
        assert f"{path}:4: " in done.stderr and f"{path}:5: " in done.stderr


def test_shipped_sample_zone_checks_clean():
    """The commented sample zone for a public domain passes `edge zone check`."""
    from edge.config import SHIPPED_ZONES
    from edge.dns.zonefile import check_files

    assert check_files([str(SHIPPED_ZONES / "example.com.zone.sample")]) == 0
