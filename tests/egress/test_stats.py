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
    # Parsed, not matched as text: a large counter (after other tests) is written as 2.1e+06.
    from prometheus_client.parser import text_string_to_metric_families

    samples = {
        (x.name, tuple(sorted(x.labels.items()))): x.value
        for family in text_string_to_metric_families(text)
        for x in family.samples
    }
    assert samples[("edge_egress_connections_total", (("decision", "deny"),))] == EGRESS.connections["deny"]
    assert samples[("edge_egress_bytes_total", (("direction", "out"),))] == EGRESS.bytes_out
    assert "edge_egress_active_connections" in text
