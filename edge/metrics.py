"""Counters the servers bump on their hot paths, and their Prometheus exposition.

The hot paths (a request, a DNS query) only add to plain integers in `STATS`: no lock, no label
lookup, no allocation. prometheus-client turns them into the text format at scrape time through a
custom collector (`render()`), which is where the cost belongs. trio runs each process's handlers in
one thread, so plain `+=` is exact.

Per-sandbox counts are bounded: every sandbox's request count is kept (the catalog bounds that set),
but only the `TOP_SANDBOXES` busiest are exported, so the label set never grows without limit.
"""

from __future__ import annotations

import os
import resource
import time
from bisect import bisect_left

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

#: How many sandboxes get their own `edge_sandbox_requests_total` series.
TOP_SANDBOXES = 20

#: Latency buckets in seconds (upper bounds), from a loopback hop to a slow sandbox.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

DNS_RCODES = {0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP", 5: "REFUSED", 16: "BADVERS"}


class Histogram:
    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...] = LATENCY_BUCKETS) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one is +Inf
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    def family(self, name: str, doc: str) -> HistogramMetricFamily:
        cumulative, running = [], 0
        for bound, count in zip((*self.bounds, float("inf")), self.counts, strict=True):
            running += count
            cumulative.append(("+Inf" if bound == float("inf") else repr(bound), running))
        return HistogramMetricFamily(name, doc, buckets=cumulative, sum_value=self.sum)


class Stats:
    """Everything one process counts. One instance per process: `STATS`."""

    def __init__(self) -> None:
        self.http_requests = [0] * 6  # by status class: index 1..5 (0: no status, e.g. client left)
        self.http_active_connections = 0
        self.http_active_tunnels = 0
        self.http_bytes_in = 0  # request bodies and tunnel bytes, client -> sandbox
        self.http_bytes_out = 0  # response bodies and tunnel bytes, sandbox -> client
        self.upstream_connect_failures = {"refused": 0, "timeout": 0, "error": 0}
        #: Exchanges h11 carried instead of the fast lane, by why (see edge/http/fastlane.py): the
        #: request head was not plain, the edge answered itself, or the response was not plain.
        self.http_h11_exchanges = {"request": 0, "answer": 0, "response": 0}
        self.http_duration = Histogram()
        self.upstream_connect = Histogram()
        self.sandbox_requests: dict[str, int] = {}
        #: DNS answers sent, by the 4-bit header rcode (BADVERS's low bits are 0: it counts as NOERROR
        #: here; its OPT carries the rest). Indexed, not keyed: the DNS hot path does `[rcode] += 1`.
        self.dns_answers = [0] * 16
        #: Answers the rate limiter dropped or truncated.
        self.dns_rate_limited = 0
        #: New client connections closed at once: over http.max_connections or max_connections_per_ip.
        self.http_connections_rejected = {"total": 0, "per_ip": 0}
        #: Exchanges and tunnels cut because a catalog change revoked them (removed, moved, private, token).
        self.http_revoked = 0
        #: Waiting client connections closed to make room for new ones at http.max_connections.
        self.http_idle_reclaimed = 0
        #: Connections refused for a missing or malformed PROXY header (or from an untrusted peer).
        self.http_proxy_header_errors = 0
        #: Access-log lines dropped because the sink did not keep up (edge/accesslog.py).
        self.access_log_dropped = 0
        #: accept() failures for want of descriptors or memory (edge/accept.py).
        self.accept_errors = 0
        #: In a supervisor's sum: its workers' open descriptors and limits (the supervisor's own are added live).
        self.worker_fds = 0
        self.worker_max_fds = 0
        #: ACME orders by outcome (edge/tls/acme.py; only the process running the admin API orders).
        self.acme_renewals = {"success": 0, "failure": 0}
        #: TLS handshakes that did not complete, by why: timeout, unrecognized_name, protocol, closed.
        self.tls_handshake_failures = {"timeout": 0, "unrecognized_name": 0, "protocol": 0, "closed": 0}
        #: TLS connections whose records the kernel does both ways (kTLS): their bodies move by splice.
        self.tls_ktls_connections = 0

    def snapshot(self) -> dict:
        """The counters as plain data, for a worker to hand to its supervisor."""
        return {
            "http_requests": self.http_requests,
            "http_active_connections": self.http_active_connections,
            "http_active_tunnels": self.http_active_tunnels,
            "http_bytes_in": self.http_bytes_in,
            "http_bytes_out": self.http_bytes_out,
            "upstream_connect_failures": self.upstream_connect_failures,
            "http_h11_exchanges": self.http_h11_exchanges,
            "http_duration": [self.http_duration.counts, self.http_duration.sum],
            "upstream_connect": [self.upstream_connect.counts, self.upstream_connect.sum],
            "sandbox_requests": self.sandbox_requests,
            "http_connections_rejected": self.http_connections_rejected,
            "http_revoked": self.http_revoked,
            "http_idle_reclaimed": self.http_idle_reclaimed,
            "http_proxy_header_errors": self.http_proxy_header_errors,
            "access_log_dropped": self.access_log_dropped,
            "accept_errors": self.accept_errors,
            "open_fds": open_fds(),
            "max_fds": max_fds(),
            "tls_handshake_failures": self.tls_handshake_failures,
            "tls_ktls_connections": self.tls_ktls_connections,
        }

    def add(self, snap: dict) -> None:
        """Add a worker's snapshot into these counters (the supervisor's view of all workers)."""
        self.http_requests = [a + b for a, b in zip(self.http_requests, snap["http_requests"], strict=True)]
        self.http_active_connections += snap["http_active_connections"]
        self.http_active_tunnels += snap["http_active_tunnels"]
        self.http_bytes_in += snap["http_bytes_in"]
        self.http_bytes_out += snap["http_bytes_out"]
        for reason, n in snap["upstream_connect_failures"].items():
            self.upstream_connect_failures[reason] = self.upstream_connect_failures.get(reason, 0) + n
        for reason, n in snap.get("http_h11_exchanges", {}).items():
            self.http_h11_exchanges[reason] = self.http_h11_exchanges.get(reason, 0) + n
        for hist, (counts, total) in (
            (self.http_duration, snap["http_duration"]),
            (self.upstream_connect, snap["upstream_connect"]),
        ):
            hist.counts = [a + b for a, b in zip(hist.counts, counts, strict=True)]
            hist.sum += total
        for sandbox_id, n in snap["sandbox_requests"].items():
            self.sandbox_requests[sandbox_id] = self.sandbox_requests.get(sandbox_id, 0) + n
        for reason, n in snap.get("http_connections_rejected", {}).items():
            self.http_connections_rejected[reason] = self.http_connections_rejected.get(reason, 0) + n
        self.http_revoked += snap.get("http_revoked", 0)
        self.http_idle_reclaimed += snap.get("http_idle_reclaimed", 0)
        self.http_proxy_header_errors += snap.get("http_proxy_header_errors", 0)
        self.access_log_dropped += snap.get("access_log_dropped", 0)
        self.accept_errors += snap.get("accept_errors", 0)
        self.worker_fds += snap.get("open_fds", 0)
        self.worker_max_fds += snap.get("max_fds", 0)
        self.tls_ktls_connections += snap.get("tls_ktls_connections", 0)
        for reason, n in snap.get("tls_handshake_failures", {}).items():
            self.tls_handshake_failures[reason] = self.tls_handshake_failures.get(reason, 0) + n


def open_fds() -> int:
    """Descriptors this process has open."""
    try:
        return len(os.listdir("/proc/self/fd")) - 1  # minus the one listdir itself opened
    except OSError:
        return 0


def max_fds() -> int:
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return soft if soft != resource.RLIM_INFINITY else 0


STATS = Stats()

#: Where a supervisor finds its workers' latest snapshots (edge.workers sets it); empty otherwise.
WORKER_SNAPSHOTS: list = []

#: What reports the certificates served, for edge_tls_certificate_expiry_seconds: a CertStore's
#: `info` (edge.lifecycle registers it with `watch_certificates`); none: no series.
CERTIFICATES: list = []


def watch_certificates(info) -> None:
    """Export the certificates `info()` returns (CertInfo: names, not_after, source) at each scrape."""
    CERTIFICATES[:] = [info]


#: What reports how stale the catalog snapshot is, for edge_catalog_stale_seconds: a LiveCatalog's
#: `stale_seconds` (edge.catalog.store.watch registers it); none: no series.
CATALOG_STALENESS: list = []


def watch_catalog(stale_seconds) -> None:
    """Export `stale_seconds()` (0 while the catalog store is readable) at each scrape."""
    CATALOG_STALENESS[:] = [stale_seconds]


def combined() -> Stats:
    """This process's counters plus every worker's latest snapshot."""
    if not WORKER_SNAPSHOTS:
        return STATS
    total = Stats()
    total.add(STATS.snapshot())
    total.dns_answers = list(STATS.dns_answers)
    total.dns_rate_limited = STATS.dns_rate_limited
    total.acme_renewals = dict(STATS.acme_renewals)
    for read in WORKER_SNAPSHOTS:
        for snap in read():
            total.add(snap)
    return total


class _Collector:
    def __init__(self, stats: Stats) -> None:
        self.stats = stats

    def collect(self):
        s = combined() if self.stats is STATS else self.stats
        req = CounterMetricFamily("edge_http_requests", "HTTP requests answered, by status class", labels=["class"])
        for i, n in enumerate(s.http_requests):
            req.add_metric([f"{i}xx" if i else "none"], n)
        yield req
        yield GaugeMetricFamily(
            "edge_http_active_connections", "Open client connections", value=s.http_active_connections
        )
        yield GaugeMetricFamily(
            "edge_http_active_tunnels", "Open WebSocket/upgrade tunnels", value=s.http_active_tunnels
        )
        by = CounterMetricFamily(
            "edge_http_body_bytes", "Body and tunnel bytes moved, by direction", labels=["direction"]
        )
        by.add_metric(["in"], s.http_bytes_in)
        by.add_metric(["out"], s.http_bytes_out)
        yield by
        cf = CounterMetricFamily(
            "edge_upstream_connect_failures", "Failed connects to sandboxes, by reason", labels=["reason"]
        )
        for reason, n in s.upstream_connect_failures.items():
            cf.add_metric([reason], n)
        yield cf
        lane = CounterMetricFamily(
            "edge_http_h11_exchanges",
            "Exchanges carried by h11 instead of the fast lane, by why: request or response head not plain, "
            "or an answer of the edge's own",
            labels=["reason"],
        )
        for reason, n in s.http_h11_exchanges.items():
            lane.add_metric([reason], n)
        yield lane
        rej = CounterMetricFamily(
            "edge_http_connections_rejected",
            "New client connections closed at once, by the limit they were over",
            labels=["reason"],
        )
        for reason, n in s.http_connections_rejected.items():
            rej.add_metric([reason], n)
        yield rej
        tls = CounterMetricFamily(
            "edge_tls_handshake_failures", "TLS handshakes that did not complete, by why", labels=["reason"]
        )
        for reason, n in s.tls_handshake_failures.items():
            tls.add_metric([reason], n)
        yield tls
        yield CounterMetricFamily(
            "edge_tls_ktls_connections",
            "TLS connections the kernel encrypts both ways (kTLS): bodies move by splice",
            value=s.tls_ktls_connections,
        )
        yield CounterMetricFamily(
            "edge_http_idle_reclaimed",
            "Waiting client connections closed to admit new ones at http.max_connections",
            value=s.http_idle_reclaimed,
        )
        yield CounterMetricFamily(
            "edge_http_proxy_header_errors",
            "Connections closed for a missing, malformed or untrusted PROXY header",
            value=s.http_proxy_header_errors,
        )
        yield CounterMetricFamily(
            "edge_access_log_dropped", "Access-log lines dropped: the sink did not keep up", value=s.access_log_dropped
        )
        yield CounterMetricFamily(
            "edge_accept_errors", "accept() failures for want of descriptors or memory", value=s.accept_errors
        )
        yield GaugeMetricFamily(
            "edge_open_fds", "Open file descriptors (this process and its workers)", value=open_fds() + s.worker_fds
        )
        yield GaugeMetricFamily(
            "edge_max_fds", "Soft RLIMIT_NOFILE (this process and its workers)", value=max_fds() + s.worker_max_fds
        )
        yield CounterMetricFamily(
            "edge_http_revoked", "Exchanges and tunnels cut by a catalog change that revoked them", value=s.http_revoked
        )
        yield s.http_duration.family("edge_http_request_duration_seconds", "Time from request head to end of answer")
        yield s.upstream_connect.family(
            "edge_upstream_connect_seconds", "Time to get an upstream connection (pooled or new)"
        )
        top = sorted(s.sandbox_requests.items(), key=lambda kv: kv[1], reverse=True)[:TOP_SANDBOXES]
        sb = CounterMetricFamily(
            "edge_sandbox_requests", f"Requests per sandbox, the {TOP_SANDBOXES} busiest only", labels=["sandbox"]
        )
        for sandbox_id, n in top:
            sb.add_metric([sandbox_id], n)
        yield sb
        dq = CounterMetricFamily("edge_dns_queries", "DNS queries answered, by rcode", labels=["rcode"])
        for rcode, n in enumerate(s.dns_answers):
            if n or rcode in DNS_RCODES:
                dq.add_metric([DNS_RCODES.get(rcode, str(rcode))], n)
        yield dq
        yield CounterMetricFamily(
            "edge_dns_rate_limited", "DNS answers dropped or truncated by RRL", value=s.dns_rate_limited
        )
        acme = CounterMetricFamily("edge_acme_renewals", "ACME certificate orders, by result", labels=["result"])
        for result, n in s.acme_renewals.items():
            acme.add_metric([result], n)
        yield acme
        expiry = GaugeMetricFamily(
            "edge_tls_certificate_expiry_seconds",
            "Seconds until a certificate expires, per name it serves (domain) and source",
            labels=["domain", "source"],
        )
        soonest: dict[tuple[str, str], float] = {}
        for info in CERTIFICATES:
            for cert in info():
                for name in cert.names:
                    key = (name, cert.source)
                    soonest[key] = min(soonest.get(key, cert.not_after), cert.not_after)
        now = time.time()
        for (name, source), not_after in sorted(soonest.items()):
            expiry.add_metric([name, source], round(not_after - now, 3))
        yield expiry
        for stale_seconds in CATALOG_STALENESS:
            yield GaugeMetricFamily(
                "edge_catalog_stale_seconds",
                "Seconds since the catalog store was last read, while it cannot be (0: current)",
                value=round(stale_seconds(), 3),
            )


REGISTRY = CollectorRegistry(auto_describe=False)
REGISTRY.register(_Collector(STATS))


def render() -> bytes:
    """The Prometheus text exposition of this process's counters."""
    return generate_latest(REGISTRY)
