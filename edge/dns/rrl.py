"""Response rate limiting (RRL) against reflection attacks. Pure: the caller passes the time.

A spoofed-source flood makes a DNS server send its answers to a victim. RRL caps the answers one
client network gets for one kind of answer, in the manner of BIND's RRL:

- the client is its /24 (IPv4) or /56 (IPv6): one spoofer rotating addresses in a subnet gains nothing;
- the kind of answer is the `rrl_key` answer() gives: the `*` node and type for a synthesized answer
  (random labels under the wildcard share one budget; keying on the name would let them evade it),
  the node and type for other answers, the zone and rcode for NXDOMAIN/NODATA, one key for all errors;
- each (client, key) is a token bucket of `rate` answers per second, holding at most `rate` tokens;
- over the rate, answers are dropped, but every `slip`-th one is sent truncated (TC=1, no records) so
  that a real client behind the prefix retries over TCP, which cannot be spoofed and is exempt;
- clients in `exempt` (loopback by default: a local resolver forwarding to edge, the "local DNS for
  testing" use) are never limited, like BIND's `exempt-clients`. A spoofed packet claiming a loopback
  source cannot arrive from the network (the kernel drops martians), so the exemption opens no hole.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Hashable

SEND, DROP, SLIP = 0, 1, 2


class RateLimiter:
    """`check(client_host, key, now)` -> SEND, DROP or SLIP. Bounded memory: idle buckets are pruned."""

    def __init__(
        self,
        rate: int,
        slip: int = 2,
        ipv4_prefix: int = 24,
        ipv6_prefix: int = 56,
        max_entries: int = 100_000,
        exempt: tuple[str, ...] = (),
    ) -> None:
        self.rate = float(rate)
        self.exempt = tuple(ipaddress.ip_network(n, strict=False) for n in exempt)
        self.slip = slip
        self.ipv4_prefix = ipv4_prefix
        self.ipv6_prefix = ipv6_prefix
        self.max_entries = max_entries
        self._buckets: dict[tuple[bytes, Hashable], list[float]] = {}  # -> [tokens, last time, drops]
        self._prefixes: dict[str, bytes | None] = {}

    def prefix(self, host: str) -> bytes | None:
        """The client's network as bytes (its address with the host bits cleared), cached; None for an
        exempt client."""
        found = self._prefixes.get(host)
        if found is None:
            if len(self._prefixes) >= self.max_entries:
                self._prefixes.clear()
            try:
                addr = host
                if addr.startswith("::ffff:") and "." in addr:  # IPv4 on a dual-stack socket
                    addr = addr[7:]
                if ":" in addr:
                    bits = self.ipv6_prefix
                    packed = socket.inet_pton(socket.AF_INET6, addr.partition("%")[0])
                else:
                    bits = self.ipv4_prefix
                    packed = socket.inet_aton(addr)
                net = ipaddress.ip_network((packed, bits), strict=False)
                found = net.network_address.packed
                if self.exempt:
                    address = ipaddress.ip_address(packed)
                    if any(address in n for n in self.exempt):
                        self._prefixes[host] = None
                        return None
            except (OSError, ValueError):
                found = host.encode()
            self._prefixes[host] = found
        return found

    def check(self, host: str, key: Hashable, now: float) -> int:
        prefix = self.prefix(host)
        if prefix is None:
            return SEND  # exempt
        bucket_key = (prefix, key)
        bucket = self._buckets.get(bucket_key)
        rate = self.rate
        if bucket is None:
            if len(self._buckets) >= self.max_entries:
                self._prune(now)
            self._buckets[bucket_key] = [rate - 1.0, now, 0.0]
            return SEND
        tokens = bucket[0] + (now - bucket[1]) * rate
        bucket[1] = now
        if tokens > rate:
            tokens = rate
        if tokens >= 1.0:
            bucket[0] = tokens - 1.0
            return SEND
        bucket[0] = tokens
        bucket[2] += 1
        if self.slip and bucket[2] % self.slip == 0:
            return SLIP
        return DROP

    def _prune(self, now: float) -> None:
        # A bucket idle for a second is full again: forgetting it changes nothing.
        stale = [k for k, b in self._buckets.items() if now - b[1] >= 1.0]
        for k in stale:
            del self._buckets[k]
        if len(self._buckets) >= self.max_entries:  # a flood from that many networks at once
            self._buckets.clear()
