"""Answering: one DNS message in, one reply out (or nothing). Pure: no sockets, no clock, no logging.

`answer(data, zones, tcp=..., edns_size=...)` returns `(reply, rrl_key, problem)`:
  - `reply`: the wire bytes to send, or None to send nothing (too short for a header, or a response);
  - `rrl_key`: what response rate limiting counts this reply against (see edge.dns.rrl);
  - `problem`: a short reason when the packet was malformed, for the server's rate-limited warning.

The order of checks follows what a resolver needs to learn, most basic first: can the message be
parsed at all (FORMERR, or NOTIMP for an opcode we do not know), is its EDNS usable (FORMERR,
BADVERS), is it a query we serve (FORMERR for QDCOUNT != 1, REFUSED out of zone or class), then the
zone lookup (NOERROR, NODATA, NXDOMAIN). dnslib is the codec; it raises many exception types on
hostile input (RecursionError on pointer loops, UnicodeDecodeError, DNSLabelError, struct.error...),
and every one of them becomes FORMERR here: `answer` never raises.

The wildcard A/AAAA hot path does not come here: edge.dns.fastpath answers it from templates and
produces the same bytes (tests/dns/test_fastpath.py checks that).
"""

from __future__ import annotations

import struct

from dnslib import CLASS, QTYPE, RR, DNSHeader, DNSLabel, DNSQuestion, DNSRecord
from dnslib.label import DNSBuffer

from edge.dns.zone import Zones, key_of, lookup

# Header flag bits (RFC 1035 section 4.1.1, RFC 4035 for AD/CD).
QR, AA, TC, RD, RA, AD, CD = 0x8000, 0x0400, 0x0200, 0x0100, 0x0080, 0x0020, 0x0010
NOERROR, FORMERR, SERVFAIL, NXDOMAIN, NOTIMP, REFUSED = 0, 1, 2, 3, 4, 5
BADVERS = 16  # RFC 6891 section 6.1.3: an extended rcode, its upper 8 bits go in the OPT record
OPT_TYPE = 41
DO_BIT = 0x8000  # in the OPT TTL field (RFC 3225)

#: The RRL key of every error reply (FORMERR, REFUSED, NOTIMP, BADVERS): one budget per client prefix.
ERROR_KEY = ("error",)
#: Largest UDP reply without EDNS (RFC 1035 section 4.2.1).
PLAIN_UDP_SIZE = 512


class Malformed(Exception):
    """The message cannot be parsed as its header says."""


def answer(data: bytes, zones: Zones, *, tcp: bool = False, edns_size: int = 1232):
    """The reply to `data` as `(reply | None, rrl_key, problem | None)`. Never raises."""
    if len(data) < 12:
        return None, ERROR_KEY, "shorter than a DNS header"
    if data[2] & 0x80:
        # A response (QR=1): answering it could start a loop between two servers. Drop, silently.
        return None, ERROR_KEY, None
    try:
        return _answer(data, zones, tcp, edns_size)
    except Exception as exc:  # the last guard: whatever broke, the client gets FORMERR, we keep serving
        return _bare(data, FORMERR), ERROR_KEY, f"{type(exc).__name__}: {_short(exc)}"


def _answer(data: bytes, zones: Zones, tcp: bool, edns_size: int):
    ident, flags = struct.unpack_from("!HH", data)
    opcode = (flags >> 11) & 0xF
    try:
        questions, additional = _parse(data)
    except Exception as exc:
        if opcode:
            return _bare(data, NOTIMP), ERROR_KEY, None
        return _bare(data, FORMERR), ERROR_KEY, f"{type(exc).__name__}: {_short(exc)}"

    opts = [rr for rr in additional if rr.rtype == OPT_TYPE]
    opt = opts[0] if opts else None
    do = bool(opt.ttl & DO_BIT) if opt is not None else False
    reply = _Reply(ident, flags, questions, opt is not None, do, edns_size)

    # RFC 6891 section 6.1.1: more than one OPT, or an OPT not owned by the root, is FORMERR.
    if len(opts) > 1 or (opt is not None and opt.rname.label != ()):
        return reply.error(FORMERR, questions=[]), ERROR_KEY, "bad OPT record"
    # RFC 6891 section 6.1.3: a version we do not implement gets BADVERS (and our version, 0).
    if opt is not None and (opt.ttl >> 16) & 0xFF:
        return reply.error(BADVERS), ERROR_KEY, None
    if opcode != 0:  # RFC 1035 4.1.1: only QUERY is implemented here (no NOTIFY, UPDATE, IQUERY)
        return reply.error(NOTIMP), ERROR_KEY, None
    if len(questions) != 1:
        return reply.error(FORMERR), ERROR_KEY, f"{len(questions)} questions"
    q = questions[0]
    if q.qclass != CLASS.IN or q.qtype in (QTYPE.AXFR, QTYPE.IXFR):
        return reply.error(REFUSED), ERROR_KEY, None  # no other class, no zone transfers
    zone = zones.find(key_of(q.qname))
    if zone is None:
        return reply.error(REFUSED), ERROR_KEY, None  # not ours: we are not a resolver (RA is clear)

    found = lookup(zone, q.qname, q.qtype)
    authority = []
    if found.negative:
        # RFC 2308 section 3: the SOA goes in the authority section of NXDOMAIN and NODATA replies, its
        # TTL the lesser of the SOA's own TTL and its MINIMUM field.
        soa = zone.soa
        authority.append(RR(soa.rname, QTYPE.SOA, CLASS.IN, zone.negative_ttl, soa.rdata))
    rcode = NXDOMAIN if found.nxdomain else NOERROR
    key = (found.source, q.qtype) if not found.negative else (zone.key, rcode)
    wire = reply.build(rcode, found.answers, authority, aa=True)
    if tcp:
        limit = 65535
    elif opt is not None:
        limit = max(PLAIN_UDP_SIZE, min(opt.rclass, edns_size))
    else:
        limit = PLAIN_UDP_SIZE
    if len(wire) > limit:
        wire = truncate(wire)
    return wire, key, None


def _parse(data: bytes):
    """Questions and additional records; Malformed if the header's counts do not match the content."""
    buf = DNSBuffer(data)
    header = DNSHeader.parse(buf)
    questions = [DNSQuestion.parse(buf) for _ in range(header.q)]
    for _ in range(header.a + header.auth):
        RR.parse(buf)
    additional = [RR.parse(buf) for _ in range(header.ar)]
    if buf.remaining():
        raise Malformed(f"{buf.remaining()} bytes after the records the header announces")
    return questions, additional


class _Reply:
    """What every reply to one query shares: ID, copied flags, question, and the EDNS state."""

    def __init__(self, ident: int, flags: int, questions, edns: bool, do: bool, edns_size: int):
        self.ident = ident
        # RD and CD are copied from the query (RFC 1035 4.1.1, RFC 4035 3.2.2); RA stays clear, we do
        # not recurse; AD, Z and TC start clear. The opcode is echoed.
        self.flags = QR | (flags & (RD | CD)) | (flags & 0x7800)
        self.questions = questions
        self.edns = edns
        self.do = do
        self.edns_size = edns_size

    def _opt(self, rcode: int) -> RR:
        # RFC 6891 6.1.2-6.1.3: owner root, CLASS our payload size, TTL ext-rcode | version 0 | DO.
        # RFC 3225 section 3: the DO bit is copied into the reply.
        ttl = ((rcode >> 4) << 24) | (DO_BIT if self.do else 0)
        return RR(DNSLabel(()), OPT_TYPE, self.edns_size, ttl, [])

    def build(self, rcode: int, answers, authority, aa: bool, questions=None) -> bytes:
        flags = self.flags | (AA if aa else 0) | (rcode & 0xF)
        record = DNSRecord(
            DNSHeader(self.ident, flags),
            questions=list(self.questions if questions is None else questions),
            rr=answers,
            auth=authority,
            ar=[self._opt(rcode)] if self.edns else [],
        )
        return bytes(record.pack())

    def error(self, rcode: int, questions=None) -> bytes:
        return self.build(rcode, [], [], aa=False, questions=questions)


def _bare(data: bytes, rcode: int) -> bytes:
    """A header-only reply for a message we could not parse: its ID, opcode and RD, and the rcode."""
    ident, flags = struct.unpack_from("!HH", data)
    return struct.pack("!HHHHHH", ident, QR | (flags & (RD | 0x7800)) | rcode, 0, 0, 0, 0)


def truncate(wire: bytes) -> bytes:
    """RFC 1035 4.2.1 / RFC 6891 7: set TC and keep the header, the question and the OPT record.

    dnslib's own truncate drops the question and the OPT; resolvers need both (to match the reply and
    to learn our EDNS size). Works on our own replies only: one question at offset 12 (uncompressed),
    and, when ARCOUNT is 1, an 11-byte OPT record without options at the very end."""
    qdcount = wire[5]
    end = 12
    if qdcount:
        while wire[end]:
            end += wire[end] + 1
        end += 5
    arcount = wire[11]
    opt = wire[-11:] if arcount else b""
    flags = ((wire[2] << 8) | wire[3]) | TC
    return wire[:2] + struct.pack("!HHHHH", flags, qdcount, 0, 0, 1 if arcount else 0) + wire[12:end] + opt


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:120] if text else ""
