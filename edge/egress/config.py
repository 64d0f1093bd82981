"""The `[egress]` config section: a frozen dataclass and its checks. Pure.

Written to move into edge/config.py as it is (the generic loader there builds any dataclass made of
Listen, str, float, int, bool and tuple[str, ...] fields, and refuses unknown keys); until then the
egress server takes it from here. `check()` is what config._check should call for the section.

    [egress]
    listen = "0.0.0.0:15001"          # where nftables REDIRECTs sandbox TCP; empty: no egress listener
    resolver = "203.0.113.53"          # edge's own resolver for allowed names; empty: the system's
    allow_private = ["10.20.0.0/16"]   # always-denied ranges edge may still dial (a package mirror)
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from edge.config import Listen
from edge.errors import ConfigError


@dataclass(frozen=True)
class EgressConfig:
    #: The transparent listener sandboxes' outbound TCP is redirected to; None: no egress listener.
    listen: Listen | None = None
    #: DNS server (`ADDR` or `ADDR:PORT`, `[V6]:PORT`) edge asks for the names it dials; empty: the
    #: system's resolver (getaddrinfo: /etc/hosts, /etc/resolv.conf).
    resolver: str = ""
    #: CIDRs inside the always-denied ranges (private, loopback, link-local, CGNAT, unique-local)
    #: that edge may dial all the same, when a sandbox's policy allows the destination.
    allow_private: tuple[str, ...] = ()
    #: Seconds to read the request head (port 80) or the ClientHello (port 443). Past it, the
    #: connection is decided without a name (by CIDR only).
    sniff_timeout: float = 5.0
    #: Bytes of a request head or ClientHello read at most before deciding without a name.
    max_sniff_bytes: int = 65536
    #: Seconds for one TCP connect to a destination.
    connect_timeout: float = 5.0
    #: Seconds for one DNS query to `resolver` (asked twice before giving up).
    dns_timeout: float = 2.0
    #: Seconds a write (either way) may make no progress before the connection is closed.
    send_timeout: float = 60.0
    #: Bytes per socket read where bytes are copied (splice(2) moves the rest).
    read_size: int = 65536
    #: Egress connections open at once; past it a new one is reset. 0: no limit but the descriptors.
    max_connections: int = 0
    #: Seconds the connections in flight get when the server stops.
    shutdown_grace: float = 5.0


def parse_resolver(text: str) -> tuple[str, int] | None:
    """`ADDR`, `ADDR:PORT` or `[V6ADDR]:PORT` -> (address, port); "" -> None (the system's)."""
    if not text:
        return None
    host, port = text, 53
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ConfigError(f"egress.resolver: {text!r} is not ADDR[:PORT]")
        if rest:
            port = _port(rest[1:], text)
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
        port = _port(port_text, text)
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        raise ConfigError(f"egress.resolver: {host!r} is not an IP address") from None
    return str(ip), port


def _port(text: str, whole: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise ConfigError(f"egress.resolver: {whole!r}: port {text!r} is not a number from 1 to 65535")
    return int(text)


def private_exceptions(cidrs: tuple[str, ...]) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    """`egress.allow_private` as networks; a bad CIDR is a ConfigError naming it."""
    out = []
    for cidr in cidrs:
        try:
            out.append(ipaddress.ip_network(cidr))
        except ValueError as exc:
            raise ConfigError(f"egress.allow_private: {cidr!r} is not a CIDR ({exc})") from None
    return tuple(out)


def check(config: EgressConfig) -> None:
    """The checks the loader cannot do from types alone."""
    parse_resolver(config.resolver)
    private_exceptions(config.allow_private)
    for name in ("sniff_timeout", "connect_timeout", "dns_timeout", "send_timeout"):
        if getattr(config, name) <= 0:
            raise ConfigError(f"egress.{name}: give a number of seconds above 0")
    if config.read_size < 1024 or config.max_sniff_bytes < 1024:
        raise ConfigError("egress.read_size and egress.max_sniff_bytes: 1024 bytes at least")
