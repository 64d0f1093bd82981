"""Never down: no packet makes the answering code raise (a fast subset of bench/dns_bench.py's fuzz)."""

from __future__ import annotations

import dns.message
import pytest

from edge.dns.answer import FORMERR, answer
from edge.dns.fastpath import FastPath
from edge.dns.zone import Zones
from edge.dns.zonefile import parse_zone
from tests.dns import fuzz
from tests.dns.support import ZONE

ZONES = Zones([parse_zone(ZONE, origin="sandbox.localhost", filename="t.zone")])
FAST = FastPath.build(ZONES)


@pytest.mark.parametrize("packet", fuzz.TRAPS, ids=[f"trap{i}" for i in range(len(fuzz.TRAPS))])
def test_known_parser_traps_get_formerr_or_nothing(packet):
    """Pointer loops, bad labels, over-long names, lying counts: FORMERR (or no reply), never an exception."""
    reply, _, _ = answer(packet, ZONES)
    assert FAST.answer(packet) is None
    if reply is not None:
        assert reply[:2] == packet[:2] and reply[2] & 0x80
        assert reply[3] & 0xF in (FORMERR, 3, 0, 5)  # some traps are valid names under the wildcard


def test_random_and_mutated_packets_never_raise():
    """5,000 hostile packets: every reply is a response with the query's ID that dnspython parses."""
    for packet in fuzz.packets(5000, seed=1):
        fast = FAST.answer(packet)
        result = fast or answer(packet, ZONES)
        reply = result[0]
        if reply is None:
            continue
        assert reply[:2] == packet[:2] and reply[2] & 0x80
        if (reply[2] >> 3) & 0xF == 0:  # dnspython reads other opcodes (UPDATE) by their own rules
            dns.message.from_wire(reply)
