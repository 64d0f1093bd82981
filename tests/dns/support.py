"""Helpers for the DNS tests: zone text, an in-process server on a free port, dnspython in a thread."""

from __future__ import annotations

import socket
from pathlib import Path

import dns.message
import dns.query
import trio

from edge import config as config_mod
from edge.dns.server import serve

#: The zone most tests serve: the shipped one plus explicit names that shadow the wildcard.
ZONE = """\
$ORIGIN sandbox.localhost.
$TTL 60
@       IN SOA  ns1 hostmaster 1 3600 600 86400 30
@       IN NS   ns1
ns1     IN A    127.0.0.2
_acme-challenge 120 IN TXT "token"
*       IN A    127.0.0.1
*       IN AAAA ::1
big     IN TXT  "{filler}"
big     IN TXT  "{filler}1"
big     IN TXT  "{filler}2"
""".replace("{filler}", "x" * 200)


def write_zone(folder: Path, domain: str = "sandbox.localhost", text: str = ZONE) -> Path:
    path = folder / f"{domain}.zone"
    path.write_text(text)
    return path


async def start_dns(nursery, zones: Path, **dns_overrides) -> tuple[str, int]:
    """Start edge's DNS server in `nursery` on a free port; return (host, port)."""
    domains = dns_overrides.pop("domains", ["sandbox.localhost"])
    http = dns_overrides.pop("http", {"listen": "127.0.0.1:8080"})
    raw = {
        "domains": domains,
        "http": http,
        "dns": {"listen": "127.0.0.1:0", "zones": str(zones), **dns_overrides},
    }
    cfg = config_mod.load(env={}, overrides=raw)
    bound = await nursery.start(serve, cfg)
    return bound[0]


async def udp(query: dns.message.Message, addr: tuple[str, int], **kw) -> dns.message.Message:
    return await trio.to_thread.run_sync(lambda: dns.query.udp(query, addr[0], port=addr[1], timeout=3, **kw))


async def tcp(query: dns.message.Message, addr: tuple[str, int]) -> dns.message.Message:
    return await trio.to_thread.run_sync(lambda: dns.query.tcp(query, addr[0], port=addr[1], timeout=3))


async def ask(transport: str, query: dns.message.Message, addr: tuple[str, int]) -> dns.message.Message:
    return await (udp if transport == "udp" else tcp)(query, addr)


def raw_udp(packet: bytes, addr: tuple[str, int], timeout: float = 1.0) -> bytes | None:
    """Send bytes, return the reply's bytes or None if nothing came back in time (blocking)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.sendto(packet, addr)
        try:
            return s.recv(65535)
        except TimeoutError:
            return None


async def raw_udp_async(packet: bytes, addr: tuple[str, int], timeout: float = 1.0) -> bytes | None:
    return await trio.to_thread.run_sync(raw_udp, packet, addr, timeout)
