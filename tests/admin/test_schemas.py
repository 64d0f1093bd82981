"""The PUT and PATCH bodies' validation, without a server: each bad value is refused naming its field."""

from __future__ import annotations

import ipaddress
import re

import pytest
from pydantic import ValidationError as PydanticError

from edge.admin.schemas import REFUSED_ADDRESS_PATTERN, SandboxIn, SandboxPatch
from tests.catalog.test_model import ACCEPTED, REFUSED

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
        (
            "defaults",
            GOOD,
            {"address": "127.0.0.2", "public": True, "mask_request_host": None, "max_connections": None},
        ),
        ("ipv6 normalized", {"address": "0:0::1"}, {"address": "::1"}),
        (
            "mask with placeholder",
            {**GOOD, "mask_request_host": "localhost:${PORT}"},
            {"mask_request_host": "localhost:${PORT}"},
        ),
        ("empty mask is none", {**GOOD, "mask_request_host": ""}, {"mask_request_host": None}),
        ("whole float limit", {**GOOD, "max_connections": 10.0}, {"max_connections": 10}),
        ("private", {**GOOD, "public": False}, {"public": False}),
    ],
)
def test_good_bodies_are_accepted_and_normalized(label, body, want):
    """Valid bodies pass, normalized the way the catalog stores them."""
    got = SandboxIn.model_validate(body).model_dump()
    assert {k: got[k] for k in want} == want, label


# --- the OpenAPI address schema says which addresses are refused ----------------------------------------

_IP_ROWS = [(label, a) for label, a, words in REFUSED if words != "not an IP address"]


@pytest.mark.parametrize("label, address", _IP_ROWS, ids=[r[0] for r in _IP_ROWS])
def test_documented_pattern_marks_each_refused_address(label, address):
    """REFUSED_ADDRESS_PATTERN (the `not` in /openapi.json) matches what the catalog refuses, given and normalized."""
    forms = {address} | ({str(ipaddress.ip_address(address))} if "%" not in address else set())
    for form in forms:
        assert re.search(REFUSED_ADDRESS_PATTERN, form), (label, form)
    for model in (SandboxIn, SandboxPatch):
        with pytest.raises(PydanticError) as info:
            model.model_validate({"address": address})
        assert [e["loc"][0] for e in info.value.errors()] == ["address"], (label, model.__name__)


@pytest.mark.parametrize("label, address, stored", ACCEPTED, ids=[r[0] for r in ACCEPTED])
def test_documented_pattern_leaves_accepted_addresses_alone(label, address, stored):
    """Loopback, private and global addresses do not match the refused pattern in either form."""
    assert not re.search(REFUSED_ADDRESS_PATTERN, address) and not re.search(REFUSED_ADDRESS_PATTERN, stored), label


# --- PATCH bodies ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "label, body, changes",
    [
        ("empty", {}, {}),
        ("null removes the limit", {"max_connections": None}, {"max_connections": None}),
        ("null removes the mask", {"mask_request_host": None}, {"mask_request_host": None}),
        ("one field", {"public": False}, {"public": False}),
        ("address normalized", {"address": "0:0::1"}, {"address": "::1"}),
    ],
)
def test_patch_body_keeps_only_the_fields_named(label, body, changes):
    """A merge patch's changes are exactly its fields, a null kept as a removal."""
    assert SandboxPatch.model_validate(body).changes() == changes, label


@pytest.mark.parametrize(
    "label, body, field",
    [
        ("address null", {"address": None}, "address"),
        ("public null", {"public": None}, "public"),
        ("public a string", {"public": "no"}, "public"),
        ("limit zero", {"max_connections": 0}, "max_connections"),
        ("unknown field", {"token_hash": "x"}, "token_hash"),
    ],
)
def test_bad_patch_values_are_refused_by_field(label, body, field):
    """A patch cannot remove address or public, nor set a bad value, nor name an unknown field."""
    with pytest.raises(PydanticError) as info:
        SandboxPatch.model_validate(body)
    assert [e["loc"][0] for e in info.value.errors()] == [field], label
