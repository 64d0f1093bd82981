"""answer(): bytes in, bytes out, per the RFCs. Queries built and replies read with dnspython."""

from __future__ import annotations

import struct

import dns.edns
import dns.flags
import dns.message
import dns.opcode
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import pytest

from edge.dns.answer import ERROR_KEY, answer, truncate
from edge.dns.zone import Zones
from edge.dns.zonefile import parse_zone
from tests.dns.support import ZONE

ZONES = Zones([parse_zone(ZONE, origin="sandbox.localhost", filename="t.zone")])
Q = "sandbox.localhost"


def ask(query: dns.message.Message | bytes, **kw) -> dns.message.Message:
    wire = query if isinstance(query, bytes) else query.to_wire()
    reply, _, _ = answer(wire, ZONES, **kw)
    assert reply is not None
    return dns.message.from_wire(reply)


def q(name: str = f"3000-abc.{Q}", rdtype="A", **kw) -> dns.message.Message:
    return dns.message.make_query(name, rdtype, **kw)


@pytest.mark.parametrize("rd", [True, False])
@pytest.mark.parametrize("cd", [True, False])
def test_flags_aa_set_ra_clear_rd_cd_copied(rd, cd):
    """AA set and RA clear in our zones; RD and CD copied from the query; other flags clear."""
    query = q()
    query.flags = (dns.flags.RD if rd else 0) | (dns.flags.CD if cd else 0) | dns.flags.AD
    reply = ask(query)
    assert reply.flags & dns.flags.AA and not reply.flags & dns.flags.RA
    assert bool(reply.flags & dns.flags.RD) == rd and bool(reply.flags & dns.flags.CD) == cd
    assert not reply.flags & (dns.flags.AD | dns.flags.TC)


@pytest.mark.parametrize(
    "label, name, rdtype, rcode, answers",
    [
        ("wildcard A", f"3000-abc.{Q}", "A", "NOERROR", ["127.0.0.1"]),
        ("wildcard AAAA", f"3000-abc.{Q}", "AAAA", "NOERROR", ["::1"]),
        ("explicit name wins", f"ns1.{Q}", "A", "NOERROR", ["127.0.0.2"]),
        ("NODATA: type the name lacks", f"ns1.{Q}", "MX", "NOERROR", []),
        ("NODATA: unknown type", f"a.{Q}", "TYPE65400", "NOERROR", []),
        ("NODATA: apex not covered by *", Q, "A", "NOERROR", []),
        ("NXDOMAIN below an explicit name", f"x.ns1.{Q}", "A", "NXDOMAIN", []),
        ("NXDOMAIN below _acme-challenge", f"a._acme-challenge.{Q}", "TXT", "NXDOMAIN", []),
    ],
)
def test_rcode_and_answers(label, name, rdtype, rcode, answers):
    """Answers, NODATA and NXDOMAIN per RFC 1034/4592; negative replies carry the SOA (RFC 2308)."""
    reply = ask(q(name, rdtype))
    assert dns.rcode.to_text(reply.rcode()) == rcode
    assert [rd.to_text() for rrset in reply.answer for rd in rrset] == answers
    if not answers:
        assert [rrset.rdtype for rrset in reply.authority] == [dns.rdatatype.SOA]
        assert reply.authority[0].ttl == 30  # min(SOA TTL 60, MINIMUM 30)
    else:
        assert reply.authority == []


def test_answer_owner_keeps_question_case():
    """The owner of the answer is the question's name with the question's letter case."""
    reply = ask(q("3000-DeMo.SANDBOX.localhost"))
    assert reply.answer[0].name.to_text() == "3000-DeMo.SANDBOX.localhost."
    assert reply.question[0].name.to_text() == "3000-DeMo.SANDBOX.localhost."


def test_any_gets_a_minimal_answer():
    """RFC 8482: ANY is answered with one RRset, not all of them."""
    reply = ask(q(f"a.{Q}", "ANY"))
    assert len(reply.answer) == 1


@pytest.mark.parametrize(
    "label, name, rdclass",
    [
        ("out of zone", "example.com", "IN"),
        ("zone suffix but not label-aligned", "xsandbox.localhost", "IN"),
        ("class CH", f"a.{Q}", "CH"),
        ("class ANY", f"a.{Q}", "ANY"),
    ],
)
def test_refused(label, name, rdclass):
    """Out-of-zone names and classes other than IN are REFUSED, without AA."""
    reply = ask(q(name, "A", rdclass=rdclass))
    assert reply.rcode() == dns.rcode.REFUSED and not reply.flags & dns.flags.AA


@pytest.mark.parametrize("opcode", [dns.opcode.NOTIFY, dns.opcode.UPDATE, dns.opcode.IQUERY, 3, 15])
def test_unknown_opcode_is_notimp(opcode):
    """Opcodes other than QUERY get NOTIMP."""
    query = q()
    query.set_opcode(opcode)
    wire = query.to_wire()
    reply, _, _ = answer(wire, ZONES)
    assert reply[3] & 0xF == dns.rcode.NOTIMP
    assert (reply[2] >> 3) & 0xF == opcode


def _header(wire: bytes, **counts) -> bytes:
    qd, an, ns, ar = struct.unpack_from("!HHHH", wire, 4)
    fields = {"qd": qd, "an": an, "ns": ns, "ar": ar, **counts}
    return wire[:4] + struct.pack("!HHHH", fields["qd"], fields["an"], fields["ns"], fields["ar"]) + wire[12:]


@pytest.mark.parametrize(
    "label, mutate",
    [
        ("QDCOUNT 2 with one question", lambda w: _header(w, qd=2)),
        ("QDCOUNT 0 with one question", lambda w: _header(w, qd=0)),
        ("ANCOUNT 1 with no answer", lambda w: _header(w, an=1)),
        ("ARCOUNT 1 with no record", lambda w: _header(w, ar=1)),
        ("trailing bytes", lambda w: w + b"\x00\x00"),
        ("cut in the question", lambda w: w[:20]),
        ("two questions", lambda w: _header(w + w[12:], qd=2)),
        ("ARCOUNT 2 with one OPT", lambda w: _header(w + b"\x00\x00\x29\x04\xd0" + b"\x00" * 6, ar=2)),
        ("ANCOUNT 1, the question again as its record", lambda w: _header(w + w[12:-4] + b"\x00" * 10, an=1)),
    ],
)
def test_header_that_does_not_match_content_is_formerr(label, mutate):
    """A header whose counts do not match the message gets FORMERR with the query's ID."""
    wire = q().to_wire()
    reply, key, _ = answer(mutate(wire), ZONES)
    assert reply[:2] == wire[:2] and reply[2] & 0x80 and reply[3] & 0xF == dns.rcode.FORMERR
    assert key == ERROR_KEY


@pytest.mark.parametrize("packet", [b"", b"\x12", b"\x00" * 11], ids=["empty", "one byte", "11 bytes"])
def test_packet_shorter_than_a_header_is_dropped(packet):
    """Nothing to answer without a header: no reply."""
    assert answer(packet, ZONES)[0] is None


def test_responses_are_never_answered():
    """A message with QR=1 is dropped (answering responses can loop two servers)."""
    wire = bytearray(q().to_wire())
    wire[2] |= 0x80
    assert answer(bytes(wire), ZONES)[0] is None


# --- EDNS0 (RFC 6891) ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "label, name, rdtype",
    [
        ("answer", f"a.{Q}", "A"),
        ("NXDOMAIN", f"x.ns1.{Q}", "A"),
        ("REFUSED", "example.com", "A"),
        ("big answer", f"big.{Q}", "TXT"),
    ],
)
def test_no_opt_in_query_means_no_opt_in_reply_and_512_bytes(label, name, rdtype):
    """Without OPT in the query: no OPT in the reply, and at most 512 bytes over UDP."""
    wire, _, _ = answer(q(name, rdtype).to_wire(), ZONES)
    reply = dns.message.from_wire(wire)
    assert reply.edns == -1 and len(wire) <= 512


@pytest.mark.parametrize(
    "label, name, rdtype",
    [
        ("answer", f"a.{Q}", "A"),
        ("NXDOMAIN", f"x.ns1.{Q}", "A"),
        ("REFUSED", "example.com", "A"),
        ("truncated", f"big.{Q}", "TXT"),
    ],
)
def test_opt_in_query_means_opt_in_every_reply(label, name, rdtype):
    """With OPT in the query, an OPT comes back: answers, errors and truncated replies alike."""
    reply = ask(q(name, rdtype, use_edns=0, payload=512))
    assert reply.edns == 0 and reply.payload == 1232


def test_opt_on_notimp_and_formerr_for_two_opts():
    """NOTIMP carries OPT; two OPT records are FORMERR from the header alone: header and question."""
    query = q(use_edns=0)
    query.set_opcode(dns.opcode.NOTIFY)
    reply = ask(query)
    assert reply.rcode() == dns.rcode.NOTIMP and reply.edns == 0
    wire = q(use_edns=0).to_wire()
    doubled = _header(wire + wire[-11:], ar=2)
    reply = ask(doubled)
    assert reply.rcode() == dns.rcode.FORMERR and reply.edns == -1
    assert reply.question[0].name.to_text() == f"3000-abc.{Q}."


def test_edns_version_above_zero_is_badvers():
    """An EDNS version above 0 gets BADVERS (extended rcode 16) and our version 0."""
    reply = ask(q(use_edns=1))
    assert reply.rcode() == dns.rcode.BADVERS and reply.edns == 0


@pytest.mark.parametrize("payload", [512, 1232, 4096, 65535])
def test_advertised_size_is_capped_at_1232(payload):
    """Our OPT advertises 1232 bytes whatever the client offers."""
    assert ask(q(use_edns=0, payload=payload)).payload == 1232


def test_unknown_edns_options_are_ignored():
    """Unknown EDNS options do not change the answer."""
    opt = dns.edns.GenericOption(65001, b"hello")
    reply = ask(q(use_edns=0, options=[opt]))
    assert reply.rcode() == dns.rcode.NOERROR and [rd.to_text() for rd in reply.answer[0]] == ["127.0.0.1"]
    assert not reply.options


def test_do_bit_is_copied():
    """RFC 3225: the DO bit comes back as sent."""
    assert ask(q(use_edns=0, want_dnssec=True)).ednsflags & dns.flags.DO
    assert not ask(q(use_edns=0)).ednsflags & dns.flags.DO


@pytest.mark.parametrize(
    "label, kw, limit, opt",
    [
        ("no EDNS", {}, 512, False),
        ("EDNS 512", {"use_edns": 0, "payload": 512}, 512, True),
        ("EDNS 600", {"use_edns": 0, "payload": 600}, 600, True),
    ],
)
def test_answer_that_does_not_fit_sets_tc_and_keeps_question_and_opt(label, kw, limit, opt):
    """A UDP answer over the limit: TC set, header, question and OPT kept, records dropped."""
    wire, _, _ = answer(q(f"big.{Q}", "TXT", **kw).to_wire(), ZONES)
    reply = dns.message.from_wire(wire)
    assert reply.flags & dns.flags.TC and len(wire) <= limit
    assert reply.question[0].name.to_text() == f"big.{Q}." and reply.answer == []
    assert (reply.edns == 0) == opt


def test_answer_that_fits_the_client_size_is_not_truncated():
    """With EDNS and a payload size that fits, the big answer is whole over UDP."""
    wire, _, _ = answer(q(f"big.{Q}", "TXT", use_edns=0, payload=1232).to_wire(), ZONES)
    reply = dns.message.from_wire(wire)
    assert not reply.flags & dns.flags.TC and len(reply.answer[0]) == 3


def test_tcp_answers_are_not_truncated():
    """Over TCP the big answer is whole even without EDNS."""
    wire, _, _ = answer(q(f"big.{Q}", "TXT").to_wire(), ZONES, tcp=True)
    assert len(dns.message.from_wire(wire).answer[0]) == 3


def test_truncate_keeps_header_question_and_opt():
    """truncate(): TC set, counts fixed, question and OPT kept."""
    full, _, _ = answer(q(f"a.{Q}", use_edns=0).to_wire(), ZONES)
    cut = dns.message.from_wire(truncate(full))
    assert cut.flags & dns.flags.TC and cut.answer == [] and cut.edns == 0
    assert cut.question[0].name.to_text() == f"a.{Q}."
