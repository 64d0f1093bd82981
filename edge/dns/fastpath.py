"""The hot path: wildcard A/AAAA answers from wire templates built once per zone load. Pure.

Nearly every query edge sees is `A` or `AAAA` for `<port>-<sandbox>.<domain>`, a name covered by the
zone's `*.<domain>` wildcard. Its reply differs from the query only in ways known in advance, so
`FastPath.build(zones)` precompiles, per zone and type, the answer records (owner = a compression
pointer to the question at offset 12, so the question's letter case is kept, RFC 4592 / 0x20) and
the ten header bytes after the ID for each combination of the query's RD and CD bits, and the OPT
record with and without DO. A reply is then `ID + header + question (copied) + answers [+ OPT]`.

`FastPath.answer(data)` returns `(reply, rrl_key, None)` like edge.dns.answer.answer, or None for
anything it is not sure of, which then goes the slow way (edge.dns.answer): other types, names that
are not covered by the apex wildcard (the label just under the apex is an existing name), compression
in the question, names over 255 bytes, EDNS versions above 0, trailing bytes, replies that would not
fit in 512 bytes. Both paths give the same bytes for the same query (tests/dns/test_fastpath.py).

RFC 4592 for the wildcard test: a name is covered by `*.<apex>` exactly when its closest encloser is
the apex, that is when the label just under the apex is not an existing name (if it does not exist,
nothing below it does either).
"""

from __future__ import annotations

import struct

from dnslib import QTYPE

from edge.dns.answer import AA, CD, PLAIN_UDP_SIZE, QR, RD
from edge.dns.zone import Key, Zone, Zones

_A = b"\x00\x01"
_AAAA = b"\x00\x1c"
_IN = b"\x00\x01"


class _Compiled:
    """One zone's templates."""

    __slots__ = ("apex_wire", "apex_len", "shadowed", "by_type")

    def __init__(self, apex_wire: bytes, shadowed: frozenset[bytes], by_type: dict) -> None:
        self.apex_wire = apex_wire
        self.apex_len = len(apex_wire)
        self.shadowed = shadowed
        # by_type[qtype bytes] = (heads_plain[4], heads_edns[4], answers, room_plain, room_edns, key)
        self.by_type = by_type


def _wire(key: Key) -> bytes:
    return b"".join(bytes([len(label)]) + label for label in key) + b"\x00"


def _compile(zone: Zone) -> _Compiled:
    """A zone's templates; none (an empty table) when it has no `*.<apex>` A/AAAA. Such a zone is still
    listed, so that its names are never answered from the templates of a parent zone."""
    star = (b"*",) + zone.key
    node = zone.nodes.get(star) or {}
    by_type = {}
    if QTYPE.CNAME in node:
        node = {}
    for qtype, code in ((QTYPE.A, _A), (QTYPE.AAAA, _AAAA)):
        rrset = node.get(qtype)
        if not rrset:
            continue
        answers = b"".join(
            b"\xc0\x0c" + struct.pack("!HHIH", rr.rtype, rr.rclass, rr.ttl, len(rr.rdata.data)) + bytes(rr.rdata.data)
            for rr in rrset
        )
        heads_plain, heads_edns = [], []
        for bits in range(4):
            flags = QR | AA | (RD if bits & 1 else 0) | (CD if bits & 2 else 0)
            heads_plain.append(struct.pack("!HHHHH", flags, 1, len(rrset), 0, 0))
            heads_edns.append(struct.pack("!HHHHH", flags, 1, len(rrset), 0, 1))
        # The question may take what is left of 512 bytes (the smallest UDP limit) after the header,
        # the answers and the OPT record; longer questions go the slow way, which truncates properly.
        room_plain = PLAIN_UDP_SIZE - 12 - len(answers)
        room_edns = room_plain - 11
        by_type[code] = (heads_plain, heads_edns, answers, room_plain, room_edns, (star, qtype))
    shadowed = frozenset(key[0] for key in zone.names if len(key) == len(zone.key) + 1)
    return _Compiled(_wire(zone.key), shadowed, by_type)


class FastPath:
    """Templates for all zones; `answer(data)` is the hot path."""

    def __init__(self, compiled: list[_Compiled], edns_size: int) -> None:
        self.compiled = compiled
        size = struct.pack("!H", edns_size)
        # The OPT record of a reply: root owner, type 41, our payload size, TTL 0 (or DO), no options.
        self.opt = (
            b"\x00\x00\x29" + size + b"\x00\x00\x00\x00\x00\x00",
            b"\x00\x00\x29" + size + b"\x00\x00\x80\x00\x00\x00",
        )

    @classmethod
    def build(cls, zones: Zones, edns_size: int = 1232) -> FastPath:
        return cls([_compile(z) for z in zones], edns_size)  # longest apex first: sub-zones win

    def answer(self, data: bytes):
        n = len(data)
        # QR=0 and opcode QUERY (byte 2, top five bits), QDCOUNT=1, ANCOUNT=NSCOUNT=0, ARCOUNT 0 or 1.
        if n < 17 or data[2] & 0xF8 or data[4:10] != b"\x00\x01\x00\x00\x00\x00" or data[10]:
            return None
        # Walk the question's labels to its end.
        i = 12
        while True:
            if i >= n:
                return None
            length = data[i]
            if not length:
                break
            if length > 63:  # a compression pointer or an extended label type: not in a plain query
                return None
            i += length + 1
            if i > 266:  # a name over 255 bytes (RFC 1035 2.3.4): the slow way refuses it
                return None
        qend = i + 5
        if qend > n or data[i + 3 : qend] != _IN:
            return None
        name_end = i + 1
        for c in self.compiled:
            start = name_end - c.apex_len
            if start <= 12 or data[start:name_end].lower() != c.apex_wire:
                continue
            entry = c.by_type.get(data[i + 1 : i + 3])
            if entry is None:
                return None
            # `start` must be a label boundary, and the label just before it is the one under the apex.
            under = 12
            j = 12
            while j < start:
                under = j
                j += data[j] + 1
            if j != start or data[under + 1 : start].lower() in c.shadowed:
                return None
            bits = (data[2] & 1) | ((data[3] & 0x10) >> 3)
            if data[11] == 0:
                if qend != n or qend - 12 > entry[3]:
                    return None
                return data[:2] + entry[0][bits] + data[12:qend] + entry[2], entry[5], None
            # EDNS: exactly one OPT owned by the root, version 0, its options fitting its RDLENGTH.
            if (
                data[qend : qend + 3] != b"\x00\x00\x29"
                or qend + 11 > n
                or data[qend + 6]
                or qend + 11 + ((data[qend + 9] << 8) | data[qend + 10]) != n
                or qend - 12 > entry[4]
            ):
                return None
            return (
                data[:2] + entry[1][bits] + data[12:qend] + entry[2] + self.opt[data[qend + 7] >> 7],
                entry[5],
                None,
            )
        return None
