"""The PUT body's validation, without a server: each bad value is refused naming its field."""

from __future__ import annotations

import pytest
from pydantic import ValidationError as PydanticError

from edge.admin.schemas import SandboxIn

GOOD = {"address": "127.0.0.2"}


@pytest.mark.parametrize(
    "label, body, field",
    [
        ("address missing", {}, "address"),
        ("address not an IP", {"address": "example.com"}, "address"),
        ("address a number", {"address": 2130706433}, "address"),
        ("public a string", {**GOOD, "public": "yes"}, "public"),
        ("public a number", {**GOOD, "public": 1}, "public"),
        ("mask with a slash", {**GOOD, "mask_request_host": "a/b"}, "mask_request_host"),
        ("mask with a space", {**GOOD, "mask_request_host": "a b"}, "mask_request_host"),
        ("mask with another placeholder", {**GOOD, "mask_request_host": "${HOST}"}, "mask_request_host"),
        ("max_connections zero", {**GOOD, "max_connections": 0}, "max_connections"),
        ("max_connections too big", {**GOOD, "max_connections": 1_000_001}, "max_connections"),
        ("max_connections a string", {**GOOD, "max_connections": "5"}, "max_connections"),
        ("max_connections a fraction", {**GOOD, "max_connections": 2.5}, "max_connections"),
        ("max_connections a bool", {**GOOD, "max_connections": True}, "max_connections"),
        ("unknown field", {**GOOD, "token_hash": "x"}, "token_hash"),
    ],
)
def test_bad_body_values_are_refused_by_field(label, body, field):
    """Each invalid value fails validation at its own field."""
    with pytest.raises(PydanticError) as info:
        SandboxIn.model_validate(body)
    assert [e["loc"][0] for e in info.value.errors()] == [field], label


@pytest.mark.parametrize(
    "label, body, want",
    [
        ("defaults", GOOD, {"address": "127.0.0.2", "public": True, "mask_request_host": None, "max_connections": None}),
        ("ipv6 normalized", {"address": "0:0::1"}, {"address": "::1"}),
        ("mask with placeholder", {**GOOD, "mask_request_host": "localhost:${PORT}"}, {"mask_request_host": "localhost:${PORT}"}),
        ("empty mask is none", {**GOOD, "mask_request_host": ""}, {"mask_request_host": None}),
        ("whole float limit", {**GOOD, "max_connections": 10.0}, {"max_connections": 10}),
        ("private", {**GOOD, "public": False}, {"public": False}),
    ],
)
def test_good_bodies_are_accepted_and_normalized(label, body, want):
    """Valid bodies pass, normalized the way the catalog stores them."""
    got = SandboxIn.model_validate(body).model_dump()
    assert {k: got[k] for k in want} == want, label
