"""The "internet" of the egress tests, run inside its own network namespace (tests/netns.py).

    python -m tests.egress_internet CERT KEY

Listens on every address of the namespace (the documentation ranges 192.0.2.0/24, 198.51.100.0/24,
203.0.113.0/24, and a private and a link-local one):

  - HTTP on 80: answers `{"server": "http", "host": Host, "local": "ADDR:PORT", "path": ...}`;
    `GET /bytes/N` answers N bytes (the benchmark's download);
  - TLS on 443 with one certificate for several names (CERT, KEY): the same JSON over TLS, with
    `"server": "tls"` and `"sni"`;
  - a TCP echo on 7000;
  - DNS on 203.0.113.53:53 (UDP, dnslib): the fixed names of `NAMES`, NXDOMAIN for the rest.

Prints `ready` on stdout once every socket is bound; runs until terminated.
"""

from __future__ import annotations

import json
import socket
import ssl
import sys

import trio
from dnslib import AAAA, CNAME, QTYPE, RCODE, RR, A, DNSRecord

DNS_ADDRESS = "203.0.113.53"
#: name -> address, or "CNAME target."
NAMES = {
    "example.com": "192.0.2.10",
    "www.example.com": "192.0.2.11",
    "api.example.com": "198.51.100.10",
    "cdn.example.com": "CNAME edge.cdn.example.net.",
    "edge.cdn.example.net": "198.51.100.11",
    "blocked.example.org": "198.51.100.20",
    "other.example.org": "198.51.100.21",
    "intranet.example.com": "172.31.99.10",
    "metadata.example.com": "169.254.169.254",
    "echo.example.net": "203.0.113.10",
    "v6.example.com": "2001:db8:10::10",
}
CERT_NAMES = [
    "example.com",
    "www.example.com",
    "api.example.com",
    "cdn.example.com",
    "blocked.example.org",
    "other.example.org",
    "intranet.example.com",
    "metadata.example.com",
    "v6.example.com",
]
CHUNK = b"x" * 65536


async def _read_head(stream: trio.abc.Stream) -> bytes:
    buf = b""
    while b"\r\n\r\n" not in buf and len(buf) < 65536:
        data = await stream.receive_some(65536)
        if not data:
            break
        buf += data
    return buf


async def _answer(stream: trio.abc.Stream, head: bytes, about: dict) -> None:
    lines = head.split(b"\r\n")
    path = lines[0].split(b" ")[1].decode() if len(lines[0].split(b" ")) > 1 else ""
    host = next((ln.split(b":", 1)[1].strip().decode() for ln in lines[1:] if ln.lower().startswith(b"host:")), None)
    if path.startswith("/bytes/"):
        n = int(path[len("/bytes/") :])
        await stream.send_all(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\nconnection: close\r\n\r\n" % n)
        while n > 0:
            chunk = CHUNK[: min(n, len(CHUNK))]
            await stream.send_all(chunk)
            n -= len(chunk)
        return
    body = json.dumps({**about, "host": host, "path": path}).encode()
    await stream.send_all(
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
        b"connection: close\r\n\r\n" % len(body) + body
    )


async def http(stream: trio.SocketStream) -> None:
    async with stream:
        local = stream.socket.getsockname()
        head = await _read_head(stream)
        if head:
            await _answer(stream, head, {"server": "http", "local": f"{local[0]}:{local[1]}"})


def tls_server(cert: str, key: str):
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    names: dict[int, str | None] = {}

    def remember(sslobj, name, _ctx) -> None:
        names[id(sslobj)] = name

    ctx.sni_callback = remember

    async def serve(stream: trio.SocketStream) -> None:
        local = stream.socket.getsockname()
        tls = trio.SSLStream(stream, ctx, server_side=True)
        try:
            async with tls:
                await tls.do_handshake()
                sni = names.pop(id(tls._ssl_object), None)  # noqa: SLF001 - the SSLObject the callback saw
                head = await _read_head(tls)
                if head:
                    await _answer(tls, head, {"server": "tls", "sni": sni, "local": f"{local[0]}:{local[1]}"})
        except (trio.BrokenResourceError, ssl.SSLError, OSError):
            pass

    return serve


async def echo(stream: trio.SocketStream) -> None:
    async with stream:
        try:
            async for data in stream:
                await stream.send_all(data)
        except trio.BrokenResourceError:
            pass


def dns_answer(data: bytes) -> bytes | None:
    try:
        query = DNSRecord.parse(data)
    except Exception:  # noqa: BLE001
        return None
    reply = query.reply()
    name = str(query.q.qname).rstrip(".").lower()
    qtype = QTYPE[query.q.qtype]
    while name in NAMES:
        target = NAMES[name]
        if target.startswith("CNAME "):
            reply.add_answer(RR(name + ".", QTYPE.CNAME, rdata=CNAME(target[6:]), ttl=60))
            name = target[6:].rstrip(".")
            continue
        if qtype == "A" and ":" not in target:
            reply.add_answer(RR(name + ".", QTYPE.A, rdata=A(target), ttl=60))
        elif qtype == "AAAA" and ":" in target:
            reply.add_answer(RR(name + ".", QTYPE.AAAA, rdata=AAAA(target), ttl=60))
        break
    else:
        reply.header.rcode = RCODE.NXDOMAIN
    return reply.pack()


async def dns(sock: trio.socket.SocketType) -> None:
    while True:
        data, peer = await sock.recvfrom(4096)
        out = dns_answer(data)
        if out is not None:
            await sock.sendto(out, peer)


async def main(cert: str, key: str) -> None:
    udp = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    await udp.bind((DNS_ADDRESS, 53))
    async with trio.open_nursery() as nursery:
        for port, handler in ((80, http), (443, tls_server(cert, key)), (7000, echo)):
            listeners = await trio.open_tcp_listeners(port)  # 0.0.0.0 and ::
            nursery.start_soon(trio.serve_listeners, handler, listeners)
        nursery.start_soon(dns, udp)
        print("ready", flush=True)


if __name__ == "__main__":
    trio.run(main, sys.argv[1], sys.argv[2])
