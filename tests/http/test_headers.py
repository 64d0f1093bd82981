"""Header rewriting, both ways: pure, exact lists."""

import pytest

from edge.http import headers as headers_mod
from edge.http.headers import (
    connection_tokens,
    is_upgrade,
    masked_host,
    rewrite_response,
    via_has,
)


def rewrite_request(headers, **kw):
    """The rewritten list, with a fixed request id for the edge to use when the client sent none."""
    kw["via"] = b"1.1 " + kw["via"]  # the whole entry, as the server context makes it once
    return headers_mod.rewrite_request(headers, new_request_id=lambda: b"req-1", **kw).headers


BASE = dict(
    tokens=frozenset(),
    host=b"3000-a.sandbox.localhost",
    upstream_host=b"3000-a.sandbox.localhost",
    client_ip=b"10.1.2.3",
    scheme=b"http",
    forwarded_port=b"8080",
    via=b"edge-1a2b3c4d",
    upgrade=None,
)
TAIL = [
    (b"x-request-id", b"req-1"),
    (b"x-forwarded-for", b"10.1.2.3"),
    (b"x-forwarded-host", b"3000-a.sandbox.localhost"),
    (b"x-forwarded-proto", b"http"),
    (b"x-forwarded-port", b"8080"),
    (b"via", b"1.1 edge-1a2b3c4d"),
]


def test_request_rewrite_keeps_end_to_end_headers_in_order():
    """Ordinary headers pass in their order; Host first; X-Forwarded-* and the edge's Via last."""
    out = rewrite_request(
        [(b"host", b"x"), (b"accept", b"*/*"), (b"cookie", b"a=1"), (b"content-length", b"3")], **BASE
    )
    assert out == [
        (b"host", b"3000-a.sandbox.localhost"),
        (b"accept", b"*/*"),
        (b"cookie", b"a=1"),
        (b"content-length", b"3"),
        *TAIL,
    ]


def test_request_rewrite_drops_hop_by_hop_and_connection_named_headers():
    """Connection, what it names, Keep-Alive, Proxy-*, TE, Trailer, Upgrade and Expect go."""
    headers = [
        (b"connection", b"keep-alive, X-Sec"),
        (b"x-sec", b"1"),
        (b"keep-alive", b"5"),
        (b"proxy-authorization", b"p"),
        (b"proxy-foo", b"1"),
        (b"te", b"trailers"),
        (b"trailer", b"x"),
        (b"upgrade", b"h2c"),
        (b"expect", b"100-continue"),
        (b"transfer-encoding", b"chunked"),
        (b"x-ok", b"1"),
    ]
    names = [n for n, _ in rewrite_request(headers, **dict(BASE, tokens=connection_tokens(headers)))]
    assert names == [b"host", b"transfer-encoding", b"x-ok", *(n for n, _ in TAIL)]


SPOOFED = [
    # (who trusts it, header)
    ("RFC 7239, Spring, Symfony", b"forwarded"),
    ("everyone", b"x-forwarded-for"),
    ("everyone", b"x-forwarded-proto"),
    ("everyone", b"x-forwarded-host"),
    ("Werkzeug ProxyFix, Spring, Rails, Tomcat", b"x-forwarded-port"),
    ("Werkzeug ProxyFix, Spring, Symfony", b"x-forwarded-prefix"),
    ("Apache mod_proxy", b"x-forwarded-server"),
    ("Rack", b"x-forwarded-scheme"),
    ("Rack, Spring", b"x-forwarded-ssl"),
    ("Rack (old)", b"x-url-scheme"),
    ("IIS, OWA", b"front-end-https"),
    ("Tomcat RemoteIpValve", b"x-forwarded-by"),
    ("Traefik", b"x-forwarded-uri"),
    ("nginx, Rails", b"x-real-ip"),
    ("django-ipware", b"x-client-ip"),
    ("Rails", b"client-ip"),
    ("Akamai", b"true-client-ip"),
    ("Cloudflare", b"cf-connecting-ip"),
    ("Fastly", b"fastly-client-ip"),
    ("django-ipware", b"x-cluster-client-ip"),
    ("ingress-nginx", b"x-original-forwarded-for"),
    ("IIS, Symfony", b"x-original-url"),
    ("IIS, Symfony", b"x-rewrite-url"),
    ("nginx auth_request", b"x-original-uri"),
    ("Azure, Symfony", b"x-original-host"),
    ("various", b"x-host"),
]


@pytest.mark.parametrize("who, name", SPOOFED, ids=[n.decode() for _, n in SPOOFED])
def test_client_forwarding_headers_never_reach_the_sandbox(who, name):
    """A header a framework trusts for the client's address, scheme, host, port or path is dropped
    (the four the edge sets are set to its own values)."""
    out = rewrite_request([(name, b"6.6.6.6"), (b"accept", b"*/*"), (name, b"evil")], **BASE)
    assert out == [(b"host", b"3000-a.sandbox.localhost"), (b"accept", b"*/*"), *TAIL]


def test_forwarded_port_is_the_listener_port_given():
    """X-Forwarded-Port is what the caller computed once for its listener, never the client's."""
    out = dict(rewrite_request([(b"x-forwarded-port", b"1")], **dict(BASE, forwarded_port=b"443")))
    assert out[b"x-forwarded-port"] == b"443"


@pytest.mark.parametrize(
    "label, incoming, sent",
    [
        ("none: the edge's entry alone", [], b"1.1 edge-1a2b3c4d"),
        ("one: appended after it", [(b"via", b"1.0 fred")], b"1.0 fred, 1.1 edge-1a2b3c4d"),
        (
            "a list over two lines: joined in order",
            [(b"via", b"1.0 fred, 1.1 p.example (Apache/1.1)"), (b"via", b"1.1 nowhere")],
            b"1.0 fred, 1.1 p.example (Apache/1.1), 1.1 nowhere, 1.1 edge-1a2b3c4d",
        ),
    ],
)
def test_via_gets_the_edge_entry_appended(label, incoming, sent):
    """RFC 9110 7.6.3: the edge appends `1.1 <token>` to the Via it received, as one field."""
    out = rewrite_request([(b"accept", b"*/*"), *incoming], **BASE)
    assert [v for n, v in out if n == b"via"] == [sent]


@pytest.mark.parametrize(
    "label, headers, seen",
    [
        ("no Via", [(b"accept", b"*/*")], False),
        ("our token alone", [(b"via", b"1.1 edge-1a2b3c4d")], True),
        ("our token later in a list, other case", [(b"via", b"1.0 fred, HTTP/1.1 EDGE-1A2B3C4D (edge)")], True),
        ("our token on a second Via line", [(b"via", b"1.0 fred"), (b"via", b"1.1 edge-1a2b3c4d")], True),
        ("another edge's token", [(b"via", b"1.1 edge-ffffffff")], False),
        ("our token as a prefix of another name", [(b"via", b"1.1 edge-1a2b3c4d0")], False),
        ("our token only in a comment", [(b"via", b"1.1 fred (edge-1a2b3c4d)")], False),
        ("our token as a protocol, not a received-by", [(b"via", b"edge-1a2b3c4d fred")], False),
    ],
)
def test_via_has_finds_the_edge_token_as_a_received_by(label, headers, seen):
    """Only a received-by equal to the token counts; a comment or a longer name does not."""
    assert via_has(headers, b"edge-1a2b3c4d") is seen


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
    headers = [
        (b"connection", b"close, x-sec"),
        (b"x-sec", b"1"),
        (b"keep-alive", b"t"),
        (b"transfer-encoding", b"chunked"),
        (b"content-type", b"text/plain"),
        (b"set-cookie", b"a=1"),
        (b"set-cookie", b"b=2"),
    ]
    assert rewrite_response(headers, 200) == [
        (b"content-type", b"text/plain"),
        (b"set-cookie", b"a=1"),
        (b"set-cookie", b"b=2"),
    ]


def test_response_101_keeps_upgrade_and_connection():
    """A 101 keeps Connection and Upgrade: they are the switch itself."""
    headers = [
        (b"connection", b"Upgrade"),
        (b"upgrade", b"websocket"),
        (b"sec-websocket-accept", b"x"),
        (b"keep-alive", b"t"),
    ]
    assert rewrite_response(headers, 101) == headers[:3]


@pytest.mark.parametrize(
    "label, set_cookie, dropped",
    [
        ("edge's cookie", b"edge_access_token=junk; Domain=sandbox.localhost; Path=/", True),
        ("upper case", b"EDGE_ACCESS_TOKEN=junk", True),
        ("spaces before =", b" edge_access_token =junk", True),
        ("the __Host- name", b"__Host-edge_access_token=junk; Secure; Path=/", True),
        ("the __Host- name, lower case", b"__host-edge_access_token=junk", True),
        ("another cookie", b"session=1; Path=/", False),
        ("a name that only starts like ours", b"edge_access_token2=1", False),
        ("ours as a value", b"x=edge_access_token", False),
    ],
)
@pytest.mark.parametrize("status", [200, 101])
def test_sandbox_set_cookie_naming_the_edge_cookie_is_dropped(label, set_cookie, dropped, status):
    """No sandbox may set, overwrite or shadow edge's access cookie, on any answer; its other cookies pass."""
    headers = [(b"set-cookie", b"a=1"), (b"set-cookie", set_cookie), (b"x-ok", b"1")]
    out = rewrite_response(headers, status)
    assert out == ([(b"set-cookie", b"a=1"), (b"x-ok", b"1")] if dropped else headers)


UNMASK = [
    ("masked redirect", b"location", b"http://localhost:4000/elsewhere", b"https://4000-d.example.com/elsewhere"),
    ("host in another case, no path", b"location", b"http://LOCALHOST:4000", b"https://4000-d.example.com"),
    ("https, query", b"content-location", b"https://localhost:4000?x=1", b"https://4000-d.example.com?x=1"),
    ("refresh", b"refresh", b"5; url=http://localhost:4000/r", b"5; url=https://4000-d.example.com/r"),
    ("another port is another host", b"location", b"http://localhost:40000/x", b"http://localhost:40000/x"),
    ("another host", b"location", b"http://example.org/x", b"http://example.org/x"),
    ("relative stays", b"location", b"/relative", b"/relative"),
    ("other fields stay", b"link", b"<http://localhost:4000/a>", b"<http://localhost:4000/a>"),
]


@pytest.mark.parametrize(("label", "name", "value", "want"), UNMASK, ids=[row[0] for row in UNMASK])
def test_masked_sandbox_redirects_point_back_at_the_public_host(label, name, value, want):
    """proxy_redirect default: absolute URLs on the masked host become the public scheme and host."""
    from edge.http.headers import unmask_locations

    got = unmask_locations([(name, value)], b"localhost:4000", b"https://4000-d.example.com")
    assert got == [(name, want)]
