"""The DNS server answers per the RFCs, over UDP and TCP, as seen by dnspython (a client we did not write)."""

from __future__ import annotations

import socket

import dns.edns
import dns.flags
import dns.message
import dns.opcode
import dns.rcode
import dns.rdatatype
import pytest
import trio

from tests.dns.support import ask, raw_udp_async, start_dns, tcp, udp, write_zone

Q = "sandbox.localhost"
TRANSPORTS = ["udp", "tcp"]


@pytest.fixture
async def server(nursery, tmp_path):
    write_zone(tmp_path)
    return await start_dns(nursery, tmp_path)


def q(name=f"3000-demo.{Q}", rdtype="A", **kw) -> dns.message.Message:
    return dns.message.make_query(name, rdtype, **kw)


def texts(reply: dns.message.Message) -> list[str]:
    return [rd.to_text() for rrset in reply.answer for rd in rrset]


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize(
    "label, name, rdtype, rcode, answers",
    [
        ("wildcard A", f"3000-demo.{Q}", "A", "NOERROR", ["127.0.0.1"]),
        ("wildcard AAAA", f"3000-demo.{Q}", "AAAA", "NOERROR", ["::1"]),
        ("wildcard over several labels", f"a.b.{Q}", "A", "NOERROR", ["127.0.0.1"]),
        ("explicit name wins", f"ns1.{Q}", "A", "NOERROR", ["127.0.0.2"]),
        ("explicit _acme-challenge wins", f"_acme-challenge.{Q}", "TXT", "NOERROR", ['"token"']),
        ("names below an explicit name", f"x.ns1.{Q}", "A", "NXDOMAIN", []),
        ("apex is not covered by *", Q, "A", "NOERROR", []),
        ("type the name lacks: NODATA", f"ns1.{Q}", "AAAA", "NOERROR", []),
        ("unknown type: NODATA", f"a.{Q}", "TYPE65400", "NOERROR", []),
    ],
)
async def test_answers_nodata_and_nxdomain(server, transport, label, name, rdtype, rcode, answers):
    """Wildcard, explicit names, NODATA and NXDOMAIN with the SOA and the RFC 2308 negative TTL."""
    reply = await ask(transport, q(name, rdtype), server)
    assert dns.rcode.to_text(reply.rcode()) == rcode
    assert texts(reply) == answers
    if answers:
        assert reply.authority == []
    else:
        assert reply.authority[0].rdtype == dns.rdatatype.SOA and reply.authority[0].ttl == 30


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("rdtype", ["A", "AAAA", "TXT"])
async def test_owner_keeps_the_question_letter_case(server, transport, rdtype):
    """Resolvers randomise case (0x20): question and answer come back in the exact case sent."""
    name = "3000-DeMo.SaNdBoX.localHOST." if rdtype != "TXT" else "_ACME-challenge.sandbox.LOCALHOST."
    reply = await ask(transport, q(name, rdtype), server)
    assert reply.question[0].name.to_text() == name
    assert reply.answer[0].name.to_text() == name


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("flags", [0, dns.flags.RD, dns.flags.CD, dns.flags.RD | dns.flags.CD | dns.flags.AD])
async def test_aa_set_ra_clear_rd_and_cd_copied(server, transport, flags):
    """AA set, RA clear, RD and CD copied from the query, other flags clear."""
    query = q()
    query.flags = flags
    reply = await ask(transport, query, server)
    assert reply.flags & dns.flags.AA and not reply.flags & (dns.flags.RA | dns.flags.AD | dns.flags.TC)
    assert reply.flags & (dns.flags.RD | dns.flags.CD) == flags & (dns.flags.RD | dns.flags.CD)


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize(
    "label, query",
    [("out of zone", q("example.com")), ("class CH", q(f"a.{Q}", "TXT", rdclass="CH"))],
)
async def test_out_of_zone_and_other_classes_are_refused(server, transport, label, query):
    """Names outside our zones and classes other than IN: REFUSED."""
    reply = await ask(transport, query, server)
    assert reply.rcode() == dns.rcode.REFUSED


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_unknown_opcode_is_notimp(server, transport):
    """An opcode other than QUERY: NOTIMP."""
    query = q()
    query.set_opcode(dns.opcode.NOTIFY)
    reply = await ask(transport, query, server)
    assert reply.rcode() == dns.rcode.NOTIMP


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_header_not_matching_content_is_formerr(server, transport):
    """QDCOUNT 2 with one question: FORMERR with the query's ID."""
    wire = bytearray(q().to_wire())
    wire[5] = 2
    if transport == "udp":
        reply = await raw_udp_async(bytes(wire), server)
    else:
        stream = await trio.open_tcp_stream(*server)
        await stream.send_all(len(wire).to_bytes(2, "big") + wire)
        with trio.fail_after(3):
            reply = b""
            while len(reply) < 2 or len(reply) < 2 + int.from_bytes(reply[:2], "big"):
                reply += await stream.receive_some(65536)
        reply = reply[2:]
    assert reply[:2] == wire[:2] and reply[3] & 0xF == dns.rcode.FORMERR
    assert dns.message.from_wire(reply).rcode() == dns.rcode.FORMERR


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_any_gets_a_minimal_answer(server, transport):
    """ANY: one RRset (RFC 8482)."""
    reply = await ask(transport, q(Q, "ANY"), server)
    assert len(reply.answer) == 1


# --- EDNS0 --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize(
    "label, query",
    [
        ("answer", q(use_edns=0)),
        ("NXDOMAIN", q(f"x.ns1.{Q}", use_edns=0)),
        ("REFUSED", q("example.com", use_edns=0)),
    ],
)
async def test_opt_in_query_gets_opt_back_capped_at_1232(server, transport, label, query):
    """An OPT in the query means an OPT in the reply, errors too; our size is 1232 whatever was offered."""
    query.use_edns(0, payload=4096)
    reply = await ask(transport, query, server)
    assert reply.edns == 0 and reply.payload == 1232


async def test_no_opt_in_query_means_no_opt_and_at_most_512_bytes(server):
    """Without OPT: no OPT in the reply and at most 512 bytes over UDP (TC when it does not fit)."""
    reply = await udp(q(f"big.{Q}", "TXT"), server, ignore_trailing=False)
    assert reply.edns == -1 and reply.flags & dns.flags.TC
    assert len(reply.to_wire()) <= 512


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_edns_version_1_is_badvers(server, transport):
    """EDNS version above 0: BADVERS, with an OPT of version 0."""
    reply = await ask(transport, q(use_edns=1), server)
    assert reply.rcode() == dns.rcode.BADVERS and reply.edns == 0


async def test_unknown_edns_options_are_ignored(server):
    """Unknown EDNS options: ignored, the answer is normal."""
    reply = await udp(q(use_edns=0, options=[dns.edns.GenericOption(65001, b"abc")]), server)
    assert texts(reply) == ["127.0.0.1"]


async def test_truncated_reply_keeps_question_and_opt_and_tcp_gets_all(server):
    """A UDP answer too big for the client's size: TC, question and OPT kept; TCP carries it whole."""
    query = q(f"big.{Q}", "TXT", use_edns=0, payload=512)
    reply = await udp(query, server)
    assert reply.flags & dns.flags.TC and reply.answer == []
    assert reply.question[0].name.to_text() == f"big.{Q}." and reply.edns == 0
    whole = await tcp(query, server)
    assert not whole.flags & dns.flags.TC and len(whole.answer[0]) == 3


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not _has_ipv6_loopback(), reason="no IPv6 loopback here")
@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_ipv6_listener_answers(nursery, tmp_path, transport):
    """Listening on [::1]: UDP and TCP answer on the same port."""
    write_zone(tmp_path)
    addr = await start_dns(nursery, tmp_path, listen="[::1]:0")
    assert addr[0] == "::1"
    reply = await ask(transport, q(rdtype="AAAA"), addr)
    assert texts(reply) == ["::1"]


async def test_udp_and_tcp_share_the_reported_port(server):
    """serve() reports one (host, port) and both UDP and TCP answer there."""
    assert texts(await udp(q(), server)) == texts(await tcp(q(), server)) == ["127.0.0.1"]
