"""The command-line parts of the egress router, for edge/cli.py to mount. No I/O but printing.

    edge egress rules --sandbox-cidr CIDR [--sandbox-cidr CIDR]... [--exclude CIDR]... [--port N]
                      [--resolver ADDR[:PORT]] [--table NAME] [--config FILE]
    edge sandbox add ID --address IP [--no-internet] [--allow-out X]... [--deny-out X]...
    edge sandbox network ID [--allow-out X]... [--deny-out X]... [--no-allow-out] [--no-deny-out]
                            [--internet | --no-internet] [--json]

`add_rules_parser(sub)` adds `rules` to an `egress` subparsers group and `rules_text(args, egress)`
makes its output; `add_policy_flags(parser)` adds the policy flags to `sandbox add` and
`add_network_parser(sandbox_sub)` the `network` subcommand, whose changes `policy_changes(args)`
returns validated, as a dict of the Sandbox fields to change (for ops.update_sandbox).
"""

from __future__ import annotations

import argparse

from edge.egress.config import EgressConfig, parse_resolver
from edge.egress.nft import ruleset
from edge.egress.policy import validate_list
from edge.errors import EdgeError

DEFAULT_PORT = 15001


def add_rules_parser(egress_sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    rules = egress_sub.add_parser(
        "rules", help="print the nftables ruleset that redirects sandboxes' outbound TCP to the egress listener"
    )
    rules.add_argument(
        "--sandbox-cidr",
        action="append",
        required=True,
        metavar="CIDR",
        help="a network of sandbox addresses; repeat for several (IPv4 and IPv6)",
    )
    rules.add_argument(
        "--exclude",
        action="append",
        default=[],
        metavar="CIDR",
        help="destinations left alone (not redirected, not dropped); repeat for several",
    )
    rules.add_argument(
        "--port",
        type=int,
        metavar="N",
        help=f"the egress listener's port (default: egress.listen's, else {DEFAULT_PORT})",
    )
    rules.add_argument(
        "--resolver",
        metavar="ADDR[:PORT]",
        help="the DNS server sandboxes may ask (default: egress.resolver; none: any)",
    )
    rules.add_argument("--table", default="edge_egress", help="the nftables table (default edge_egress)")
    rules.add_argument("--config", metavar="FILE", help="TOML config file (env EDGE_CONFIG)")
    return rules


def rules_text(args: argparse.Namespace, egress: EgressConfig) -> str:
    """The ruleset for the parsed `egress rules` flags, config values filling what the flags leave out."""
    port = args.port or (egress.listen.port if egress.listen is not None else 0) or DEFAULT_PORT
    resolver = parse_resolver(args.resolver if args.resolver is not None else egress.resolver)
    return ruleset(args.sandbox_cidr, port, exclude=args.exclude, resolver=resolver, table=args.table)


def add_policy_flags(parser: argparse.ArgumentParser) -> None:
    """`--no-internet`, `--allow-out X`..., `--deny-out X`... (for `sandbox add`)."""
    parser.add_argument(
        "--no-internet",
        dest="internet_access",
        action="store_false",
        default=None,
        help="deny every destination but those in --allow-out",
    )
    parser.add_argument(
        "--allow-out",
        action="append",
        metavar="X",
        help="an IP, CIDR, domain or *.domain the sandbox may reach (wins over --deny-out)",
    )
    parser.add_argument(
        "--deny-out", action="append", metavar="X", help="an IP, CIDR, domain or *.domain the sandbox may not reach"
    )


def add_network_parser(sandbox_sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    network = sandbox_sub.add_parser(
        "network", help="change a sandbox's outbound policy; each list given replaces that list"
    )
    network.add_argument("id")
    add_policy_flags(network)
    network.add_argument("--internet", dest="internet_access", action="store_true", help="internet access on")
    network.add_argument("--no-allow-out", action="store_true", help="empty the allow list")
    network.add_argument("--no-deny-out", action="store_true", help="empty the deny list")
    network.add_argument("--json", action="store_true")
    return network


def policy_changes(args: argparse.Namespace, *, require: bool = True) -> dict[str, object]:
    """The policy fields the flags name, validated (`internet_access`, `allow_out`, `deny_out`)."""
    changes: dict[str, object] = {}
    if getattr(args, "internet_access", None) is not None:
        changes["internet_access"] = args.internet_access
    for field in ("allow_out", "deny_out"):
        given = getattr(args, field, None)
        if getattr(args, f"no_{field}", False):
            if given:
                raise EdgeError(f"--{field.replace('_', '-')} and --no-{field.replace('_', '-')} together")
            changes[field] = ()
        elif given is not None:
            changes[field] = validate_list(field, given)
    if require and not changes:
        raise EdgeError(
            "network: nothing to change; name at least one of --internet, --no-internet,"
            " --allow-out, --deny-out, --no-allow-out, --no-deny-out"
        )
    return changes
