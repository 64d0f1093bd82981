"""The egress counters on a Prometheus registry (edge/egress/stats.py)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest

from edge.egress.stats import EGRESS, register


def test_registered_counters_appear_in_the_exposition() -> None:
    registry = CollectorRegistry(auto_describe=False)
    register(registry)
    EGRESS.connections["deny"] += 1
    EGRESS.bytes_out += 10
    text = generate_latest(registry).decode()
    assert f'edge_egress_connections_total{{decision="deny"}} {float(EGRESS.connections["deny"])}' in text
    assert f'edge_egress_bytes_total{{direction="out"}} {float(EGRESS.bytes_out)}' in text
    assert "edge_egress_active_connections" in text
