"""Response rate limiting: token buckets per client prefix and answer kind, with slip."""

from __future__ import annotations

import pytest

from edge.dns.rrl import DROP, SEND, SLIP, RateLimiter

KEY = ("*", 1)


def run(limiter: RateLimiter, host: str, count: int, now: float = 0.0, key=KEY) -> list[int]:
    return [limiter.check(host, key, now) for _ in range(count)]


def test_answers_up_to_the_rate_then_limits():
    """`rate` answers pass in one instant, the rest are limited."""
    verdicts = run(RateLimiter(5), "192.0.2.1", 20)
    assert verdicts[:5] == [SEND] * 5 and SEND not in verdicts[5:]


def test_every_second_limited_answer_slips_as_truncated():
    """With slip 2, limited answers alternate drop and TC=1."""
    verdicts = run(RateLimiter(2, slip=2), "192.0.2.1", 8)
    assert verdicts[2:] == [DROP, SLIP, DROP, SLIP, DROP, SLIP]


def test_slip_zero_drops_everything_over_the_rate():
    """With slip 0 nothing over the rate is sent."""
    assert set(run(RateLimiter(2, slip=0), "192.0.2.1", 10)[2:]) == {DROP}


def test_budget_refills_with_time():
    """Tokens come back at `rate` per second."""
    limiter = RateLimiter(10)
    run(limiter, "192.0.2.1", 10, now=0.0)
    assert limiter.check("192.0.2.1", KEY, 0.0) != SEND
    assert run(limiter, "192.0.2.1", 5, now=0.5) == [SEND] * 5


@pytest.mark.parametrize(
    "label, a, b, shared",
    [
        ("same IPv4 /24", "192.0.2.1", "192.0.2.254", True),
        ("other IPv4 /24", "192.0.2.1", "192.0.3.1", False),
        ("same IPv6 /56", "2001:db8:0:1::1", "2001:db8:0:ff::2", True),
        ("other IPv6 /56", "2001:db8:0:100::1", "2001:db8:0:200::1", False),
    ],
)
def test_clients_in_one_prefix_share_a_budget(label, a, b, shared):
    """Clients share a budget within a /24 (IPv4) or /56 (IPv6), not across."""
    limiter = RateLimiter(3)
    run(limiter, a, 3)
    assert (limiter.check(b, KEY, 0.0) != SEND) == shared


def test_different_answer_kinds_have_different_budgets():
    """The key separates budgets: the wildcard's A is not the NXDOMAIN budget."""
    limiter = RateLimiter(3)
    run(limiter, "192.0.2.1", 3, key=KEY)
    assert limiter.check("192.0.2.1", ("zone", 3), 0.0) == SEND


def test_memory_stays_bounded_under_a_spread_flood():
    """Idle buckets are pruned when the table is full."""
    limiter = RateLimiter(5, max_entries=100)
    for i in range(1000):
        limiter.check(f"10.{i // 256}.{i % 256}.1", KEY, float(i))
    assert len(limiter._buckets) <= 100


def test_ipv4_on_a_dual_stack_socket_is_limited_per_ipv4_prefix():
    """`::ffff:a.b.c.d` counts as IPv4 /24, not as one IPv6 /56 holding every IPv4 client."""
    limiter = RateLimiter(3)
    run(limiter, "::ffff:192.0.2.1", 3)
    assert limiter.check("::ffff:192.0.2.9", KEY, 0.0) != SEND
    assert limiter.check("::ffff:198.51.100.1", KEY, 0.0) == SEND


def test_exempt_clients_are_never_limited():
    """A loopback resolver forwarding to edge (exempt by default) gets every answer; others are limited."""
    limiter = RateLimiter(2, slip=0, exempt=("127.0.0.0/8", "::1/128"))
    assert set(run(limiter, "127.0.0.53", 50)) == {SEND}
    assert set(run(limiter, "::1", 50)) == {SEND}
    assert DROP in run(limiter, "192.0.2.1", 10)


def test_default_rate_follows_nsd_and_exempts_loopback():
    """The defaults: 200 answers/s per network and kind, loopback exempt."""
    from edge.config import DnsConfig

    assert DnsConfig().rrl_rate == 200
    assert set(DnsConfig().rrl_exempt) == {"127.0.0.0/8", "::1/128"}
