"""Names to addresses, for the connections a domain rule allowed: edge dials the name itself.

With `egress.resolver` set, edge asks that server over UDP (dnslib builds and reads the messages): an
A and an AAAA query at once, each from a fresh socket with a random ID, a reply accepted only when
its ID and question match, each wait bounded by `dns_timeout` through the deadline table
(edge/http/deadlines.py), one retry. CNAME chains in the answer are followed from the name asked.
Without it, the system's resolver (getaddrinfo in a worker thread, bounded by the same timeout).

Answers are cached for their TTL (at most `MAX_TTL` seconds, at most `MAX_CACHED` names): a policy
change never needs the cache emptied, because the decision is taken before the name is resolved.
"""

from __future__ import annotations

import ipaddress
import random
import socket

import trio
from dnslib import CNAME, QTYPE, RCODE, DNSRecord

from edge.http.deadlines import Deadlines, Expired, Wait

MAX_TTL = 300
MAX_CACHED = 10_000


class ResolveError(Exception):
    """The name has no address edge could learn: NXDOMAIN, SERVFAIL, no answer, a timeout."""


class Resolver:
    __slots__ = ("server", "timeout", "_d", "_cache")

    def __init__(self, server: tuple[str, int] | None, timeout: float, deadlines: Deadlines) -> None:
        self.server = server
        self.timeout = timeout
        self._d = deadlines
        self._cache: dict[str, tuple[float, list[str]]] = {}

    async def lookup(self, name: str) -> list[str]:
        """The addresses of `name`, IPv4 first. ResolveError when there are none."""
        now = trio.current_time()
        hit = self._cache.get(name)
        if hit is not None and hit[0] > now:
            return hit[1]
        if self.server is None:
            addresses, ttl = await self._system(name), 30
        else:
            addresses, ttl = await self._ask_both(name)
        if not addresses:
            raise ResolveError(f"{name}: no address")
        if ttl > 0:
            if len(self._cache) >= MAX_CACHED:
                self._cache.clear()
            self._cache[name] = (now + min(ttl, MAX_TTL), addresses)
        return addresses

    async def _system(self, name: str) -> list[str]:
        with trio.move_on_after(self.timeout):
            try:
                infos = await trio.socket.getaddrinfo(name, None, type=socket.SOCK_STREAM)
            except socket.gaierror as exc:
                raise ResolveError(f"{name}: {exc.strerror}") from None
            found = dict.fromkeys(str(info[4][0]) for info in infos)
            return sorted(found, key=lambda a: ":" in a)
        raise ResolveError(f"{name}: the system resolver did not answer within {self.timeout} s")

    async def _ask_both(self, name: str) -> tuple[list[str], int]:
        results: dict[str, tuple[list[str], int] | ResolveError] = {}

        async def one(qtype: str) -> None:
            try:
                results[qtype] = await self._query(name, qtype)
            except ResolveError as exc:
                results[qtype] = exc

        async with trio.open_nursery() as nursery:
            nursery.start_soon(one, "A")
            nursery.start_soon(one, "AAAA")
        addresses: list[str] = []
        ttls = []
        for qtype in ("A", "AAAA"):
            got = results[qtype]
            if isinstance(got, tuple):
                addresses += got[0]
                if got[0]:
                    ttls.append(got[1])
        if not addresses:
            errors = [r for r in results.values() if isinstance(r, ResolveError)]
            raise errors[0] if errors else ResolveError(f"{name}: no address")
        return addresses, min(ttls)

    async def _query(self, name: str, qtype: str) -> tuple[list[str], int]:
        assert self.server is not None
        address, port = self.server
        question = DNSRecord.question(name, qtype)
        question.header.id = random.getrandbits(16)
        packet = question.pack()
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        for _attempt in range(2):
            sock = socket.socket(family, socket.SOCK_DGRAM)
            try:
                sock.setblocking(False)
                sock.connect((address, port))  # only the server's datagrams reach this socket
                sock.send(packet)
                reply = await self._receive(sock, question, trio.current_time() + self.timeout)
            except Expired:
                continue
            except OSError as exc:
                raise ResolveError(f"{name}: {exc.strerror or exc}") from None
            finally:
                sock.close()
            return _addresses(reply, name, qtype)
        raise ResolveError(f"{name}: {address} port {port} did not answer ({qtype})")

    async def _receive(self, sock: socket.socket, question: DNSRecord, deadline: float) -> DNSRecord:
        w = Wait(sock.fileno())
        while True:
            try:
                data = sock.recv(65535)
            except BlockingIOError:
                await self._d.readable(w, deadline, "dns")
                continue
            try:
                reply = DNSRecord.parse(data)
            except Exception:  # noqa: BLE001 - dnslib raises several kinds on garbage: ignore the datagram
                continue
            if reply.header.id == question.header.id and reply.q == question.q and reply.header.qr:
                return reply


def _addresses(reply: DNSRecord, name: str, qtype: str) -> tuple[list[str], int]:
    rcode = reply.header.rcode
    if rcode != RCODE.NOERROR:
        raise ResolveError(f"{name}: {RCODE.get(rcode)}")
    wanted = getattr(QTYPE, qtype)
    names = {name.rstrip(".").lower()}
    ttl = MAX_TTL
    aliases = {
        str(rr.rname).rstrip(".").lower(): rr
        for rr in reply.rr
        if rr.rtype == QTYPE.CNAME and isinstance(rr.rdata, CNAME)
    }
    current = name.rstrip(".").lower()
    while current in aliases and len(names) <= 16:  # the chain from the name asked, in any order
        rr = aliases[current]
        current = str(rr.rdata.label).rstrip(".").lower()
        names.add(current)
        ttl = min(ttl, rr.ttl)
    out: list[str] = []
    for rr in reply.rr:
        if rr.rtype == wanted and str(rr.rname).rstrip(".").lower() in names:
            out.append(str(ipaddress.ip_address(str(rr.rdata))))
            ttl = min(ttl, rr.ttl)
    return out, ttl
