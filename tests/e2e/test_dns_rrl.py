"""Response rate limiting: on by default, keyed on the wildcard, slipping TC=1, TCP exempt."""

from __future__ import annotations

import random
import socket

import dns.flags
import dns.message
import dns.query
import trio

from edge.config import DnsConfig
from tests.dns.support import start_dns, tcp, write_zone

Q = "sandbox.localhost"


def burst(addr, names: list[str], wait: float = 0.5) -> list[dns.message.Message]:
    """Send one UDP query per name at once, collect whatever comes back within `wait` seconds."""
    replies = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for i, name in enumerate(names):
            query = dns.message.make_query(name, "A")
            query.id = i
            s.sendto(query.to_wire(), addr)
        s.settimeout(wait)
        try:
            while len(replies) < len(names):
                replies.append(dns.message.from_wire(s.recv(4096)))
        except TimeoutError:
            pass
    return replies


def random_names(count: int) -> list[str]:
    return [f"3000-{random.getrandbits(40):x}.{Q}" for _ in range(count)]


def test_rate_limiting_is_on_by_default():
    """The default config limits responses."""
    assert DnsConfig().rrl_rate > 0 and DnsConfig().rrl_slip == 2


async def test_random_labels_share_the_wildcard_budget(nursery, tmp_path):
    """40 random names under the wildcard from one /24: `rate` answers, then drops and TC=1 slips."""
    write_zone(tmp_path)
    addr = await start_dns(nursery, tmp_path, rrl_rate=5, rrl_slip=2, rrl_exempt=[])  # loopback is exempt by default
    replies = await trio.to_thread.run_sync(burst, addr, random_names(40))
    full = [r for r in replies if not r.flags & dns.flags.TC]
    slipped = [r for r in replies if r.flags & dns.flags.TC]
    assert 5 <= len(full) <= 7  # the rate, plus what refilled during the burst
    assert all(r.answer for r in full) and all(not r.answer for r in slipped)
    assert 14 <= len(slipped) <= 18  # every second limited answer
    assert len(replies) < 40  # the others were dropped


async def test_slipped_answer_makes_a_real_client_retry_over_tcp(nursery, tmp_path):
    """A client that gets TC=1 retries over TCP, which is exempt, and gets its answer."""
    write_zone(tmp_path)
    addr = await start_dns(nursery, tmp_path, rrl_rate=2, rrl_slip=1, rrl_exempt=[])
    await trio.to_thread.run_sync(burst, addr, random_names(10))
    query = dns.message.make_query(f"3000-retry.{Q}", "A")
    reply, used_tcp = await trio.to_thread.run_sync(
        lambda: dns.query.udp_with_fallback(query, addr[0], port=addr[1], timeout=2)
    )
    assert used_tcp and reply.answer[0][0].to_text() == "127.0.0.1"


async def test_tcp_is_exempt(nursery, tmp_path):
    """Over TCP every query is answered, whatever the UDP budget."""
    write_zone(tmp_path)
    addr = await start_dns(nursery, tmp_path, rrl_rate=2, rrl_exempt=[])
    await trio.to_thread.run_sync(burst, addr, random_names(20))
    for name in random_names(20):
        reply = await tcp(dns.message.make_query(name, "A"), addr)
        assert reply.answer and not reply.flags & dns.flags.TC


async def test_rate_zero_turns_limiting_off(nursery, tmp_path):
    """rrl_rate = 0: every UDP query in a burst is answered."""
    write_zone(tmp_path)
    addr = await start_dns(nursery, tmp_path, rrl_rate=0)
    replies = await trio.to_thread.run_sync(burst, addr, random_names(200), 1.0)
    assert len(replies) == 200 and all(r.answer for r in replies)


async def test_a_local_resolver_on_loopback_is_never_limited(nursery, tmp_path):
    """With the default exemption, 200 names at once from 127.0.0.1 (a forwarding resolver) all get
    full answers even at a rate of 2/s."""
    write_zone(tmp_path)
    addr = await start_dns(nursery, tmp_path, rrl_rate=2)
    replies = await trio.to_thread.run_sync(burst, addr, random_names(200), 2.0)
    assert len(replies) == 200 and not [r for r in replies if r.flags & dns.flags.TC]
