"""Connection limits from the descriptor limit, and which catalog changes revoke an exchange (pure)."""

from __future__ import annotations

import socket

import pytest

from edge.catalog.model import Sandbox
from edge.config import HttpConfig
from edge.http.limits import clients_gone, connection_limits, revokes

LIMITS = [
    ("systemd's default soft limit", HttpConfig(), 1024, (320, 80)),
    ("a raised limit", HttpConfig(), 65536, (21824, 5456)),
    ("a tiny limit still admits some", HttpConfig(), 64, (16, 4)),
    ("configured total, derived per address", HttpConfig(max_connections=1000), 1024, (1000, 250)),
    ("configured both", HttpConfig(max_connections=1000, max_connections_per_ip=10), 1024, (1000, 10)),
    ("per address never above the total", HttpConfig(max_connections=5, max_connections_per_ip=50), 1024, (5, 5)),
]


@pytest.mark.parametrize(("label", "http", "soft", "want"), LIMITS, ids=[row[0] for row in LIMITS])
def test_connection_limits_follow_the_descriptor_limit(label, http, soft, want):
    """0 means sized to the descriptors: (soft - 64) / 3 in all, a quarter of that per address."""
    assert connection_limits(http, soft) == want


PUBLIC = Sandbox("s", "10.0.0.1")
PRIVATE = Sandbox("s", "10.0.0.1", public=False, token_hash="a" * 64)
CHANGES = [
    ("removed", PUBLIC, None, "removed from the catalog"),
    ("moved", PUBLIC, Sandbox("s", "10.0.0.2"), "moved to another address"),
    ("made private", PUBLIC, PRIVATE, "made private"),
    ("token rotated", PRIVATE, Sandbox("s", "10.0.0.1", public=False, token_hash="b" * 64), "its token was rotated"),
    ("unchanged", PUBLIC, PUBLIC, None),
    ("a new limit", PUBLIC, Sandbox("s", "10.0.0.1", max_connections=3), None),
    ("a new mask", PUBLIC, Sandbox("s", "10.0.0.1", mask_request_host="localhost:${PORT}"), None),
    ("made public", PRIVATE, PUBLIC, None),
]


@pytest.mark.parametrize(("label", "was", "now", "why"), CHANGES, ids=[row[0] for row in CHANGES])
def test_only_changes_that_withdraw_access_revoke(label, was, now, why):
    """Removal, a new address, private, a rotated token revoke; limits, masks and going public do not."""
    assert revokes(was, now) == why


class _Waiting:
    def __init__(self, fd: int) -> None:
        self.watch = fd


def test_a_client_that_closed_is_gone_one_with_unread_bytes_is_not():
    """EOF with nothing unread is gone; a pipelined request is not; a quiet open client is not."""
    closed, closed_peer = socket.socketpair()
    piped, piped_peer = socket.socketpair()
    quiet, _quiet_peer = socket.socketpair()
    closed_peer.close()
    piped_peer.sendall(b"GET /next HTTP/1.1\r\n\r\n")
    piped_peer.shutdown(socket.SHUT_WR)
    waiting = [_Waiting(s.fileno()) for s in (closed, piped, quiet)] + [_Waiting(-1)]
    assert clients_gone(waiting) == [waiting[0]]
