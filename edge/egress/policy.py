"""A sandbox's outbound policy, and the one decision function. Pure: records and values, no I/O.

The policy is E2B's (its "Internet access" page and its orchestrator's tcpfirewall):

  - `internet_access` (default true); false is the same as denying `0.0.0.0/0` and `::/0`.
  - `allow_out` and `deny_out`: IPs, CIDRs, and domains with an optional leading `*.`.
  - The order of the checks, first match deciding: allowed domains, allowed CIDRs, denied domains,
    denied CIDRs, then allow. So allow wins over deny, and an empty policy allows everything.
  - A domain entry `example.com` matches exactly that name; `*.example.com` matches its subdomains
    (`a.example.com`, `a.b.example.com`) and not `example.com` itself. List both for both.

Names exist only on ports 80 (the request's Host) and 443 (the ClientHello's SNI); elsewhere, or when
the client sent none, only the CIDR entries can match, against the address the sandbox dialled.

`decide()` returns a `Verdict`: allowed or not, the rule that decided (for the log line and the
refusal the sandbox sees), and `by_name`: the allowing rule was a domain, so edge dials the name
itself (resolved by its own resolver) and never the address the sandbox chose, which a sandbox could
otherwise pick to reach anything under an allowed name's cover.

`always_denied()` is the second gate, on every address edge is about to dial, whatever the policy
said: private, loopback, link-local (the cloud metadata service, 169.254.169.254), CGNAT and
unique-local ranges are never dialled unless the operator lists a range in `egress.allow_private`.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass

from edge.catalog.model import MAX_ENTRIES as MAX_ENTRIES
from edge.catalog.model import Policy as Policy
from edge.catalog.model import normalize_hostname as normalize_hostname
from edge.catalog.model import validate_entry as validate_entry
from edge.catalog.model import validate_list as validate_list
from edge.catalog.model import validate_policy as validate_policy

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_EVERYWHERE = (ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("::/0"))


def policy_of(sandbox: object) -> Policy:
    """The policy fields of a catalog record."""
    return Policy(
        bool(getattr(sandbox, "internet_access", True)),
        tuple(getattr(sandbox, "allow_out", ()) or ()),
        tuple(getattr(sandbox, "deny_out", ()) or ()),
    )


# --- compiled form and the decision --------------------------------------------------------------


class Rules:
    """One list, ready to match: exact names, wildcard suffixes, networks (most specific first)."""

    __slots__ = ("exact", "suffixes", "nets")

    def __init__(self, entries: Sequence[str], extra_nets: Sequence[tuple[IPNetwork, str]] = ()) -> None:
        self.exact: dict[str, str] = {}
        self.suffixes: dict[str, str] = {}  # "example.com" -> "*.example.com"
        nets: list[tuple[IPNetwork, str]] = list(extra_nets)
        for entry in entries:
            if entry.startswith("*."):
                self.suffixes[entry[2:]] = entry
            else:
                try:
                    nets.append((ipaddress.ip_network(entry), entry))
                except ValueError:
                    name = normalize_hostname(entry)
                    if name is not None:  # a record written before validation: unusable entries are skipped
                        self.exact[name] = entry
        nets.sort(key=lambda pair: -pair[0].prefixlen)
        self.nets = tuple(nets)

    @property
    def has_names(self) -> bool:
        return bool(self.exact or self.suffixes)

    def match_name(self, name: str) -> str | None:
        hit = self.exact.get(name)
        if hit is not None or not self.suffixes:
            return hit
        dot = name.find(".")
        while dot >= 0:  # a.b.example.com: try b.example.com, example.com, com
            hit = self.suffixes.get(name[dot + 1 :])
            if hit is not None:
                return hit
            dot = name.find(".", dot + 1)
        return None

    def match_ip(self, ip: IPAddress) -> str | None:
        for net, entry in self.nets:
            if ip.version == net.version and ip in net:
                return entry
        return None


@dataclass(frozen=True, slots=True)
class Verdict:
    allowed: bool
    #: What decided, for the log and the refusal: `allow_out *.example.com`, `deny_out 0.0.0.0/0`,
    #: `internet_access false`, `default`.
    rule: str
    #: Allowed by a domain entry: edge dials the name, not the address the sandbox chose.
    by_name: bool = False


class Compiled:
    """A policy ready for `decide`; made once per catalog record and kept while the record is."""

    __slots__ = ("allow", "deny", "needs_name")

    def __init__(self, policy: Policy) -> None:
        self.allow = Rules(policy.allow_out)
        offline = () if policy.internet_access else tuple((net, "internet_access false") for net in _EVERYWHERE)
        self.deny = Rules(policy.deny_out, offline)
        #: Whether the name (Host, SNI) can change the outcome: only when some entry is a domain.
        self.needs_name = self.allow.has_names or self.deny.has_names

    def decide(self, name: str | None, ip: IPAddress) -> Verdict:
        """Allowed domains, allowed CIDRs, denied domains, denied CIDRs, then allow."""
        if name is not None:
            hit = self.allow.match_name(name)
            if hit is not None:
                return Verdict(True, f"allow_out {hit}", True)
        hit = self.allow.match_ip(ip)
        if hit is not None:
            return Verdict(True, f"allow_out {hit}")
        if name is not None:
            hit = self.deny.match_name(name)
            if hit is not None:
                return Verdict(False, f"deny_out {hit}")
        hit = self.deny.match_ip(ip)
        if hit is not None:
            return Verdict(False, hit if hit == "internet_access false" else f"deny_out {hit}")
        return Verdict(True, "default")


def decide(policy: Policy, name: str | None, ip: IPAddress) -> Verdict:
    """The decision for one connection (compiles the policy; the server keeps compiled ones)."""
    return Compiled(policy).decide(name, ip)


# --- addresses edge never dials ---------------------------------------------------------------------

_ALWAYS_DENIED: tuple[tuple[IPNetwork, str], ...] = tuple(
    (ipaddress.ip_network(cidr), what)
    for cidr, what in (
        ("0.0.0.0/8", "this host"),
        ("10.0.0.0/8", "private"),
        ("100.64.0.0/10", "CGNAT"),
        ("127.0.0.0/8", "loopback"),
        ("169.254.0.0/16", "link-local"),
        ("172.16.0.0/12", "private"),
        ("192.168.0.0/16", "private"),
        ("224.0.0.0/4", "multicast"),
        ("240.0.0.0/4", "reserved"),
        ("::/128", "this host"),
        ("::1/128", "loopback"),
        ("fe80::/10", "link-local"),
        ("fc00::/7", "unique-local"),
        ("ff00::/8", "multicast"),
    )
)
_MAPPED = ipaddress.ip_network("::ffff:0:0/96")
_COMPATIBLE = ipaddress.ip_network("::/96")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


def always_denied(ip: IPAddress, exceptions: Sequence[IPNetwork] = ()) -> str | None:
    """`always_denied private 10.0.0.0/8` when edge must not dial `ip`, else None.

    IPv6 forms that carry an IPv4 address (mapped ::ffff:a.b.c.d, compatible ::a.b.c.d, NAT64
    64:ff9b::a.b.c.d) are judged as that IPv4 address too: ::ffff:169.254.169.254 is the metadata
    service to a dual-stack socket."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.scope_id:
            return "always_denied zone-scoped"
        for carrier in (_MAPPED, _COMPATIBLE, _NAT64):
            if ip in carrier and int(ip) > 1:
                inner = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
                if any(inner in net for net in exceptions):
                    return None
                why = always_denied(inner)
                if why is not None:
                    return why
                if carrier is _COMPATIBLE:
                    return "always_denied ipv4-compatible ::/96"
    for net, what in _ALWAYS_DENIED:
        if ip.version == net.version and ip in net:
            if any(ip.version == ex.version and ip in ex for ex in exceptions):
                return None
            return f"always_denied {what} {net}"
    return None
