"""Header rewriting, both ways: pure, exact lists."""

from edge.http.headers import connection_tokens, is_upgrade, masked_host, rewrite_request, rewrite_response

BASE = dict(tokens=frozenset(), host=b"3000-a.sandbox.localhost", upstream_host=b"3000-a.sandbox.localhost", client_ip=b"10.1.2.3",
            scheme=b"http", upgrade=None)


def test_request_rewrite_keeps_end_to_end_headers_in_order():
    """Ordinary headers pass in their order; Host first; X-Forwarded-* last."""
    out = rewrite_request([(b"host", b"x"), (b"accept", b"*/*"), (b"cookie", b"a=1"), (b"content-length", b"3")], **BASE)
    assert out == [
        (b"host", b"3000-a.sandbox.localhost"), (b"accept", b"*/*"), (b"cookie", b"a=1"), (b"content-length", b"3"),
        (b"x-forwarded-for", b"10.1.2.3"), (b"x-forwarded-host", b"3000-a.sandbox.localhost"),
        (b"x-forwarded-proto", b"http"),
    ]


def test_request_rewrite_drops_hop_by_hop_and_connection_named_headers():
    """Connection, what it names, Keep-Alive, Proxy-*, TE, Trailer, Upgrade and Expect go."""
    headers = [(b"connection", b"keep-alive, X-Sec"), (b"x-sec", b"1"), (b"keep-alive", b"5"), (b"proxy-authorization", b"p"),
               (b"proxy-foo", b"1"), (b"te", b"trailers"), (b"trailer", b"x"), (b"upgrade", b"h2c"),
               (b"expect", b"100-continue"), (b"transfer-encoding", b"chunked"), (b"x-ok", b"1")]
    names = [n for n, _ in rewrite_request(headers, **dict(BASE, tokens=connection_tokens(headers)))]
    assert names == [b"host", b"transfer-encoding", b"x-ok", b"x-forwarded-for", b"x-forwarded-host", b"x-forwarded-proto"]


def test_request_rewrite_replaces_client_forwarding_headers():
    """A client's X-Forwarded-*, Forwarded and X-Real-IP are replaced, never appended to."""
    headers = [(b"x-forwarded-for", b"6.6.6.6"), (b"x-forwarded-proto", b"https"), (b"x-forwarded-host", b"evil"),
               (b"forwarded", b"for=6.6.6.6"), (b"x-real-ip", b"6.6.6.6")]
    out = dict(rewrite_request(headers, **BASE))
    assert out[b"x-forwarded-for"] == b"10.1.2.3" and out[b"x-forwarded-proto"] == b"http"
    assert b"forwarded" not in out and b"x-real-ip" not in out


def test_upgrade_request_keeps_upgrade_with_a_fresh_connection_header():
    """A WebSocket upgrade keeps Upgrade and gets exactly `Connection: upgrade`."""
    headers = [(b"connection", b"keep-alive, Upgrade"), (b"upgrade", b"websocket"), (b"sec-websocket-key", b"k")]
    tokens = connection_tokens(headers)
    assert is_upgrade(headers, tokens) == b"websocket"
    out = rewrite_request(headers, **dict(BASE, tokens=tokens, upgrade=b"websocket"))
    assert (b"connection", b"upgrade") in out and (b"upgrade", b"websocket") in out
    assert [n for n, _ in out].count(b"connection") == 1 and (b"sec-websocket-key", b"k") in out


def test_upgrade_header_without_connection_upgrade_is_not_an_upgrade():
    """Upgrade alone (not named in Connection) is hop-by-hop noise, not a protocol switch."""
    headers = [(b"upgrade", b"websocket")]
    assert is_upgrade(headers, connection_tokens(headers)) is None


def test_masked_host_replaces_port_placeholder():
    """${PORT} becomes the port from the public host."""
    assert masked_host("localhost:${PORT}", 3000) == b"localhost:3000"
    assert masked_host("app.internal", 3000) == b"app.internal"


def test_response_rewrite_drops_hop_by_hop_and_framing():
    """Response hop-by-hop headers and Transfer-Encoding go (h11 re-frames); the rest stays."""
    headers = [(b"connection", b"close, x-sec"), (b"x-sec", b"1"), (b"keep-alive", b"t"), (b"transfer-encoding", b"chunked"),
               (b"content-type", b"text/plain"), (b"set-cookie", b"a=1"), (b"set-cookie", b"b=2")]
    assert rewrite_response(headers, 200) == [(b"content-type", b"text/plain"), (b"set-cookie", b"a=1"), (b"set-cookie", b"b=2")]


def test_response_101_keeps_upgrade_and_connection():
    """A 101 keeps Connection and Upgrade: they are the switch itself."""
    headers = [(b"connection", b"Upgrade"), (b"upgrade", b"websocket"), (b"sec-websocket-accept", b"x"), (b"keep-alive", b"t")]
    assert rewrite_response(headers, 101) == headers[:3]
