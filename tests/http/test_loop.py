"""Which sandbox targets are the edge's own listeners (a loop: 508), decided without connecting."""

from __future__ import annotations

import pytest

from edge.http.loop import OwnListeners, is_local


def listeners(*pairs: tuple[str, int], local=("127.0.0.1", "127.0.0.9", "::1")) -> OwnListeners:
    own = OwnListeners(is_local=lambda address: address in local)
    for host, port in pairs:
        own.add(host, port)
    return own


CASES = [
    # label, listeners, target, loops?
    ("the listener's own address and port", [("127.0.0.1", 8080)], ("127.0.0.1", 8080), True),
    ("the same address, another port", [("127.0.0.1", 8080)], ("127.0.0.1", 3000), False),
    ("another loopback address than the listener's", [("127.0.0.1", 8080)], ("127.0.0.2", 8080), False),
    ("a wildcard listener, a local address", [("0.0.0.0", 8080)], ("127.0.0.9", 8080), True),
    ("a wildcard listener, an address of another machine", [("0.0.0.0", 8080)], ("10.0.3.17", 8080), False),
    ("IPv4-mapped IPv6 of the listener", [("127.0.0.1", 8081)], ("::ffff:127.0.0.1", 8081), True),
    ("an IPv6 wildcard listener, a local IPv6 address", [("::", 53)], ("::1", 53), True),
    ("an IPv6 wildcard does not cover IPv4 (V6ONLY)", [("::", 53)], ("127.0.0.1", 53), False),
    ("port 0 (not bound yet) is never a listener", [("127.0.0.1", 0)], ("127.0.0.1", 0), False),
]


@pytest.mark.parametrize(("label", "pairs", "target", "loops"), CASES, ids=[c[0] for c in CASES])
def test_own_listener_targets_are_recognised(label, pairs, target, loops):
    """A target is a loop exactly when a connection to it would reach one of our listeners."""
    assert listeners(*pairs).targets(*target) is loops


def test_locality_is_asked_of_the_kernel():
    """Loopback addresses bind here; a documentation address does not."""
    assert is_local("127.0.0.1") and is_local("127.3.4.5")
    assert not is_local("198.51.100.7")
