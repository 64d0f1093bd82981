"""The nftables ruleset `edge egress rules` prints (edge/egress/nft.py)."""

from __future__ import annotations

import pytest

from edge.egress.nft import ruleset
from edge.errors import ValidationError


def _rules(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines()]


def test_sandbox_tcp_is_redirected_to_the_listener_port() -> None:
    rules = _rules(ruleset(["10.77.0.0/24"], 15001, resolver=("203.0.113.53", 53)))
    assert "ip saddr @sandboxes_v4 meta l4proto tcp redirect to :15001" in rules
    assert "elements = { 10.77.0.0/24 }" in rules
    assert "type nat hook prerouting priority dstnat; policy accept;" in rules


def test_dns_to_the_resolver_passes_and_other_forwarded_traffic_drops() -> None:
    """UDP (QUIC included) is dropped but DNS to the resolver, which is not redirected either."""
    rules = _rules(ruleset(["10.77.0.0/24"], 15001, resolver=("203.0.113.53", 5353)))
    fwd = rules[rules.index("chain forward {") :]
    accept = "ip saddr @sandboxes_v4 ip daddr 203.0.113.53 meta l4proto { tcp, udp } th dport 5353 accept"
    assert fwd.index(accept) < fwd.index("ip saddr @sandboxes_v4 drop")
    assert "ip saddr @sandboxes_v4 ip daddr 203.0.113.53 tcp dport 5353 return" in rules
    assert "ip saddr @sandboxes_v4 meta l4proto udp drop" in rules  # UDP to the host itself


def test_excluded_destinations_are_neither_redirected_nor_dropped() -> None:
    rules = _rules(ruleset(["10.77.0.0/24"], 15001, exclude=["10.77.0.0/24", "172.31.0.0/16"]))
    pre = rules[rules.index("chain prerouting {") :]
    assert pre.index("ip saddr @sandboxes_v4 ip daddr @direct_v4 return") < pre.index(
        "ip saddr @sandboxes_v4 meta l4proto tcp redirect to :15001"
    )
    assert "ip saddr @sandboxes_v4 ip daddr @direct_v4 accept" in rules
    assert "elements = { 10.77.0.0/24, 172.31.0.0/16 }" in rules


def test_ipv6_networks_get_their_own_set_and_rules() -> None:
    rules = _rules(ruleset(["10.77.0.0/24", "fd77::/64"], 15001))
    assert "ip6 saddr @sandboxes_v6 meta l4proto tcp redirect to :15001" in rules
    assert "type ipv6_addr" in rules
    assert "ip6 saddr @sandboxes_v6 drop" in rules


def test_without_a_resolver_dns_to_any_address_passes() -> None:
    rules = _rules(ruleset(["10.77.0.0/24"], 15001))
    assert "ip saddr @sandboxes_v4 meta l4proto { tcp, udp } th dport 53 accept" in rules


def test_the_table_is_replaced_whole_on_every_apply() -> None:
    """Declared, deleted, defined, in one `nft -f` transaction: applying twice never doubles the rules."""
    rules = _rules(ruleset(["10.77.0.0/24"], 15001, table="sbx"))
    assert rules.index("table inet sbx") < rules.index("delete table inet sbx") < rules.index("table inet sbx {")


@pytest.mark.parametrize(
    ("args", "kw"),
    [
        ([], {}),
        (["10.77.0.1/24"], {}),
        (["nonsense"], {}),
        (["10.77.0.0/24"], {"exclude": ["x"]}),
        (["10.77.0.0/24"], {"table": "bad name"}),
    ],
)
def test_bad_input_is_refused(args: list[str], kw: dict) -> None:
    with pytest.raises(ValidationError):
        ruleset(args, 15001, **kw)
