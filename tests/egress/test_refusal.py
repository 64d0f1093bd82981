"""What a refused connection receives (edge/egress/refusal.py)."""

from __future__ import annotations

import json

from edge.egress.refusal import EgressDenied, http_forbidden, tls_alert
from tests.conftest import parse_responses


def test_http_refusal_is_a_json_403_naming_sandbox_and_rule() -> None:
    data = http_forbidden(EgressDenied("demo", "blocked.example.org", 80, "deny_out *.example.org"), ())
    [(status, headers, body)] = parse_responses(data)
    assert status == 403
    assert headers["x-edge-error"] == "egress_denied"
    assert headers["connection"] == "close"
    doc = json.loads(body)
    assert doc["sandboxId"] == "demo" and doc["error"] == "egress_denied" and doc["code"] == 403
    assert "blocked.example.org" in doc["message"] and "deny_out *.example.org" in doc["message"]


def test_browser_navigation_gets_the_html_page() -> None:
    data = http_forbidden(
        EgressDenied("demo", "x.example", 80, "internet_access false"), ((b"sec-fetch-mode", b"navigate"),)
    )
    [(status, headers, body)] = parse_responses(data)
    assert headers["content-type"].startswith("text/html")
    assert b"internet_access false" in body and b"demo" in body


def test_tls_refusal_is_one_fatal_access_denied_alert() -> None:
    """RFC 8446 section 6: level fatal (2), description access_denied (49), record type alert (21)."""
    assert tls_alert() == bytes([21, 3, 3, 0, 2, 2, 49])
    assert tls_alert(0x0301)[1:3] == b"\x03\x01"  # an old client's own record version
    assert tls_alert(0x0304)[1:3] == b"\x03\x03"  # never above TLS 1.2's
