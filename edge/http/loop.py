"""Requests that would come back to the edge itself: refused with 508 Loop Detected, never connected.

A sandbox whose address and port are one of the edge's own listeners turns each request into a new
request to the edge, and so on until descriptors run out (the probe: ~10,000 hops from one request);
a sandbox at an address that reaches the admin listener would publish the admin API through the
public edge. Two checks, both before any connect:

  - `OwnListeners.targets(address, port)`: the edge's own listening addresses (HTTP, admin, DNS over
    TCP). A listener on a wildcard address (0.0.0.0, ::) is reached through every local address, so
    for those the question is whether the sandbox address is local to this machine, asked the kernel
    way: a socket can bind to it. That costs two syscalls and only runs when the port is one of ours.
  - a `Via` token of the edge's own (headers.py), caught when a loop goes through other hops first.
"""

from __future__ import annotations

import ipaddress
import socket

_WILDCARDS = frozenset(("0.0.0.0", "::", ""))


def _normal(address: str) -> str:
    """IPv4-mapped IPv6 (`::ffff:127.0.0.1`) reaches the IPv4 listener: compare it as IPv4."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ip)


def is_local(address: str) -> bool:
    """True when `address` belongs to this machine (a socket can be bound to it)."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as probe:
        try:
            probe.bind((address, 0))
        except OSError:
            return False
    return True


class OwnListeners:
    """The (address, port) pairs the edge listens on. Filled as listeners are bound; read per request."""

    __slots__ = ("ports", "_is_local")

    def __init__(self, is_local=is_local) -> None:
        #: port -> the addresses listening on it (a wildcard address as given).
        self.ports: dict[int, set[str]] = {}
        self._is_local = is_local

    def add(self, host: str, port: int) -> None:
        if port:
            self.ports.setdefault(port, set()).add(_normal(host))

    def targets(self, address: str, port: int) -> bool:
        """Would a connection to (address, port) reach one of our own listeners?"""
        hosts = self.ports.get(port)
        if not hosts:
            return False
        address = _normal(address)
        if address in hosts:
            return True
        v6 = ":" in address
        wildcard = "::" in hosts if v6 else ("0.0.0.0" in hosts or "" in hosts)
        return wildcard and self._is_local(address)
