"""The fleet's edges as the answer for sandbox names. Pure: zones and addresses in, zones out.

With several edges sharing a Redis catalog (edge/catalog/fleet.py), every edge's DNS answers
`<port>-<id>.<domain>` with the addresses of the edges that are up and serving, not with the fixed
address of the zone file: `with_fleet(zones, addresses, ttl)` returns zones whose wildcard
(`*.<domain>`) A and AAAA RRsets are those addresses (IPv4 in A, IPv6 in AAAA; a family the fleet
has none of is left out, so its query is NODATA rather than an edge that may be gone), with a
short TTL so resolvers follow the fleet's changes. Everything else in the zones stays: explicit names
(ns1, `_acme-challenge`), the SOA and NS, a zone whose wildcard is a CNAME, a zone with no wildcard.

The templates of edge/dns/fastpath.py are rebuilt from the result like on any zone load, so the hot
path is unchanged. No addresses (the fleet not known yet): the zones as they are.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import replace

from dnslib import AAAA, CLASS, QTYPE, RR, A, DNSLabel

from edge.dns.zone import Zone, Zones


def with_fleet(zones: Zones, addresses: Sequence[str], ttl: int) -> Zones:
    """`zones` with every wildcard's A/AAAA records replaced by `addresses` (TTL `ttl`)."""
    if not addresses:
        return zones
    v4 = [a for a in addresses if ipaddress.ip_address(a).version == 4]
    v6 = [a for a in addresses if ipaddress.ip_address(a).version == 6]
    return Zones(_with_addresses(zone, v4, v6, ttl) for zone in zones)


def _with_addresses(zone: Zone, v4: list[str], v6: list[str], ttl: int) -> Zone:
    star = (b"*",) + zone.key
    node = zone.nodes.get(star)
    if node is None or QTYPE.CNAME in node:
        return zone
    owner = DNSLabel(list(star))
    new = {qtype: rrset for qtype, rrset in node.items() if qtype not in (QTYPE.A, QTYPE.AAAA)}
    if v4:
        new[QTYPE.A] = [RR(owner, QTYPE.A, CLASS.IN, ttl, A(a)) for a in v4]
    if v6:
        new[QTYPE.AAAA] = [RR(owner, QTYPE.AAAA, CLASS.IN, ttl, AAAA(a)) for a in v6]
    return replace(zone, nodes={**zone.nodes, star: new})
