"""respond(): templates or dnslib path, then the rate limiter, then packing; what to send and count."""

from __future__ import annotations

import dns.flags
import dns.message
import pytest

from edge.dns import answer as answer_mod
from edge.dns.answer import truncate
from edge.dns.fastpath import FastPath
from edge.dns.respond import respond
from edge.dns.rrl import RateLimiter
from edge.dns.zone import Zones
from edge.dns.zonefile import parse_zone
from tests.dns.support import ZONE

Q = "sandbox.localhost"
ZONES = Zones([parse_zone(ZONE, origin=Q, filename="t.zone")])
FAST = FastPath.build(ZONES).answer


def wire(name: str, rdtype: str = "A") -> bytes:
    return dns.message.make_query(name, rdtype).to_wire()


def broken_templates(data: bytes):
    raise RuntimeError("template bug")


@pytest.mark.parametrize(
    "label, packet, fast, rcode, problem",
    [
        ("wildcard A from the templates", wire(f"3000-a.{Q}"), FAST, 0, None),
        ("explicit name, dnslib path", wire(f"ns1.{Q}"), FAST, 0, None),
        ("NXDOMAIN", wire(f"x.ns1.{Q}"), FAST, 3, None),
        ("out of zone", wire("example.com"), FAST, 5, None),
        ("malformed", b"\x12\x34\x01\x00\x00\x02" + b"\x00" * 6, FAST, 1, "not a query we read"),
        ("templates raise: dnslib path answers", wire(f"3000-a.{Q}"), broken_templates, 0, "fast path"),
    ],
)
def test_response_carries_the_reply_its_rcode_and_the_problem(label, packet, fast, rcode, problem):
    """Each outcome: the reply, its rcode for the counters, and the problem for the log."""
    out = respond(packet, fast, ZONES, edns_size=1232)
    assert out.reply is not None and out.reply[:2] == packet[:2]
    assert out.rcode == rcode == out.reply[3] & 0xF and not out.limited
    assert (out.problem or "").startswith(problem or "")
    assert (out.problem is None) == (problem is None)


@pytest.mark.parametrize("packet", [b"", b"\x12\x34\x81\x00" + b"\x00" * 8], ids=["empty", "a response"])
def test_nothing_to_send_for_what_cannot_be_answered(packet):
    """No header, or a response: no reply (over TCP the server closes)."""
    out = respond(packet, FAST, ZONES, edns_size=1232, tcp=True)
    assert out.reply is None and out.rcode == -1


@pytest.mark.parametrize("name", [f"3000-a.{Q}", f"ns1.{Q}"], ids=["templates", "dnslib path"])
def test_over_the_rate_dropped_then_slipped(name):
    """rate 1, slip 2: the first answer goes out, the second is dropped, the third truncated (TC=1)."""
    limiter = RateLimiter(1, slip=2)
    packet = wire(name)
    outs = [respond(packet, FAST, ZONES, edns_size=1232, limiter=limiter, client="192.0.2.1") for _ in range(3)]
    assert [o.limited for o in outs] == [False, True, True]
    assert outs[1].reply is None
    assert outs[2].reply == truncate(outs[0].reply)
    assert dns.message.from_wire(outs[2].reply).flags & dns.flags.TC


def test_rate_limited_answers_are_never_packed(monkeypatch):
    """Over the rate, answers are dropped before they are packed: 10 queries, 1 answer packed."""
    packed = []
    real_pack = answer_mod.Records.pack
    monkeypatch.setattr(answer_mod.Records, "pack", lambda self: packed.append(1) or real_pack(self))
    limiter = RateLimiter(1, slip=0)
    outs = [
        respond(wire(f"ns1.{Q}"), FAST, ZONES, edns_size=1232, limiter=limiter, client="192.0.2.1", now=0.0)
        for _ in range(10)
    ]
    assert sum(o.reply is not None for o in outs) == 1 and len(packed) == 1


def test_tcp_is_not_rate_limited():
    """Without a limiter (TCP) every answer goes out."""
    outs = [respond(wire(f"ns1.{Q}"), FAST, ZONES, edns_size=1232, tcp=True) for _ in range(100)]
    assert all(o.reply is not None and not o.limited for o in outs)
