"""ACME DNS-01 challenge values as TXT records in the zones. Pure: no sockets, no clock (the caller
passes the time).

edge is authoritative for its domains, so a certificate authority that checks `_acme-challenge.<name>`
asks edge itself: no DNS provider, no propagation wait. The values live in the catalog (written by
edge/tls/acme.py and the admin API's POST /present, read into the snapshot), and the DNS server
merges them into the zones it serves whenever they change: `with_challenges(zones, challenges, now)`
returns new zones in which each `_acme-challenge` name holds its TXT values, and the time the first
of them expires, when the server merges again without it.

Merging into the zones, not answering on the side, keeps every rule of edge/dns/zone.py: a name that
holds values exists, so it shadows the wildcard (RFC 4592: an A query for it is NODATA, not the
wildcard's address); names below it are NXDOMAIN; a type it lacks is NODATA with the SOA; and the
wildcard templates of edge/dns/fastpath.py are rebuilt with it marked as an explicit name, so the hot
path for every other name is what it was. Several values at one name form one RRset (an order for
`D` and `*.D` has two at `_acme-challenge.D`), all with the same low TTL (RFC 2181 section 5.2: one
TTL per RRset), so a resolver never caches a value for long.

A name already holding a CNAME in the zone file (a challenge delegated elsewhere) is left alone: TXT
beside a CNAME is not allowed (RFC 1034 section 3.6.2).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace

from dnslib import CLASS, QTYPE, RR, TXT, DNSLabel

from edge.catalog.model import Challenge
from edge.dns.zone import Key, Zone, Zones

#: Seconds resolvers may cache a challenge value (and so the RRset it is part of).
CHALLENGE_TTL = 10


def with_challenges(zones: Zones, challenges: Iterable[Challenge], now: float) -> tuple[Zones, float | None]:
    """`zones` plus a TXT record per challenge not expired at `now`; and when the first of those
    expires (None when none was added). Names outside every zone are ignored."""
    wanted: dict[Key, dict[Key, list[str]]] = {}  # zone key -> name -> values
    first: float | None = None
    for challenge in challenges:
        if challenge.expires_at <= now:
            continue
        key = tuple(label.encode() for label in challenge.fqdn.split("."))
        zone = zones.find(key)
        if zone is None or key == zone.key:
            continue
        wanted.setdefault(zone.key, {}).setdefault(key, []).append(challenge.value)
        first = challenge.expires_at if first is None else min(first, challenge.expires_at)
    if not wanted:
        return zones, None
    return Zones(_with_txt(zone, wanted[zone.key]) if zone.key in wanted else zone for zone in zones), first


def _with_txt(zone: Zone, values: dict[Key, list[str]]) -> Zone:
    nodes = dict(zone.nodes)
    names = set(zone.names)
    for key, texts in values.items():
        node = dict(nodes.get(key, {}))
        if QTYPE.CNAME in node:
            continue
        owner = DNSLabel(list(key))
        # The zone file's own TXT records at the name, if any, join the RRset with its TTL.
        rrset = [RR(owner, QTYPE.TXT, CLASS.IN, CHALLENGE_TTL, rr.rdata) for rr in node.get(QTYPE.TXT, [])]
        rrset += [RR(owner, QTYPE.TXT, CLASS.IN, CHALLENGE_TTL, TXT(text.encode())) for text in sorted(set(texts))]
        node[QTYPE.TXT] = rrset
        nodes[key] = node
        # The name and its ancestors up to the apex exist now (RFC 4592 section 2.2.2).
        for i in range(len(key) - len(zone.key) + 1):
            names.add(key[i:])
    return replace(zone, nodes=nodes, names=frozenset(names))
