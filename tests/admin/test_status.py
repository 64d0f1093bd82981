"""The status document and its text form. Pure."""

from __future__ import annotations

from edge.admin import status
from edge.catalog.model import Sandbox, Snapshot
from edge.metrics import Stats


def _stats(**requests: int) -> Stats:
    s = Stats()
    s.sandbox_requests.update(requests)
    s.http_active_connections = 3
    s.http_active_tunnels = 1
    s.http_requests[2] = 40
    s.http_requests[5] = 2
    return s


def test_status_counts_sandboxes_and_lists_the_busiest_first():
    """Totals, private count, catalog version, and the busiest sandboxes in descending order, bounded."""
    snap = Snapshot([Sandbox("a", "127.0.0.2"), Sandbox("b", "127.0.0.3", public=False)], version=7)
    doc = status.build(snap, _stats(a=5, b=30, c=5, d=1), [("http", "127.0.0.1:8080")], 12.5, busiest=3)
    assert doc["sandboxes"] == {"total": 2, "private": 1, "catalog_version": 7}
    assert doc["busiest"] == [{"id": "b", "requests": 30}, {"id": "a", "requests": 5}, {"id": "c", "requests": 5}]
    assert doc["active_connections"] == 3 and doc["active_tunnels"] == 1
    assert doc["requests"]["2xx"] == 40 and doc["requests"]["5xx"] == 2
    assert doc["listeners"] == [{"kind": "http", "address": "127.0.0.1:8080"}]


def test_status_text_shows_listeners_counts_and_busiest():
    """The text form has one line per listener and per busy sandbox."""
    snap = Snapshot([Sandbox("a", "127.0.0.2")], version=1)
    doc = status.build(snap, _stats(a=5), [("http", "127.0.0.1:8080"), ("admin", "127.0.0.1:8081")], 3700)
    text = status.format_text(doc)
    assert text.splitlines()[0] == "edge is up for 1h 1m"
    assert "  http   127.0.0.1:8080" in text and "  admin  127.0.0.1:8081" in text
    assert "sandboxes:   1 (0 private), catalog version 1" in text
    assert "connections: 3 open" in text and "tunnels:     1 open" in text
    assert "requests:    42  (2xx=40  5xx=2)" in text
    assert text.splitlines()[-2:] == ["busiest sandboxes:", "  a  5 requests"]


def test_status_text_tolerates_missing_fields():
    """A document from another version still prints, with '?' for what is missing."""
    text = status.format_text({})
    assert "sandboxes:   ? (? private)" in text and "busiest sandboxes: none yet" in text
