"""Host -> (port, sandbox): the pure router, table-driven."""

import pytest

from edge.errors import BadHost
from edge.http.route import Router, split_target

ROUTER = Router(("sandbox.localhost", "e2b.example", "deep.e2b.example"))


@pytest.mark.parametrize(
    "label, host, want",
    [
        ("plain", b"3000-demo.sandbox.localhost", (3000, "demo")),
        ("with edge port", b"3000-demo.sandbox.localhost:8080", (3000, "demo")),
        ("upper case", b"3000-DeMo.SANDBOX.localhost", (3000, "demo")),
        ("trailing dot", b"3000-demo.sandbox.localhost.", (3000, "demo")),
        ("uuid id keeps its dashes", b"8080-4f1c-9a2b-77.e2b.example", (8080, "4f1c-9a2b-77")),
        ("e2b style id", b"3000-i62mff4ahtrdfdkyn2esc.e2b.example", (3000, "i62mff4ahtrdfdkyn2esc")),
        ("port 1", b"1-a.e2b.example", (1, "a")),
        ("port 65535", b"65535-a.e2b.example", (65535, "a")),
        ("nested domain matched exactly", b"80-x.deep.e2b.example", (80, "x")),
        ("63-char id", b"80-" + b"a" * 63 + b".e2b.example", (80, "a" * 63)),
    ],
)
def test_valid_host_routes_to_port_and_sandbox(label, host, want):
    """Each well-formed host yields its port and sandbox ID."""
    assert ROUTER.route(host) == want, label


@pytest.mark.parametrize(
    "label, host",
    [
        ("empty", b""),
        ("no port", b"demo.sandbox.localhost"),
        ("port zero", b"0-demo.sandbox.localhost"),
        ("leading zero", b"03000-demo.sandbox.localhost"),
        ("port too large", b"65536-demo.sandbox.localhost"),
        ("six digit port", b"100000-demo.sandbox.localhost"),
        ("empty id", b"3000-.sandbox.localhost"),
        ("id ends with dash", b"3000-demo-.sandbox.localhost"),
        ("id too long", b"3000-" + b"a" * 64 + b".sandbox.localhost"),
        ("id with underscore", b"3000-de_mo.sandbox.localhost"),
        ("foreign domain", b"3000-demo.example.com"),
        ("suffix without a dot", b"3000-demosandbox.localhost"),
        ("apex", b"sandbox.localhost"),
        ("two labels", b"a.3000-demo.sandbox.localhost"),
        ("bad edge port", b"3000-demo.sandbox.localhost:80x"),
        ("ipv6 literal", b"[::1]:8080"),
        ("non-ascii", "3000-dé.sandbox.localhost".encode()),
    ],
)
def test_malformed_host_raises_bad_host(label, host):
    """Each malformed host is a BadHost (400), never a route."""
    with pytest.raises(BadHost):
        ROUTER.route(host)


@pytest.mark.parametrize(
    "target, want",
    [
        (b"/a?b", (None, b"/a?b")),
        (b"*", (None, b"*")),
        (b"http://h.example:80/p?q", (b"h.example:80", b"/p?q")),
        (b"HTTP://h.example", (b"h.example", b"/")),
        (b"https://h.example?x=1", (b"h.example", b"/?x=1")),
    ],
)
def test_split_target_separates_authority_from_origin_form(target, want):
    """Absolute-form targets give their authority and the origin-form path."""
    assert split_target(target) == want


@pytest.mark.parametrize("target", [b"ftp://h/x", b"h.example:80", b"http://user@h/x"])
def test_split_target_refuses_other_forms(target):
    """Authority-form, other schemes and user info are refused."""
    with pytest.raises(BadHost):
        split_target(target)
