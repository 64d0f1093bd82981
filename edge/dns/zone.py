"""Zones: immutable records and the RFC 4592 lookup. Pure (no sockets, no files).

A `Zone` keeps its records in a dict keyed by the owner's labels in lower case, and the set of all
names that *exist* in the sense of RFC 4592 section 2.2.2: owners and all their ancestors up to the
apex (empty non-terminals). `lookup` follows RFC 4592 section 3.3.1: an existing name answers for
itself; otherwise the closest encloser is the longest existing ancestor and only `*.<closest
encloser>` can synthesize an answer. So `*` covers one or more labels but never the apex, and an
explicit name (`ns1`, `_acme-challenge.x`) shadows the wildcard for itself and every name below it.

Zones are built from BIND files by edge.dns.zonefile.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from functools import cached_property

from dnslib import QTYPE, RR, DNSLabel

Key = tuple[bytes, ...]  # a name's labels in lower case, leftmost first

CNAME_CHAIN_MAX = 8


def key_of(name: DNSLabel) -> Key:
    return tuple(label.lower() for label in name.label)


# --- the zone ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Zone:
    """One zone's records. `nodes[key][qtype]` is an RRset; `names` holds every existing name."""

    apex: DNSLabel
    soa: RR
    nodes: dict[Key, dict[int, list[RR]]]
    names: frozenset[Key]
    source: str = ""

    @property
    def key(self) -> Key:
        return key_of(self.apex)

    @cached_property
    def depth(self) -> int:
        """Labels of the deepest existing name (the apex's included)."""
        return max((len(key) for key in self.names), default=len(self.key))

    @property
    def serial(self) -> int:
        return int(self.soa.rdata.times[0])

    @cached_property
    def records(self) -> int:
        """How many records the zone holds (every record of every RRset)."""
        return sum(len(rrset) for node in self.nodes.values() for rrset in node.values())

    @property
    def negative_ttl(self) -> int:
        # RFC 2308 section 5: the negative TTL is the lesser of the SOA's TTL and its MINIMUM field.
        return int(min(self.soa.ttl, self.soa.rdata.times[4]))


@dataclass(frozen=True)
class Lookup:
    """The outcome of a lookup in one zone.

    `negative` is true when the last name of the (CNAME) chain has no data of the type: the SOA then
    goes in the authority section (RFC 2308), with NXDOMAIN when that name does not exist at all
    (RFC 6604: the rcode speaks of the last name). `source` is the node that answered the question's
    name (the `*` node for a synthesized answer): the rate-limiting key, so that random labels under
    a wildcard share one budget."""

    answers: list[RR] = field(default_factory=list)
    negative: bool = False
    nxdomain: bool = False
    source: Key = ()


def lookup(zone: Zone, qname: DNSLabel, qtype: int, qkey: Key | None = None) -> Lookup:
    """Answer `qname`/`qtype` from `zone` (the caller checked that qname is in it); `qkey` is
    key_of(qname) when the caller has it already."""
    answers: list[RR] = []
    name = qname
    seen: set[Key] = set()
    first: Key | None = None
    key = key_of(name) if qkey is None else qkey
    for _ in range(CNAME_CHAIN_MAX):
        seen.add(key)
        source = _source_of(zone, key)
        if first is None:
            first = source if source is not None else zone.key
        if source is None:  # RFC 1034 4.3.2 step 3c; RFC 4592 3.3.1: no such name and no wildcard for it
            return Lookup(answers, negative=True, nxdomain=True, source=first)
        node = zone.nodes.get(source, {})
        cname = node.get(QTYPE.CNAME)
        if cname and qtype != QTYPE.CNAME:
            answers.extend(_owned(cname, name))
            target = cname[0].rdata.label
            tkey = key_of(target)
            n = len(zone.key)
            # Follow the chain only inside this zone; a resolver chases the rest.
            if tkey in seen or len(tkey) < n or tkey[len(tkey) - n :] != zone.key:
                return Lookup(answers, source=first)
            name, key = target, tkey
            continue
        rrset = node.get(qtype)
        if qtype == QTYPE.ANY and node:
            # RFC 8482 section 4.2: answer ANY with one RRset of the name rather than all of them.
            rrset = node[min(node)]
        if not rrset:
            return Lookup(answers, negative=True, source=first)
        answers.extend(_owned(rrset, name))
        return Lookup(answers, source=first)
    return Lookup(answers, source=first or ())


def _source_of(zone: Zone, key: Key) -> Key | None:
    """The node that answers for `key`: itself if it exists, else `*.<closest encloser>` if that exists."""
    if key in zone.names:
        return key
    # The closest encloser, walking down from the apex: `names` holds every ancestor of every name,
    # so the first missing one ends the walk (a few steps, not one per label of a long name).
    encloser = zone.key
    for i in range(len(key) - len(zone.key) - 1, 0, -1):
        below = key[i:]
        if below not in zone.names:
            break
        encloser = below
    wildcard = (b"*",) + encloser
    return wildcard if wildcard in zone.nodes else None


def _owned(rrset: list[RR], owner: DNSLabel) -> list[RR]:
    # The owner is the question's name as sent, letter case included (0x20 randomisation, RFC 4592 3.3.1).
    return [RR(owner, rr.rtype, rr.rclass, rr.ttl, rr.rdata) for rr in rrset]


class Zones:
    """The zones being served, found by the longest matching apex."""

    def __init__(self, zones: Iterable[Zone] = ()) -> None:
        self.by_key: dict[Key, Zone] = {z.key: z for z in zones}
        self._longest_first = sorted(self.by_key.values(), key=lambda z: -len(z.key))

    def __iter__(self) -> Iterator[Zone]:
        return iter(self._longest_first)

    def __len__(self) -> int:
        return len(self.by_key)

    def find(self, key: Key) -> Zone | None:
        for zone in self._longest_first:
            n = len(zone.key)
            if len(key) >= n and key[len(key) - n :] == zone.key:
                return zone
        return None
