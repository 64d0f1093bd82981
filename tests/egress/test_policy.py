"""The policy: validation, the decision and its rule, the always-denied ranges (edge/egress/policy.py)."""

from __future__ import annotations

import ipaddress

import pytest

from edge.egress.policy import (
    MAX_ENTRIES,
    Policy,
    Verdict,
    always_denied,
    decide,
    policy_of,
    validate_entry,
    validate_policy,
)
from edge.errors import ValidationError

ip = ipaddress.ip_address
NO_INTERNET = Policy(internet_access=False)

DECISIONS = [
    # label, policy, name, address, verdict
    ("empty policy allows", Policy(), "example.com", "198.51.100.1", Verdict(True, "default")),
    (
        "apex entry matches the apex",
        Policy(False, ("example.com",)),
        "example.com",
        "198.51.100.1",
        Verdict(True, "allow_out example.com", True),
    ),
    (
        "apex entry does not match a subdomain",
        Policy(False, ("example.com",)),
        "www.example.com",
        "198.51.100.1",
        Verdict(False, "internet_access false"),
    ),
    (
        "wildcard matches a subdomain",
        Policy(False, ("*.example.com",)),
        "www.example.com",
        "198.51.100.1",
        Verdict(True, "allow_out *.example.com", True),
    ),
    (
        "wildcard matches a deeper subdomain",
        Policy(False, ("*.example.com",)),
        "a.b.example.com",
        "198.51.100.1",
        Verdict(True, "allow_out *.example.com", True),
    ),
    (
        "wildcard does not match the apex",
        Policy(False, ("*.example.com",)),
        "example.com",
        "198.51.100.1",
        Verdict(False, "internet_access false"),
    ),
    (
        "wildcard does not match a longer label",
        Policy(False, ("*.example.com",)),
        "badexample.com",
        "198.51.100.1",
        Verdict(False, "internet_access false"),
    ),
    (
        "both entries: apex and subdomains",
        Policy(False, ("example.com", "*.example.com")),
        "example.com",
        "198.51.100.1",
        Verdict(True, "allow_out example.com", True),
    ),
    (
        "allowed domain beats denied CIDR",
        Policy(True, ("api.example.com",), ("198.51.100.0/24",)),
        "api.example.com",
        "198.51.100.1",
        Verdict(True, "allow_out api.example.com", True),
    ),
    (
        "allowed CIDR beats denied domain",
        Policy(True, ("198.51.100.0/24",), ("api.example.com",)),
        "api.example.com",
        "198.51.100.1",
        Verdict(True, "allow_out 198.51.100.0/24"),
    ),
    (
        "allow beats deny for one address",
        Policy(True, ("198.51.100.7",), ("198.51.100.0/24",)),
        None,
        "198.51.100.7",
        Verdict(True, "allow_out 198.51.100.7"),
    ),
    (
        "denied CIDR",
        Policy(True, (), ("198.51.100.0/24",)),
        None,
        "198.51.100.7",
        Verdict(False, "deny_out 198.51.100.0/24"),
    ),
    (
        "denied domain",
        Policy(True, (), ("*.example.org",)),
        "x.example.org",
        "192.0.2.1",
        Verdict(False, "deny_out *.example.org"),
    ),
    ("denied domain needs the name", Policy(True, (), ("*.example.org",)), None, "192.0.2.1", Verdict(True, "default")),
    ("no internet denies IPv4", NO_INTERNET, None, "192.0.2.1", Verdict(False, "internet_access false")),
    ("no internet denies IPv6", NO_INTERNET, None, "2001:db8::1", Verdict(False, "internet_access false")),
    (
        "no internet, an allowed CIDR",
        Policy(False, ("192.0.2.0/24",)),
        None,
        "192.0.2.1",
        Verdict(True, "allow_out 192.0.2.0/24"),
    ),
    (
        "the most specific CIDR names the rule",
        Policy(True, (), ("192.0.0.0/8", "192.0.2.0/24")),
        None,
        "192.0.2.1",
        Verdict(False, "deny_out 192.0.2.0/24"),
    ),
    ("IPv6 CIDR", Policy(True, (), ("2001:db8::/32",)), None, "2001:db8::1", Verdict(False, "deny_out 2001:db8::/32")),
    ("IPv4 CIDR never matches IPv6", Policy(True, (), ("0.0.0.0/0",)), None, "2001:db8::1", Verdict(True, "default")),
]


@pytest.mark.parametrize(("label", "policy", "name", "address", "verdict"), DECISIONS, ids=[c[0] for c in DECISIONS])
def test_decision_and_the_rule_that_made_it(
    label: str, policy: Policy, name: str | None, address: str, verdict: Verdict
) -> None:
    """Allowed domains, allowed CIDRs, denied domains, denied CIDRs, then allow."""
    assert decide(policy, name, ip(address)) == verdict


ENTRIES = [
    ("192.0.2.1", "192.0.2.1"),
    ("192.0.2.0/24", "192.0.2.0/24"),
    ("192.0.2.1/32", "192.0.2.1"),
    ("2001:DB8::/32", "2001:db8::/32"),
    ("0.0.0.0/0", "0.0.0.0/0"),
    ("Example.COM.", "example.com"),
    ("*.Example.com", "*.example.com"),
    (" pypi.org ", "pypi.org"),
]


@pytest.mark.parametrize(("entry", "normal"), ENTRIES)
def test_entries_are_stored_in_normal_form(entry: str, normal: str) -> None:
    assert validate_entry("allow_out", entry) == normal


@pytest.mark.parametrize(
    "entry",
    [
        "192.0.2.1/24",
        "300.1.1.1",
        "1.2.3.4.5",
        "*",
        "*.com",
        "a.*.example.com",
        "example.com/24",
        "http://example.com",
        "",
        "exa mple.com",
        5,
        "fe80::1%eth0",
    ],
)
def test_bad_entries_are_refused(entry: object) -> None:
    with pytest.raises(ValidationError):
        validate_entry("allow_out", entry)


def test_host_bits_error_says_the_network() -> None:
    with pytest.raises(ValidationError, match="did you mean 192.0.2.0/24"):
        validate_entry("deny_out", "192.0.2.1/24")


def test_policy_validation_drops_duplicates_and_checks_types() -> None:
    assert validate_policy(False, ["a.example", "A.example."], []) == Policy(False, ("a.example",), ())
    with pytest.raises(ValidationError):
        validate_policy("no", [], [])
    with pytest.raises(ValidationError):
        validate_policy(True, "a.example", [])


def test_a_record_without_policy_fields_allows_everything() -> None:
    """Catalog records written before the fields existed: internet on, no lists."""
    assert policy_of(object()) == Policy()


DENIED = [
    ("10.1.2.3", "private 10.0.0.0/8"),
    ("172.31.0.1", "private 172.16.0.0/12"),
    ("192.168.1.1", "private 192.168.0.0/16"),
    ("127.0.0.1", "loopback 127.0.0.0/8"),
    ("169.254.169.254", "link-local 169.254.0.0/16"),
    ("100.64.0.1", "CGNAT 100.64.0.0/10"),
    ("0.0.0.0", "this host 0.0.0.0/8"),
    ("224.0.0.1", "multicast 224.0.0.0/4"),
    ("255.255.255.255", "reserved 240.0.0.0/4"),
    ("::1", "loopback ::1/128"),
    ("::", "this host ::/128"),
    ("fe80::1", "link-local fe80::/10"),
    ("fd00::1", "unique-local fc00::/7"),
    ("::ffff:169.254.169.254", "link-local 169.254.0.0/16"),
    ("64:ff9b::a9fe:a9fe", "link-local 169.254.0.0/16"),
    ("::10.0.0.1", "private 10.0.0.0/8"),
]


@pytest.mark.parametrize(("address", "why"), DENIED)
def test_always_denied_ranges(address: str, why: str) -> None:
    assert always_denied(ip(address)) == f"always_denied {why}"


@pytest.mark.parametrize(
    "address", ["192.0.2.1", "198.51.100.1", "203.0.113.1", "8.8.8.8", "2001:db8::1", "::ffff:192.0.2.1"]
)
def test_public_addresses_are_dialled(address: str) -> None:
    assert always_denied(ip(address)) is None


def test_allow_private_lifts_only_its_range() -> None:
    """An operator's package mirror in 10.20.0.0/16: that range only, never the metadata address."""
    mirror = (ipaddress.ip_network("10.20.0.0/16"),)
    assert always_denied(ip("10.20.1.1"), mirror) is None
    assert always_denied(ip("::ffff:10.20.1.1"), mirror) is None
    assert always_denied(ip("10.21.1.1"), mirror) == "always_denied private 10.0.0.0/8"
    assert always_denied(ip("169.254.169.254"), mirror) == "always_denied link-local 169.254.0.0/16"


def test_more_entries_than_the_limit_are_refused_even_when_duplicates() -> None:
    """The API schema's maxItems counts the list as sent: 513 copies of one address are too many."""
    assert validate_policy(True, ["192.0.2.1"] * MAX_ENTRIES, []) == Policy(True, ("192.0.2.1",), ())
    with pytest.raises(ValidationError, match="at most"):
        validate_policy(True, ["192.0.2.1"] * (MAX_ENTRIES + 1), [])
