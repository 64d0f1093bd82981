"""Where a redirected connection was going: SO_ORIGINAL_DST.

nftables' REDIRECT (like iptables' REDIRECT and DNAT) rewrites the destination of a connection's
packets; conntrack keeps the original, and the socket option SO_ORIGINAL_DST returns it for an
accepted socket. Python does not name the option: it is 80 at SOL_IP for IPv4 (linux/netfilter_ipv4.h)
and IP6T_SO_ORIGINAL_DST, also 80, at SOL_IPV6 (linux/netfilter_ipv6/ip6_tables.h). The answer is a
`struct sockaddr_in` (16 bytes) or `struct sockaddr_in6` (28 bytes), port and address in network order.

A connection that was not redirected (made to the listener's own address) has no NAT entry: the
option fails with ENOENT, or, with conntrack but no NAT, returns the listener's own address. Both mean
"not redirected", and edge refuses the connection (it would otherwise dial itself).
"""

from __future__ import annotations

import ipaddress
import socket
import sys

SO_ORIGINAL_DST = 80
IP6T_SO_ORIGINAL_DST = 80
_SOL_IP = getattr(socket, "SOL_IP", 0)
_SOL_IPV6 = getattr(socket, "SOL_IPV6", 41)


def original_dst(sock: socket.socket) -> tuple[str, int]:
    """(address, port) the client dialled before the REDIRECT. OSError when there is none.

    On a dual-stack listener (`[::]:PORT`, IPV6_V6ONLY off) an IPv4 connection has a v4-mapped local
    address, and its NAT entry is IPv4's: asked at SOL_IP (Linux passes SOL_IP options of an AF_INET6
    TCP socket to the IPv4 code, which reads the connection's IPv4 addresses)."""
    if sock.family == socket.AF_INET6 and not _mapped(sock.getsockname()[0]):
        raw = sock.getsockopt(_SOL_IPV6, IP6T_SO_ORIGINAL_DST, 28)
        return parse_sockaddr(raw)
    raw = sock.getsockopt(_SOL_IP, SO_ORIGINAL_DST, 16)
    return parse_sockaddr(raw)


def _mapped(address: str) -> bool:
    return address.lower().startswith("::ffff:") and "." in address


def parse_sockaddr(raw: bytes) -> tuple[str, int]:
    """A `sockaddr_in` or `sockaddr_in6` as the kernel returns it -> (address, port). Pure.

    sa_family is in host order; the port and the address in network order."""
    family = int.from_bytes(raw[:2], sys.byteorder)
    port = int.from_bytes(raw[2:4], "big")
    if family == socket.AF_INET and len(raw) >= 8:
        return str(ipaddress.IPv4Address(raw[4:8])), port
    if family == socket.AF_INET6 and len(raw) >= 24:
        ip = ipaddress.IPv6Address(raw[8:24])
        mapped = ip.ipv4_mapped
        return str(mapped if mapped is not None else ip), port
    raise OSError(f"SO_ORIGINAL_DST: unexpected address family {family}")
