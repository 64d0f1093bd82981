"""The egress router's counters, and their Prometheus families.

Hot paths add to plain integers in `EGRESS` (one per process, as edge.metrics.STATS); `families()`
makes the metric families at scrape time; `register(edge.metrics.REGISTRY)` (from lifecycle, which
may import both) puts them on /metrics beside the others:

    edge_egress_connections_total{decision}   allow, deny, error (no destination could be reached)
    edge_egress_bytes_total{direction}        out: sandbox -> destination; in: destination -> sandbox
    edge_egress_active_connections            connections open now
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

DECISIONS = ("allow", "deny", "error")


class EgressStats:
    __slots__ = ("connections", "bytes_out", "bytes_in", "active")

    def __init__(self) -> None:
        self.connections = dict.fromkeys(DECISIONS, 0)
        self.bytes_out = 0
        self.bytes_in = 0
        self.active = 0

    def families(self) -> list[CounterMetricFamily | GaugeMetricFamily]:
        conns = CounterMetricFamily(
            "edge_egress_connections", "Sandbox outbound connections by decision", labels=["decision"]
        )
        for decision, n in self.connections.items():
            conns.add_metric([decision], n)
        moved = CounterMetricFamily("edge_egress_bytes", "Bytes through the egress router", labels=["direction"])
        moved.add_metric(["out"], self.bytes_out)
        moved.add_metric(["in"], self.bytes_in)
        active = GaugeMetricFamily("edge_egress_active_connections", "Egress connections open now")
        active.add_metric([], self.active)
        return [conns, moved, active]

    def snapshot(self) -> dict[str, object]:
        """Plain data, for a worker to hand to its supervisor (as Stats.snapshot)."""
        return {
            "connections": dict(self.connections),
            "bytes_out": self.bytes_out,
            "bytes_in": self.bytes_in,
            "active": self.active,
        }

    def add(self, snap: dict[str, Any]) -> None:
        for decision, n in snap.get("connections", {}).items():
            self.connections[decision] = self.connections.get(decision, 0) + n
        self.bytes_out += snap.get("bytes_out", 0)
        self.bytes_in += snap.get("bytes_in", 0)
        self.active += snap.get("active", 0)


EGRESS = EgressStats()


class EgressCollector:
    """What a prometheus_client registry asks at scrape time: the egress families, read then."""

    def __init__(self, stats: EgressStats = EGRESS) -> None:
        self.stats = stats

    def collect(self) -> list[CounterMetricFamily | GaugeMetricFamily]:
        return self.stats.families()


def register(registry: CollectorRegistry) -> None:
    """Add the egress families to `registry` (edge.metrics.REGISTRY: lifecycle calls this once)."""
    registry.register(EgressCollector())
