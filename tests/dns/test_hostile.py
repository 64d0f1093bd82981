"""Queries of death: the costliest messages are refused from the header, cheaply, with small replies."""

from __future__ import annotations

import struct
import time

import dns.message
import dns.rcode
import pytest

from edge.dns.answer import ERROR_KEY, FORMERR, answer, plan, truncate
from edge.dns.zone import Zones
from edge.dns.zonefile import parse_zone
from tests.dns import fuzz
from tests.dns.support import ZONE

ZONES = Zones([parse_zone(ZONE, origin="sandbox.localhost", filename="t.zone")])
WORST = {
    **{f"UDP {k}": v for k, v in fuzz.worst(4096).items()},
    **{f"TCP {k}": v for k, v in fuzz.worst(65535).items()},
}
FAT = {
    **{f"UDP {k}": v for k, v in fuzz.fat_but_well_formed(4096).items()},
    **{f"TCP {k}": v for k, v in fuzz.fat_but_well_formed(65535).items()},
}
PLAIN = dns.message.make_query("ns1.sandbox.localhost", "A").to_wire()  # not a template: dnslib packs it


def cost(packet: bytes, tcp: bool) -> float:
    """Seconds to decide and build the reply to `packet`: the least of several tries (the machine is noisy)."""
    best = float("inf")
    for _ in range(15):
        started = time.perf_counter()
        for _ in range(4):
            answer(packet, ZONES, tcp=tcp)
        best = min(best, (time.perf_counter() - started) / 4)
    return best


@pytest.mark.parametrize("label", list(WORST))
def test_worst_messages_get_formerr_with_at_most_the_header_and_first_question(label):
    """Hundreds of questions or records: FORMERR from the header, the reply no larger than the query."""
    packet = WORST[label]
    reply, key, problem = answer(packet, ZONES, tcp=label.startswith("TCP"))
    assert reply is not None and key == ERROR_KEY
    assert reply[:2] == packet[:2] and reply[3] & 0xF == FORMERR
    assert struct.unpack_from("!HHHH", reply, 4) == (1, 0, 0, 0)
    first_question = (b"\x00" if "plain" in label else fuzz.LONG_NAME) + b"\x00\x01\x00\x01"
    assert reply[12:] == first_question and len(reply) <= len(packet)
    assert "COUNT=" in problem  # refused from the header, not found out while reading


@pytest.mark.parametrize("label", list(WORST) + list(FAT))
def test_worst_messages_cost_no_more_than_a_plain_query(label):
    """However many records a message announces or holds, it costs at most 3x a plain slow-path query
    (a name of 120 labels is read label by label: ~2x)."""
    tcp = label.startswith("TCP")
    baseline = cost(PLAIN, tcp)
    assert cost({**WORST, **FAT}[label], tcp) < 3 * baseline


@pytest.mark.parametrize("label", list(FAT))
def test_large_options_or_records_are_skipped_and_the_query_answered(label):
    """One OPT or other additional record of thousands of items: skipped unread, the query answered."""
    reply = dns.message.from_wire(answer(FAT[label], ZONES, tcp=label.startswith("TCP"))[0])
    assert reply.rcode() == dns.rcode.NOERROR
    assert [rd.to_text() for rd in reply.answer[0]] == ["127.0.0.1"]


@pytest.mark.parametrize(
    "label, query",
    [
        ("answer", dns.message.make_query("ns1.sandbox.localhost", "A")),
        ("answer with EDNS and DO", dns.message.make_query("ns1.sandbox.localhost", "A", want_dnssec=True)),
        ("NXDOMAIN", dns.message.make_query("x.ns1.sandbox.localhost", "A", use_edns=0)),
        ("NODATA", dns.message.make_query("ns1.sandbox.localhost", "MX")),
        ("truncated already", dns.message.make_query("big.sandbox.localhost", "TXT")),
        ("REFUSED", dns.message.make_query("example.com", "A", use_edns=0)),
        ("FORMERR", b"\x12\x34\x01\x00\x00\x02" + b"\x00" * 6),
    ],
)
def test_slip_is_the_reply_truncated(label, query):
    """What rate limiting sends instead (slip) is the whole reply truncated, built without packing it."""
    wire = query if isinstance(query, bytes) else query.to_wire()
    decided = plan(wire, ZONES)
    assert decided.slip() == truncate(decided.wire())
