"""Authoritative wildcard DNS for edge's domains: `3000-<id>.<domain>` resolves to the edge.

dns/server (UDP and TCP sockets, reloads, rate limiting: dns/rrl) -> dns/fastpath (templates for the
wildcard A/AAAA hot path) or dns/answer (bytes in, bytes out, dnslib) -> dns/zone (records and
lookup, pure), built from BIND files by dns/zonefile. See edge/dns/README.md.
"""
