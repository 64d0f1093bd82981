"""The nftables ruleset that sends a sandbox network's outbound traffic through edge. Pure.

`edge egress rules --sandbox-cidr CIDR [--exclude CIDR]...` prints `ruleset(...)`; `nft -f` applies
it on the host that runs edge, the one the sandboxes' packets are routed through (where a Docker
bridge or the Firecracker taps live). What it does, for packets from the sandbox networks:

  - TCP to anywhere is REDIRECTed (nat prerouting) to edge's egress listener port. REDIRECT
    rewrites the destination to the primary address of the interface the packet came in on (the
    bridge's or tap's own address), so edge listens on `0.0.0.0:PORT` (or on that address), in the
    host's namespace; conntrack keeps the original destination, which edge reads with
    SO_ORIGINAL_DST. The destinations in `--exclude` and TCP DNS to the resolver are not redirected.
  - DNS (UDP and TCP port 53) to the resolver, and anything to an excluded destination, passes.
  - Every other forwarded packet from a sandbox is dropped: UDP (QUIC included: browsers fall back
    to TCP, where edge decides), ICMP, other protocols. UDP to the host itself is dropped too, but
    DNS to the resolver when the resolver is the host.

The table is replaced whole on every apply (`table ...; delete table ...;` then its definition, one
transaction), so applying the output again after a change never duplicates rules. Remove it with
`nft delete table inet edge_egress`.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence

from edge.errors import ValidationError

_TABLE = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,31}\Z")


def _networks(field: str, cidrs: Sequence[str]) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    out = []
    for cidr in cidrs:
        try:
            out.append(ipaddress.ip_network(cidr))
        except ValueError as exc:
            raise ValidationError(field, f"{cidr!r} is not a CIDR ({exc})") from None
    return out


def ruleset(
    sandbox_cidrs: Sequence[str],
    port: int,
    *,
    exclude: Sequence[str] = (),
    resolver: tuple[str, int] | None = None,
    table: str = "edge_egress",
) -> str:
    """The ruleset text for `nft -f`. `resolver`: (address, port) of the DNS server sandboxes may
    ask (edge's `egress.resolver`); None: DNS to any address passes (no way to know the resolver)."""
    if not sandbox_cidrs:
        raise ValidationError("sandbox_cidr", "give at least one sandbox network")
    if not 1 <= port <= 65535:
        raise ValidationError("port", f"{port!r} is not a port number from 1 to 65535")
    if not _TABLE.match(table):
        raise ValidationError("table", f"{table!r} is not an nftables table name")
    sandboxes = _networks("sandbox_cidr", sandbox_cidrs)
    excluded = _networks("exclude", exclude)
    dns_ip = ipaddress.ip_address(resolver[0]) if resolver else None
    dns_port = resolver[1] if resolver else 53

    lines = [
        "#!/usr/sbin/nft -f",
        f"# edge egress: outbound TCP of {', '.join(map(str, sandboxes))} goes to edge's egress listener on port"
        f" {port};",
        "# DNS "
        + (f"to {dns_ip} port {dns_port}" if dns_ip else "(port 53) to any address")
        + " and excluded destinations pass; other forwarded traffic from sandboxes is dropped.",
        f"# Made by `edge egress rules`. Apply: nft -f FILE. Remove: nft delete table inet {table}",
        f"table inet {table}",
        f"delete table inet {table}",
        f"table inet {table} {{",
    ]
    families = []
    for version, kw, addr_type in ((4, "ip", "ipv4_addr"), (6, "ip6", "ipv6_addr")):
        nets = [n for n in sandboxes if n.version == version]
        if not nets:
            continue
        direct = [n for n in excluded if n.version == version]
        families.append((version, kw, bool(direct)))
        lines += _set(f"sandboxes_v{version}", addr_type, nets)
        if direct:
            lines += _set(f"direct_v{version}", addr_type, direct)

    pre, fwd, inp = [], [], []
    for version, kw, has_direct in families:
        src = f"{kw} saddr @sandboxes_v{version}"
        dns = ""
        if dns_ip is not None and dns_ip.version == version:
            dns = f"{kw} daddr {dns_ip} "
        if has_direct:
            pre.append(f"{src} {kw} daddr @direct_v{version} return")
            fwd.append(f"{src} {kw} daddr @direct_v{version} accept")
        if dns or dns_ip is None:
            pre.append(f"{src} {dns}tcp dport {dns_port} return")
            fwd.append(f"{src} {dns}meta l4proto {{ tcp, udp }} th dport {dns_port} accept")
            inp.append(f"{src} {dns}udp dport {dns_port} accept")
        pre.append(f"{src} meta l4proto tcp redirect to :{port}")
        fwd.append(f"{src} drop")
        inp.append(f"{src} meta l4proto udp drop")
    lines += _chain("prerouting", "type nat hook prerouting priority dstnat; policy accept;", pre)
    lines += _chain("forward", "type filter hook forward priority filter; policy accept;", fwd)
    lines += _chain("input", "type filter hook input priority filter; policy accept;", inp)
    lines.append("}")
    return "\n".join(lines) + "\n"


def _set(name: str, addr_type: str, nets: Sequence[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> list[str]:
    return [
        f"\tset {name} {{",
        f"\t\ttype {addr_type}",
        "\t\tflags interval",
        f"\t\telements = {{ {', '.join(map(str, nets))} }}",
        "\t}",
    ]


def _chain(name: str, hook: str, rules: Sequence[str]) -> list[str]:
    return [f"\tchain {name} {{", f"\t\t{hook}", *(f"\t\t{rule}" for rule in rules), "\t}"]
