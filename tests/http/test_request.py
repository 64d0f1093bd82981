"""The request checks h11 leaves to us, on parsed h11 Requests."""

import h11
import pytest

from edge.errors import BadRequest, HeadTooLarge, VersionNotSupported
from edge.http.request import check_request


def _req(headers, version=b"1.1", method=b"GET", target=b"/"):
    return h11.Request(method=method, target=target, headers=[(b"host", b"h"), *headers], http_version=version)


@pytest.mark.parametrize(
    "label, request_, error",
    [
        ("HTTP/2.0", _req([], version=b"2.0"), VersionNotSupported),
        ("HTTP/0.9-ish", _req([], version=b"0.9"), VersionNotSupported),
        (
            "CL and TE",
            _req([(b"content-length", b"1"), (b"transfer-encoding", b"chunked")], method=b"POST"),
            BadRequest,
        ),
        ("TE on 1.0", _req([(b"transfer-encoding", b"chunked")], version=b"1.0", method=b"POST"), BadRequest),
        ("underscore", _req([(b"x_real_ip", b"1")]), BadRequest),
        ("101 fields", _req([(b"x-f%d" % i, b"v") for i in range(100)]), HeadTooLarge),
        ("head over 64 KiB", _req([(b"x-big", b"a" * 65536)]), HeadTooLarge),
        ("CONNECT", _req([], method=b"CONNECT", target=b"h:443"), BadRequest),
    ],
)
def test_unsafe_request_is_refused_with_its_status(label, request_, error):
    """Each unsafe head raises the error that carries its status."""
    with pytest.raises(error):
        check_request(request_, list(request_.headers), 65536, 100)


def test_ordinary_requests_pass():
    """1.0 and 1.1, 100 fields, a 60 KiB head: accepted."""
    for r in (
        _req([]),
        _req([], version=b"1.0"),
        _req([(b"x-f%d" % i, b"v") for i in range(99)]),
        _req([(b"x-big", b"a" * 60000)]),
    ):
        check_request(r, list(r.headers), 65536, 100)
