"""What a refused sandbox connection receives, as bytes. Pure.

Better than a connection that appears to succeed and is then closed (E2B's documented weak spot):

  - port 80, or any HTTP request: a 403 in the usual error shapes (edge/http/pages.py render_error:
    JSON for API clients and curl, a small HTML page for a browser navigation), naming the sandbox,
    the destination and the rule, `x-edge-error: egress_denied`, then the connection closes;
  - a TLS ClientHello: a fatal `access_denied` alert (RFC 8446 section 6: AlertDescription 49, "a
    valid certificate or PSK was received, but when access control was applied, the sender decided
    not to proceed"), which clients show as "alert access denied";
  - anything else: a reset (SO_LINGER 0), which clients show as "Connection reset by peer".
"""

from __future__ import annotations

from edge.errors import EdgeError
from edge.http.pages import REASONS, render_error

#: TLS AlertLevel.fatal and AlertDescription.access_denied.
FATAL = 2
ACCESS_DENIED = 49
_ALERT = 21


class EgressDenied(EdgeError):
    """A sandbox's outbound connection refused by its policy or by the always-denied ranges."""

    status = 403
    code = "egress_denied"

    def __init__(self, sandbox_id: str | None, target: str, port: int, rule: str) -> None:
        who = f"sandbox {sandbox_id}" if sandbox_id else "this address (no sandbox)"
        super().__init__(
            f"Outbound connection from {who} to {target} port {port} denied ({rule})",
            sandbox_id=sandbox_id,
            port=port,
            rule=rule,
        )


def http_forbidden(exc: EgressDenied, request_headers: tuple[tuple[bytes, bytes], ...]) -> bytes:
    """The whole 403 response, `Connection: close`."""
    status, headers, body = render_error(exc, list(request_headers))
    head = [b"HTTP/1.1 %d %s" % (status, REASONS.get(status, b""))]
    head += [name + b": " + value for name, value in headers]
    head.append(b"connection: close")
    return b"\r\n".join(head) + b"\r\n\r\n" + body


def tls_alert(client_version: int = 0x0303) -> bytes:
    """A plaintext fatal access_denied alert record, as a server sends before its ServerHello.

    Its record version follows the client's (0x0303 for TLS 1.2 and 1.3 clients, RFC 8446 section
    5.1; an older client's own), so no client refuses the record before reading the alert."""
    version = min(max(client_version, 0x0301), 0x0303)
    return bytes((_ALERT,)) + version.to_bytes(2, "big") + b"\x00\x02" + bytes((FATAL, ACCESS_DENIED))
