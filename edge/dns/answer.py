"""Answering: one DNS message in, one reply out (or nothing). Pure: no sockets, no clock, no logging.

`plan(data, zones, tcp=..., edns_size=...)` decides the reply and returns a `Plan`:
  - `key`: what response rate limiting counts this reply against (see edge.dns.rrl);
  - `problem`: a short reason when the packet was malformed, for the server's rate-limited warning;
  - `wire()`: the bytes to send, or None to send nothing (too short for a header, or a response);
  - `slip()`: the same reply truncated (TC=1, no records): what rate limiting sends instead.
An answer's records are packed by dnslib, the costly step, only when `wire()` is called, so the
server asks the rate limiter first and never packs an answer it drops. `answer(...)` is both steps in
one call and returns `(reply, rrl_key, problem)`.

Bounded work, whatever the message holds
----------------------------------------
A query is one question and at most one OPT record; nothing else in it means anything to us. So the
12-byte header is checked first: QDCOUNT other than 1, any answer or authority record, or more than
one additional record is refused at once (FORMERR; NOTIMP for another opcode). What is left is read
by `_read`, not by dnslib: one name without compression (in a question a pointer can only point
into the name itself: a loop or a trick), its type and class, then the fixed fields of the one
additional record; that record's RDATA (EDNS options, none of which we implement) is skipped, never
parsed. That is at most 255 bytes of labels and one record header, so a 4 KB UDP packet or a 64 KB
TCP message costs what a small query costs. dnslib, reading everything the header announced, took
~140 ms for a 4 KB packet of 638 compressed questions and ~2 ms for an OPT of 1,000 options.

Error replies are made by hand from the query's bytes: header, the question as sent, and our OPT
when the query had one. A message refused before it was read gets its header and, when it is a plain
name inside the message, its first question: never more bytes than it sent (no amplification).

The order of checks follows what a resolver needs to learn, most basic first: is the header a query
we can read (FORMERR, or NOTIMP for an opcode we do not know), is its EDNS usable (BADVERS), is it
a query we serve (REFUSED out of zone or class), then the zone lookup (NOERROR, NODATA, NXDOMAIN).
`plan` never raises: whatever breaks becomes FORMERR.

The wildcard A/AAAA hot path does not come here: edge.dns.fastpath answers it from templates and
produces the same bytes (tests/dns/test_fastpath.py checks that).
"""

from __future__ import annotations

import struct
from collections.abc import Hashable
from dataclasses import dataclass
from typing import NamedTuple

from dnslib import CLASS, QTYPE, RR, DNSLabel
from dnslib.label import DNSBuffer

from edge.dns.zone import Zones, lookup

# Header flag bits (RFC 1035 section 4.1.1, RFC 4035 for AD/CD).
QR, AA, TC, RD, RA, AD, CD = 0x8000, 0x0400, 0x0200, 0x0100, 0x0080, 0x0020, 0x0010
OPCODE = 0x7800
NOERROR, FORMERR, SERVFAIL, NXDOMAIN, NOTIMP, REFUSED = 0, 1, 2, 3, 4, 5
BADVERS = 16  # RFC 6891 section 6.1.3: an extended rcode, its upper 8 bits go in the OPT record
OPT_TYPE = 41
DO_BIT = 0x8000  # in the OPT TTL field (RFC 3225)

#: The RRL key of every error reply (FORMERR, REFUSED, NOTIMP, BADVERS): one budget per client prefix.
ERROR_KEY: Hashable = ("error",)
#: Largest UDP reply without EDNS (RFC 1035 section 4.2.1).
PLAIN_UDP_SIZE = 512
#: Longest name on the wire, length bytes and the root's zero included (RFC 1035 section 2.3.4).
MAX_NAME = 255


class Malformed(Exception):
    """The message cannot be read as its header says."""


class Query(NamedTuple):
    """What a query asks, as `_read` found it."""

    ident: int
    flags: int
    question: bytes  # name, type and class as sent (so the name's letter case)
    labels: tuple[bytes, ...]
    qtype: int
    qclass: int
    opt: tuple[int, int] | None  # the OPT record's CLASS (UDP payload size) and TTL, if there is one


def answer(
    data: bytes, zones: Zones, *, tcp: bool = False, edns_size: int = 1232
) -> tuple[bytes | None, Hashable, str | None]:
    """The reply to `data` as `(reply | None, rrl_key, problem | None)`. Never raises."""
    decided = plan(data, zones, tcp=tcp, edns_size=edns_size)
    return decided.wire(), decided.key, decided.problem


def plan(data: bytes, zones: Zones, *, tcp: bool = False, edns_size: int = 1232) -> Plan:
    """What to reply to `data` (see the module docstring). Never raises."""
    if len(data) < 12:
        return Plan(ERROR_KEY, "shorter than a DNS header")
    if data[2] & 0x80:
        # A response (QR=1): answering it could start a loop between two servers. Drop, silently.
        return Plan(ERROR_KEY)
    try:
        return _plan(data, zones, tcp, edns_size)
    except Exception as exc:  # the last guard: whatever broke, the client gets FORMERR, we keep serving
        return Plan(ERROR_KEY, f"{type(exc).__name__}: {_short(exc)}", _refuse(data, FORMERR))


def _plan(data: bytes, zones: Zones, tcp: bool, edns_size: int) -> Plan:
    opcode = (data[2] >> 3) & 0xF
    qdcount, ancount, nscount, arcount = struct.unpack_from("!HHHH", data, 4)
    # RFC 9619: a QUERY with QDCOUNT other than 1 is malformed. A query has no meaning for answer or
    # authority records, and one OPT is all the additional section may usefully hold. Refused here,
    # from the header alone, before a byte of the rest is read.
    if qdcount != 1 or ancount or nscount or arcount > 1:
        if opcode:
            return Plan(ERROR_KEY, None, _refuse(data, NOTIMP))
        counts = f"QDCOUNT={qdcount} ANCOUNT={ancount} NSCOUNT={nscount} ARCOUNT={arcount}"
        return Plan(ERROR_KEY, f"not a query we read: {counts}", _refuse(data, FORMERR))
    try:
        query = _read(data, arcount)
    except Malformed as exc:
        if opcode:
            return Plan(ERROR_KEY, None, _refuse(data, NOTIMP))
        return Plan(ERROR_KEY, str(exc), _refuse(data, FORMERR))

    # RFC 6891 section 6.1.3: a version we do not implement gets BADVERS (and our version, 0).
    if query.opt is not None and (query.opt[1] >> 16) & 0xFF:
        return Plan(ERROR_KEY, None, _error(query, BADVERS, edns_size))
    if opcode:  # RFC 1035 4.1.1: only QUERY is implemented here (no NOTIFY, UPDATE, IQUERY)
        return Plan(ERROR_KEY, None, _error(query, NOTIMP, edns_size))
    if query.qclass != CLASS.IN or query.qtype in (QTYPE.AXFR, QTYPE.IXFR):
        return Plan(ERROR_KEY, None, _error(query, REFUSED, edns_size))  # no other class, no transfers
    qkey = tuple(label.lower() for label in query.labels)
    zone = zones.find(qkey)
    if zone is None:  # not ours: we are not a resolver (RA is clear)
        return Plan(ERROR_KEY, None, _error(query, REFUSED, edns_size))

    found = lookup(zone, DNSLabel(query.labels), query.qtype, qkey)
    authority = []
    if found.negative:
        # RFC 2308 section 3: the SOA goes in the authority section of NXDOMAIN and NODATA replies, its
        # TTL the lesser of the SOA's own TTL and its MINIMUM field.
        soa = zone.soa
        authority.append(RR(soa.rname, QTYPE.SOA, CLASS.IN, zone.negative_ttl, soa.rdata))
    rcode = NXDOMAIN if found.nxdomain else NOERROR
    key = (found.source, query.qtype) if not found.negative else (zone.key, rcode)
    if tcp:
        limit = 65535
    elif query.opt is not None:
        limit = max(PLAIN_UDP_SIZE, min(query.opt[0], edns_size))
    else:
        limit = PLAIN_UDP_SIZE
    records = Records(query, rcode, found.answers, authority, limit, edns_size, zone.depth)
    return Plan(key, None, None, records)


def _question_name(data: bytes) -> tuple[int, tuple[bytes, ...]]:
    """The offset just past the uncompressed name at offset 12, and its labels; Malformed otherwise."""
    labels: list[bytes] = []
    i, n = 12, len(data)
    while True:
        if i >= n:
            raise Malformed("name runs past the end of the message")
        length = data[i]
        if not length:
            return i + 1, tuple(labels)
        if length > 63:  # 0xC0 a pointer, 0x40 and 0x80 extended and reserved label types
            raise Malformed("compressed or extended label in the question")
        i += length + 1
        if i - 12 >= MAX_NAME:  # at least the root's zero byte is still to come
            raise Malformed(f"name over {MAX_NAME} bytes")
        labels.append(data[i - length : i])


def _read(data: bytes, arcount: int) -> Query:
    """The question and the OPT of a message whose header announced one question and at most one
    additional record. Reads one name and one record header, whatever the message's length."""
    end, labels = _question_name(data)
    if end + 4 > len(data):
        raise Malformed("question cut short")
    qtype, qclass = struct.unpack_from("!HH", data, end)
    end += 4
    question = data[12:end]
    opt = None
    if arcount:
        owner = end
        i = end
        while True:  # the owner: labels, ended by the root or a pointer; only its extent matters here
            if i >= len(data):
                raise Malformed("additional record cut short")
            length = data[i]
            if length >= 0xC0:
                i += 2
                break
            if length > 63:
                raise Malformed("extended label in the additional record")
            i += length + 1
            if not length:
                break
            if i - owner >= MAX_NAME:
                raise Malformed(f"name over {MAX_NAME} bytes")
        if i + 10 > len(data):
            raise Malformed("additional record cut short")
        rtype, rclass, ttl, rdlength = struct.unpack_from("!HHIH", data, i)
        end = i + 10 + rdlength
        if end > len(data):
            raise Malformed("additional record cut short")
        if rtype == OPT_TYPE:
            # RFC 6891 section 6.1.1: the OPT is owned by the root. Its options are not read: we
            # implement none, and unknown ones are ignored (section 6.1.2).
            if data[owner] != 0:
                raise Malformed("OPT record not owned by the root")
            opt = (rclass, ttl)
        # Any other record (TSIG, SIG(0)) means nothing to us and is skipped unread.
    if end != len(data):
        raise Malformed(f"{len(data) - end} bytes after the records the header announces")
    ident, flags = struct.unpack_from("!HH", data)
    return Query(ident, flags, question, labels, qtype, qclass, opt)


@dataclass(frozen=True, slots=True)
class Plan:
    """The decision for one message. `reply` holds a reply made already (errors; None and no
    `records`: nothing to send); `records`, an answer still to pack."""

    key: Hashable
    problem: str | None = None
    reply: bytes | None = None
    records: Records | None = None

    @property
    def silent(self) -> bool:
        """True when nothing is to be sent at all (a response, or shorter than a header)."""
        return self.reply is None and self.records is None

    def wire(self) -> bytes | None:
        """The reply's bytes, or None: send nothing."""
        if self.records is None:
            return self.reply
        try:
            return self.records.pack()
        except Exception:  # zone records are packed once at load; this is a last guard, never expected
            return self.records.head(SERVFAIL, 0)

    def slip(self) -> bytes | None:
        """The reply truncated: TC=1, header, question and OPT, no records; None if there is no reply."""
        if self.records is not None:
            return self.records.truncated()
        return truncate(self.reply) if self.reply is not None else None


class Records(NamedTuple):
    """An answer to pack: the query, its rcode, the records, and how large the reply may be."""

    query: Query
    rcode: int
    answers: list[RR]
    authority: list[RR]
    limit: int
    edns_size: int
    depth: int  # labels of the zone's deepest name

    def head(self, rcode: int, extra_flags: int) -> bytes:
        """Header (no records counted), question and OPT."""
        return _error(self.query, rcode, self.edns_size, extra_flags)

    def truncated(self) -> bytes:
        return self.head(self.rcode, AA | TC)

    def pack(self) -> bytes:
        q = self.query
        flags = _reply_flags(q.flags) | AA | self.rcode
        counts = (1, len(self.answers), len(self.authority), 0 if q.opt is None else 1)
        buf = DNSBuffer(struct.pack("!HHHHHH", q.ident, flags, *counts) + q.question)
        buf.offset = len(buf.data)
        # The names later records may point to (RFC 1035 4.1.4). dnslib would file every suffix of the
        # question, a tuple each: quadratic in the labels, ~150 us for a 120-label name. Only the
        # whole name and the suffixes no deeper than the zone's deepest name can be pointed to.
        labels = q.labels
        offsets = [12]
        for label in labels:
            offsets.append(offsets[-1] + len(label) + 1)
        names = {labels: 12}
        for i in range(max(1, len(labels) - self.depth), len(labels)):
            names[labels[i:]] = offsets[i]
        buf.names = names
        for rr in self.answers:
            rr.pack(buf)
        for rr in self.authority:
            rr.pack(buf)
        wire = bytes(buf.data)
        if q.opt is not None:  # our OPT goes last
            wire += _opt(self.edns_size, self.rcode, q.opt[1])
        if len(wire) > self.limit:
            return self.truncated()
        return wire


def _reply_flags(flags: int) -> int:
    # RD and CD are copied from the query (RFC 1035 4.1.1, RFC 4035 3.2.2); RA stays clear, we do not
    # recurse; AD, Z and TC start clear. The opcode is echoed.
    return QR | (flags & (RD | CD | OPCODE))


def _opt(edns_size: int, rcode: int, query_ttl: int) -> bytes:
    # RFC 6891 6.1.2-6.1.3: owner root, CLASS our payload size, TTL ext-rcode | version 0 | DO, no
    # options. RFC 3225 section 3: the DO bit is copied into the reply.
    return b"\x00\x00\x29" + struct.pack("!HBBHH", edns_size, rcode >> 4, 0, query_ttl & DO_BIT, 0)


def _error(query: Query, rcode: int, edns_size: int, extra_flags: int = 0) -> bytes:
    """A reply without records: header, the question as sent, our OPT if the query had one."""
    flags = _reply_flags(query.flags) | extra_flags | (rcode & 0xF)
    has_opt = query.opt is not None
    head = struct.pack("!HHHHHH", query.ident, flags, 1, 0, 0, 1 if has_opt else 0)
    opt = _opt(edns_size, rcode, query.opt[1]) if query.opt is not None else b""
    return head + query.question + opt


def _refuse(data: bytes, rcode: int) -> bytes:
    """The reply to a message not read further: its ID, opcode and RD, the rcode, and its first
    question when that is a plain name inside the message. Never longer than the message."""
    ident, flags, qdcount = struct.unpack_from("!HHH", data)
    question = b""
    if qdcount:
        try:
            end = _question_name(data)[0] + 4
        except Malformed:
            end = 0
        if 12 < end <= len(data):
            question = data[12:end]
    head = struct.pack("!HHHHHH", ident, QR | (flags & (RD | OPCODE)) | rcode, 1 if question else 0, 0, 0, 0)
    return head + question


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
