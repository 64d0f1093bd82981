"""Zone files: parsing, errors with file and line, synthesized zones, loading and `edge zone check`."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
from dnslib import QTYPE

from edge import config as config_mod
from edge.config import SynthesizedZone
from edge.dns.zone import Zones
from edge.dns.zonefile import check_files, check_zone_files, load_zones, parse_zone
from edge.errors import ConfigError, ZoneError
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


# --- which domains get a synthesized zone (issue 16) ---------------------------------------------------


def config_for(tmp_path, domains=("sandbox.localhost",), http="127.0.0.1:8080", **dns):
    raw = {"domains": list(domains), "http": {"listen": http}, "dns": {"zones": str(tmp_path), **dns}}
    return config_mod.load(env={}, overrides=raw)


def star_addresses(zones: Zones, domain: str) -> list[str]:
    zone = zones.find(tuple(label.encode() for label in domain.split(".")))
    return sorted(str(r.rdata) for rrset in zone.nodes[(b"*",) + zone.key].values() for r in rrset)


@pytest.mark.parametrize(
    "label, http, addresses",
    [
        ("a loopback listener", "127.0.0.2:8080", ["127.0.0.2"]),
        ("all IPv4 interfaces", "0.0.0.0:8080", ["127.0.0.1", "::1"]),
        ("all IPv6 interfaces", "[::]:8080", ["127.0.0.1", "::1"]),
        ("a public listener: still loopback (RFC 6761 6.3)", "192.0.2.1:80", ["127.0.0.1", "::1"]),
    ],
)
def test_localhost_domain_without_file_gets_a_loopback_zone(tmp_path, caplog, label, http, addresses):
    """A domain under localhost with no file is synthesized at loopback, and a log line says so."""
    caplog.set_level("INFO", "edge.dns")
    loaded = load_zones(config_for(tmp_path, ["sandbox.localhost", "localhost"], http))
    assert star_addresses(loaded.zones, "sandbox.localhost") == addresses
    assert star_addresses(loaded.zones, "localhost") == addresses
    assert "no file" in caplog.text and "synthesized" in caplog.text


def test_public_domain_without_file_refuses_the_start(tmp_path):
    """A domain not under localhost, with no file and no [dns.synthesize] entry, is a ConfigError
    naming the domain and the file expected: before anything binds, and from the DNS server too."""
    cfg = config_for(tmp_path, ["sandbox.localhost", "sandbox.example.com"])
    expected = f"domain sandbox.example.com: no zone file {tmp_path / 'sandbox.example.com.zone'}"
    with pytest.raises(ConfigError, match=re.escape(expected)):
        check_zone_files(cfg)
    with pytest.raises(ConfigError, match=re.escape(expected)):
        load_zones(cfg)
    (tmp_path / "sandbox.example.com.zone").write_text(ZONE.replace("sandbox.localhost", "sandbox.example.com"))
    check_zone_files(cfg)


def test_synthesize_entry_gives_a_public_domain_a_zone_at_its_addresses(tmp_path):
    """`[dns.synthesize]` names a domain's addresses: that domain, and only it, gets a zone without a file."""
    toml = tmp_path / "edge.toml"
    toml.write_text(
        'domains = ["sandbox.example.com", "other.example.com"]\n'
        f'[dns]\nzones = "{tmp_path}"\n'
        '[dns.synthesize]\n"sandbox.example.com" = ["192.0.2.10", "2001:db8::10"]\n'
    )
    cfg = config_mod.load(toml, env={})
    assert cfg.dns.synthesize == (SynthesizedZone("sandbox.example.com", ("192.0.2.10", "2001:db8::10")),)
    with pytest.raises(ConfigError, match="other.example.com: no zone file"):
        check_zone_files(cfg)
    cfg = config_mod.load(toml, env={}, overrides={"domains": ["sandbox.example.com"]})
    check_zone_files(cfg)
    config_mod.load(toml, env={}, overrides={"domains": ["sandbox.localhost"]})  # an unused entry is no error
    assert star_addresses(load_zones(cfg).zones, "sandbox.example.com") == ["192.0.2.10", "2001:db8::10"]


@pytest.mark.parametrize(
    "label, entry, message",
    [
        (
            "not an address",
            '"a.test" = ["192.0.2.300"]',
            """dns.synthesize."a.test": '192.0.2.300' is not an IP address""",
        ),
        ("a name, not an address", '"a.test" = ["edge.example.com"]', "is not an IP address"),
        ("no address", '"a.test" = []', 'dns.synthesize."a.test": [] is not a list of IP addresses'),
        ("not a list", '"a.test" = 5', "is not a list of IP addresses"),
        ("not a domain name", '"a test" = ["192.0.2.1"]', "'a test' is not a domain name"),
    ],
)
def test_bad_synthesize_entry_is_a_config_error(tmp_path, label, entry, message):
    """A [dns.synthesize] entry with a bad address, no address, or a bad domain name refuses the config."""
    toml = tmp_path / "edge.toml"
    toml.write_text(f'domains = ["a.test"]\n[dns.synthesize]\n{entry}\n')
    with pytest.raises(ConfigError, match=re.escape(message)):
        config_mod.load(toml, env={})


def test_files_of_other_domains_are_not_loaded(tmp_path):
    """Only `<domain>.zone` for configured domains is read: samples and strangers are ignored."""
    (tmp_path / "example.com.zone.sample").write_text("garbage\n")
    (tmp_path / "stranger.test.zone").write_text("garbage\n")
    zones = load_zones(config_for(tmp_path)).zones
    assert [z.apex.label for z in zones] == [(b"sandbox", b"localhost")]


def test_bad_file_at_start_raises(tmp_path):
    """At start, a zone file with an error is refused (ZoneError)."""
    (tmp_path / "sandbox.localhost.zone").write_text(OK_HEAD + "x A nope\n")
    with pytest.raises(ZoneError, match=r"sandbox.localhost.zone:4: "):
        load_zones(config_for(tmp_path))


# --- reloads: a zone from a file is replaced only by a file that loads --------------------------------


def warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "edge.dns" and r.levelname == "WARNING"]


@pytest.mark.parametrize(
    "label, break_it, reason",
    [
        ("a file with an error", lambda path: path.write_text(OK_HEAD + "x A nope\n"), "sandbox.localhost.zone:4: "),
        ("a file that is gone", lambda path: path.unlink(), "sandbox.localhost.zone:0: the file is gone"),
    ],
)
def test_broken_or_gone_file_on_reload_keeps_the_previous_zone_and_warns_once(
    tmp_path, caplog, label, break_it, reason
):
    """On reload a bad file, or no file where there was one, keeps the previous zone (never a
    synthesized loopback one): one warning however many reloads, and a line when a good file is back."""
    caplog.set_level("INFO", "edge.dns")
    cfg = config_for(tmp_path)
    path = tmp_path / "sandbox.localhost.zone"
    path.write_text(ZONE.replace("127.0.0.1", "10.0.0.9"))
    first = load_zones(cfg)
    break_it(path)
    second = load_zones(cfg, previous=first)
    third = load_zones(cfg, previous=second)
    assert list(third.zones)[0] is list(first.zones)[0]
    assert star_addresses(third.zones, "sandbox.localhost") == ["10.0.0.9", "::1"]
    [warning] = warnings(caplog)
    assert "zone sandbox.localhost not reloaded, keeping the previous one (serial 1)" in warning and reason in warning
    path.write_text(ZONE)
    fourth = load_zones(cfg, previous=third)
    assert star_addresses(fourth.zones, "sandbox.localhost") == ["127.0.0.1", "::1"] and not fourth.kept
    assert f"zone sandbox.localhost: {path} loads again" in caplog.text


def test_synthesized_zone_stays_synthesized_without_a_warning(tmp_path, caplog):
    """A domain that never had a file keeps its synthesized zone on reload, silently."""
    cfg = config_for(tmp_path)
    first = load_zones(cfg)
    second = load_zones(cfg, previous=first)
    assert star_addresses(second.zones, "sandbox.localhost") == ["127.0.0.1"] and not warnings(caplog)


# --- edge zone check ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "label, text, code, output",
    [
        ("good file", ZONE, 0, "sandbox.localhost.zone: ok, serial 1, 9 records\n"),
        ("bad file", OK_HEAD + "x A nope\nx AAAA 1.2.3.4\n", 1, ":4: "),
    ],
)
def test_edge_zone_check_exit_code_and_output(tmp_path, label, text, code, output):
    """`edge zone check FILE` prints `FILE: ok, serial N, M records`, or FILE:LINE: reason per error and exits 1."""
    path = tmp_path / "sandbox.localhost.zone"
    path.write_text(text)
    done = subprocess.run([sys.executable, "-m", "edge", "zone", "check", str(path)], capture_output=True, text=True)
    assert done.returncode == code
    assert output in done.stdout + done.stderr
    if code:
        assert f"{path}:4: " in done.stderr and f"{path}:5: " in done.stderr
    else:
        assert done.stdout == f"{path}: ok, serial 1, 9 records\n"


def test_zone_check_counts_records_and_reads_the_serial(tmp_path, capsys):
    """The serial is the SOA's; every record counts, those of one RRset each, duplicates once."""
    path = tmp_path / "example.test.zone"
    path.write_text(
        "$ORIGIN example.test.\n$TTL 60\n@ SOA ns1 h 2024061501 2 3 4 5\n@ NS ns1\n@ NS ns2\n"
        "ns1 A 192.0.2.1\nns1 A 192.0.2.1\n* A 192.0.2.2\n* AAAA 2001:db8::2\n"
    )
    assert check_files([str(path)]) == 0
    assert capsys.readouterr().out == f"{path}: ok, serial 2024061501, 6 records\n"


def test_shipped_sample_zone_checks_clean():
    """The commented sample zone for a public domain passes `edge zone check`."""
    from edge.config import SHIPPED_ZONES

    assert check_files([str(SHIPPED_ZONES / "example.com.zone.sample")]) == 0
