"""edge's own resolver for the names it dials (edge/egress/resolve.py), against a DNS server on loopback."""

from __future__ import annotations

import socket

import pytest
import trio
from dnslib import AAAA, CNAME, QTYPE, RCODE, RR, A, DNSRecord

from edge.config import HttpConfig
from edge.egress.resolve import ResolveError, Resolver
from edge.http.deadlines import Deadlines


class Server:
    """Answers from `answers` (qname, qtype) -> [RR]; counts queries; can lie or stay silent."""

    def __init__(self) -> None:
        self.answers: dict[tuple[str, str], list[RR]] = {}
        self.queries = 0
        self.silent = False
        self.spoof_first = False

    async def run(self, sock: trio.socket.SocketType) -> None:
        while True:
            data, peer = await sock.recvfrom(4096)
            self.queries += 1
            if self.silent:
                continue
            query = DNSRecord.parse(data)
            name, qtype = str(query.q.qname).rstrip("."), QTYPE[query.q.qtype]
            if self.spoof_first:  # a reply with another ID first: must be ignored
                bad = query.reply()
                bad.header.id = (query.header.id + 1) % 65536
                bad.add_answer(RR(name + ".", QTYPE.A, rdata=A("203.0.113.66"), ttl=60))
                await sock.sendto(bad.pack(), peer)
            reply = query.reply()
            rrs = self.answers.get((name, qtype))
            if rrs is None and not any(n == name for n, _ in self.answers):
                reply.header.rcode = RCODE.NXDOMAIN
            for rr in rrs or ():
                reply.add_answer(rr)
            await sock.sendto(reply.pack(), peer)


@pytest.fixture
async def dns(nursery):
    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    await sock.bind(("127.0.0.1", 0))
    server = Server()
    nursery.start_soon(server.run, sock)
    deadlines = Deadlines(HttpConfig(connect_timeout=0.2), 0.2)
    nursery.start_soon(deadlines.run)
    return server, Resolver(sock.getsockname(), 0.2, deadlines)


async def test_addresses_ipv4_first_and_a_cname_chain_in_any_order(dns) -> None:
    server, resolver = dns
    server.answers[("www.example.com", "A")] = [
        RR("b.example.net.", QTYPE.A, rdata=A("198.51.100.7"), ttl=30),
        RR("a.example.net.", QTYPE.CNAME, rdata=CNAME("b.example.net."), ttl=30),
        RR("www.example.com.", QTYPE.CNAME, rdata=CNAME("a.example.net."), ttl=30),
        RR("unrelated.example.", QTYPE.A, rdata=A("203.0.113.99"), ttl=30),  # not on the chain: ignored
    ]
    server.answers[("www.example.com", "AAAA")] = [RR("www.example.com.", QTYPE.AAAA, rdata=AAAA("2001:db8::7"))]
    assert await resolver.lookup("www.example.com") == ["198.51.100.7", "2001:db8::7"]


async def test_answers_are_cached_for_their_ttl(dns) -> None:
    server, resolver = dns
    server.answers[("a.example", "A")] = [RR("a.example.", QTYPE.A, rdata=A("192.0.2.1"), ttl=60)]
    await resolver.lookup("a.example")
    asked = server.queries
    assert await resolver.lookup("a.example") == ["192.0.2.1"]
    assert server.queries == asked


async def test_nxdomain_is_an_error_naming_it(dns) -> None:
    _, resolver = dns
    with pytest.raises(ResolveError, match="NXDOMAIN"):
        await resolver.lookup("nx.example")


async def test_a_reply_with_another_id_is_ignored(dns) -> None:
    server, resolver = dns
    server.spoof_first = True
    server.answers[("a.example", "A")] = [RR("a.example.", QTYPE.A, rdata=A("192.0.2.1"), ttl=60)]
    assert await resolver.lookup("a.example") == ["192.0.2.1"]


async def test_a_silent_server_is_asked_twice_then_an_error(dns) -> None:
    server, resolver = dns
    server.silent = True
    start = trio.current_time()
    with pytest.raises(ResolveError, match="did not answer"):
        await resolver.lookup("a.example")
    assert server.queries == 4  # A and AAAA, twice each
    assert trio.current_time() - start < 2
