"""Private-sandbox access: every spelling of the token is found and stripped; any valid one passes. Pure."""

import pytest

from edge.catalog.model import Sandbox
from edge.catalog.ops import hash_token
from edge.errors import AccessDenied
from edge.http.access import MAX_CANDIDATES, authorize, normalize_name, strip_cookie, strip_target

T = b"tok-3n_Z"
PRIV = Sandbox("priv", "127.0.0.2", public=False, token_hash=hash_token(T))
HOST = b"3000-priv.sandbox.localhost:8080"


@pytest.mark.parametrize(
    "label, target, found, clean",
    [
        ("plain parameter, others kept in order", b"/e?a=1&edge_token=T&b=2", [b"T"], b"/e?a=1&b=2"),
        ("only parameter: the ? goes too", b"/e?edge_token=T", [b"T"], b"/e"),
        ("upper case name", b"/e?EDGE_TOKEN=T", [b"T"], b"/e"),
        ("percent-encoded letter, lower hex", b"/e?%65dge_token=T", [b"T"], b"/e"),
        ("percent-encoded underscore, either hex case", b"/e?edge%5ftoken=T&x=%5F", [b"T"], b"/e?x=%5F"),
        ("percent-encoded upper hex", b"/e?EDGE%5FTOKEN=T", [b"T"], b"/e"),
        ("; as a query separator", b"/e?a=1;edge_token=T", [b"T"], b"/e?a=1"),
        ("; kept between the others", b"/e?a=1;edge_token=T;b=2", [b"T"], b"/e?a=1;b=2"),
        ("PHP's . in a name", b"/e?edge.token=T", [b"T"], b"/e"),
        ("form + for a space, PHP's space", b"/e?edge+token=T", [b"T"], b"/e"),
        ("PHP / Rack array", b"/e?edge_token[]=T", [b"T"], b"/e"),
        ("path parameter", b"/x;edge_token=T", [b"T"], b"/x"),
        ("path parameter mid-path, others kept", b"/x;a=b;EDGE_TOKEN=T/y?q=1", [b"T"], b"/x;a=b/y?q=1"),
        ("path and query both", b"/x;edge_token=T?edge_token=U", [b"T", b"U"], b"/x"),
        ("percent-encoded value also decoded", b"/e?edge_token=T%2D1", [b"T%2D1", b"T-1"], b"/e"),
        ("empty value: stripped, not a credential", b"/e?edge_token=&a=1", [], b"/e?a=1"),
        ("no value at all", b"/e?edge_token", [], b"/e"),
        ("a similar name is not ours", b"/e?edge_tokens=T&my_edge_token=T", [], b"/e?edge_tokens=T&my_edge_token=T"),
        ("no query", b"/e", [], b"/e"),
        ("empty query untouched", b"/e?", [], b"/e?"),
        ("the open-redirect path stays a path", b"//evil.example/?edge_token=T", [b"T"], b"//evil.example/"),
    ],
)
def test_token_in_the_target_is_found_and_stripped_in_every_spelling(label, target, found, clean):
    """Each spelling a client, browser or framework reads as edge_token is taken out of the target."""
    assert strip_target(target) == (found, clean)


@pytest.mark.parametrize(
    "label, value, found, rest",
    [
        ("between others", b"a=1; edge_access_token=T; b=2", [b"T"], b"a=1; b=2"),
        ("first", b"edge_access_token=T; b=2", [b"T"], b"b=2"),
        ("alone", b"edge_access_token=T", [b"T"], b""),
        ("spaces around =", b"a=1; edge_access_token = T", [b"T"], b"a=1"),
        ("quoted value", b'edge_access_token="T"', [b"T"], b""),
        ("__Host- name", b"__Host-edge_access_token=T; x=1", [b"T"], b"x=1"),
        ("upper case name", b"EDGE_ACCESS_TOKEN=T", [b"T"], b""),
        ("percent-encoded name", b"edge%5Faccess_token=T", [b"T"], b""),
        ("comma as a separator (RFC 2109)", b"a=1, edge_access_token=T", [b"T"], b"a=1"),
        (
            "tossed junk beside the real one: both found",
            b"edge_access_token=junk; edge_access_token=T",
            [b"junk", b"T"],
            b"",
        ),
        ("not ours", b"theme=dark; edge_access_tokens=1", [], b"theme=dark; edge_access_tokens=1"),
    ],
)
def test_token_cookie_is_found_and_stripped_in_every_spelling(label, value, found, rest):
    """Only edge's cookie goes; the other cookies keep their bytes and separators."""
    got: list[bytes] = []
    assert strip_cookie(value, got) == rest
    assert got == found


@pytest.mark.parametrize(
    "label, name, normal",
    [
        ("lower case", b"EDGE_Token", b"edge_token"),
        ("percent, mixed hex case", b"%45dge%5fTOKEN", b"edge_token"),
        ("plus is a space, space is _", b" edge+token ", b"edge_token"),
        ("array suffix", b"edge.token[x]", b"edge_token"),
        ("unmatched [ is _", b"edge[token", b"edge_token"),
    ],
)
def test_names_are_normalized_as_the_most_liberal_framework_reads_them(label, name, normal):
    """Percent-decoding, case, spaces, PHP's mangling and array suffixes all collapse to one name."""
    assert normalize_name(name) == normal


def _auth(headers=(), target=b"/e", method=b"GET", secure=False):
    return authorize(PRIV, method, [(b"host", HOST), *headers], target, 3000, secure, HOST)


@pytest.mark.parametrize(
    "label, method, headers, target",
    [
        ("valid header beside an empty link parameter", b"GET", [(b"x-edge-access-token", T)], b"/e?edge_token="),
        (
            "valid header after a wrong one",
            b"GET",
            [(b"e2b-traffic-access-token", b"wrong"), (b"x-edge-access-token", T)],
            b"/e",
        ),
        (
            "valid cookie after a tossed one",
            b"GET",
            [(b"cookie", b"edge_access_token=junk; edge_access_token=" + T)],
            b"/e",
        ),
        ("quoted cookie", b"GET", [(b"cookie", b'edge_access_token="' + T + b'"')], b"/e"),
        ("cookie with spaces around =", b"GET", [(b"cookie", b"edge_access_token = " + T)], b"/e"),
        (
            "wrong link parameter beside a valid cookie",
            b"GET",
            [(b"cookie", b"edge_access_token=" + T)],
            b"/e?edge_token=bad",
        ),
        ("odd spelling of the link on a POST", b"POST", [], b"/e?EDGE_TOKEN=" + T),
    ],
)
def test_any_valid_credential_passes(label, method, headers, target):
    """Invalid credentials beside a valid one are ignored; every form is gone from what is forwarded."""
    grant = _auth([*headers, (b"accept", b"*/*")], target, method)
    assert grant.redirect is None and grant.target == b"/e"
    assert grant.headers == [(b"host", HOST), (b"accept", b"*/*")]


@pytest.mark.parametrize(
    "label, headers, target, code",
    [
        ("nothing", [], b"/e", "missing_token"),
        ("empty parameter and header", [(b"x-edge-access-token", b"")], b"/e?edge_token=", "missing_token"),
        ("wrong header", [(b"x-edge-access-token", b"nope")], b"/e", "invalid_token"),
        ("wrong cookie in an odd spelling", [(b"cookie", b"EDGE_ACCESS_TOKEN=nope")], b"/e", "invalid_token"),
        ("wrong path parameter", [], b"/e;edge_token=nope", "invalid_token"),
    ],
)
def test_without_a_valid_credential_the_answer_says_missing_or_invalid(label, headers, target, code):
    """No valid credential: invalid_token when anything was presented, missing_token otherwise."""
    with pytest.raises(AccessDenied) as err:
        _auth(headers, target)
    assert err.value.code == code and err.value.status == 403


def test_valid_token_past_the_candidate_budget_is_not_checked():
    """At most MAX_CANDIDATES distinct values are hashed: a head full of junk cookies costs a bounded amount."""
    junk = b"; ".join(b"edge_access_token=j%d" % i for i in range(MAX_CANDIDATES))
    with pytest.raises(AccessDenied):
        _auth([(b"cookie", junk + b"; edge_access_token=" + T)])
    assert _auth([(b"cookie", junk[: junk.rindex(b";")] + b"; edge_access_token=" + T)]).redirect is None


@pytest.mark.parametrize(
    "label, target, location",
    [
        ("query kept without the token", b"/e?a=1&edge_token=" + T, b"http://" + HOST + b"/e?a=1"),
        (
            "scheme-relative path stays on the host",
            b"//evil.example/?edge_token=" + T,
            b"http://" + HOST + b"//evil.example/",
        ),
        (
            "backslash path stays on the host",
            b"/\\evil.example/?edge_token=" + T,
            b"http://" + HOST + b"/\\evil.example/",
        ),
        ("odd spelling redirects too", b"/e?%65dge_token=" + T, b"http://" + HOST + b"/e"),
    ],
)
def test_link_redirect_location_is_absolute_on_the_routed_host(label, target, location):
    """The 303's Location is scheme + routed Host + the clean path: no path can leave the host."""
    assert _auth(target=target).redirect == (location, b"edge_access_token=" + T + b"; Path=/; HttpOnly; SameSite=Lax")


def test_link_under_tls_sets_a_host_prefixed_secure_cookie():
    """On https the cookie is __Host-edge_access_token with Secure, Path=/ and no Domain; Location is https."""
    location, cookie = _auth(target=b"/e?edge_token=" + T, secure=True).redirect
    assert location == b"https://" + HOST + b"/e"
    assert cookie == b"__Host-edge_access_token=" + T + b"; Path=/; HttpOnly; SameSite=Lax; Secure"
    assert b"domain" not in cookie.lower()


def test_valid_link_on_a_post_is_not_redirected():
    """A 303 would turn a POST into a GET: the request is served, the parameter stripped."""
    grant = _auth(target=b"/e?edge_token=" + T + b"&k=v", method=b"POST")
    assert grant.redirect is None and grant.target == b"/e?k=v"
