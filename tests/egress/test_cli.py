"""The command-line parts the egress router gives edge/cli.py (edge/egress/cli.py)."""

from __future__ import annotations

import argparse

import pytest

from edge.config import Listen
from edge.egress.cli import add_network_parser, add_policy_flags, add_rules_parser, policy_changes, rules_text
from edge.egress.config import EgressConfig
from edge.errors import EdgeError, ValidationError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command")
    add_rules_parser(sub.add_parser("egress").add_subparsers(dest="egress_command"))
    sandbox = sub.add_parser("sandbox").add_subparsers(dest="sandbox_command")
    add_policy_flags(sandbox.add_parser("add"))
    add_network_parser(sandbox)
    return parser


def test_rules_take_port_and_resolver_from_the_config_unless_flags_say() -> None:
    args = _parser().parse_args(["egress", "rules", "--sandbox-cidr", "172.17.0.0/16", "--exclude", "172.17.0.0/16"])
    text = rules_text(args, EgressConfig(listen=Listen("0.0.0.0", 15099), resolver="203.0.113.53"))
    assert "redirect to :15099" in text and "ip daddr 203.0.113.53 tcp dport 53 return" in text
    args = _parser().parse_args(
        ["egress", "rules", "--sandbox-cidr", "10.0.0.0/8", "--port", "9000", "--resolver", "198.51.100.53:5353"]
    )
    text = rules_text(args, EgressConfig())
    assert "redirect to :9000" in text and "198.51.100.53" in text and "th dport 5353" in text
    assert "redirect to :15001" in rules_text(
        _parser().parse_args(["egress", "rules", "--sandbox-cidr", "10.0.0.0/8"]), EgressConfig()
    )


def test_network_lists_given_replace_and_no_flags_empty() -> None:
    args = _parser().parse_args(
        [
            "sandbox",
            "network",
            "box",
            "--no-internet",
            "--allow-out",
            "*.Example.com",
            "--allow-out",
            "192.0.2.0/24",
            "--no-deny-out",
        ]
    )
    assert policy_changes(args) == {
        "internet_access": False,
        "allow_out": ("*.example.com", "192.0.2.0/24"),
        "deny_out": (),
    }
    assert policy_changes(_parser().parse_args(["sandbox", "network", "box", "--internet"])) == {
        "internet_access": True
    }


def test_network_with_nothing_or_bad_entries_is_an_error() -> None:
    with pytest.raises(EdgeError, match="nothing to change"):
        policy_changes(_parser().parse_args(["sandbox", "network", "box"]))
    with pytest.raises(ValidationError):
        policy_changes(_parser().parse_args(["sandbox", "network", "box", "--deny-out", "192.0.2.1/24"]))


def test_add_flags_leave_unnamed_fields_out() -> None:
    args = _parser().parse_args(["sandbox", "add", "--deny-out", "blocked.example.org"])
    assert policy_changes(args, require=False) == {"deny_out": ("blocked.example.org",)}
    assert policy_changes(_parser().parse_args(["sandbox", "add"]), require=False) == {}
