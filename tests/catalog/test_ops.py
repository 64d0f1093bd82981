"""The writes the CLI and the admin API share, on a real SQLite catalog file."""

from __future__ import annotations

import pytest

from edge.catalog import ops
from edge.catalog.model import Sandbox
from edge.catalog.sqlite import SqliteStore
from edge.errors import SandboxExists, SandboxIsPublic, SandboxNotFound, ValidationError


@pytest.fixture
def store(tmp_path):
    s = SqliteStore(tmp_path / "c.db")
    yield s
    s.close()


def _guarded(store) -> tuple[Sandbox, str]:
    """A private sandbox with a limit and a mask: the protections an update must keep."""
    record, token = ops.add_sandbox(
        store, "secret2", address="127.0.0.2", public=False, mask_request_host="localhost:${PORT}", max_connections=5
    )
    assert token
    return record, token


def test_add_refuses_an_existing_id_and_changes_nothing(store):
    """add on an ID already in the catalog raises SandboxExists; the record stays as it was."""
    before, _ = _guarded(store)
    with pytest.raises(SandboxExists):
        ops.add_sandbox(store, "secret2", address="127.0.0.3")
    assert store.get("secret2") == before


UPDATES = [
    # label, changes, what the record then is (fields not named here are as _guarded made them)
    ("address only", {"address": "127.0.0.3"}, {"address": "127.0.0.3"}),
    ("limit only", {"max_connections": 9}, {"max_connections": 9}),
    ("limit removed", {"max_connections": None}, {"max_connections": None}),
    ("mask removed", {"mask_request_host": None}, {"mask_request_host": None}),
    ("mask changed", {"mask_request_host": "app:${PORT}"}, {"mask_request_host": "app:${PORT}"}),
    ("still private", {"public": False}, {}),
    ("nothing", {}, {}),
]


@pytest.mark.parametrize("label, changes, want", UPDATES, ids=[u[0] for u in UPDATES])
def test_update_changes_only_the_fields_named(store, label, changes, want):
    """Every field not named keeps its value, the token hash included; no new token is made."""
    before, _ = _guarded(store)
    after, token = ops.update_sandbox(store, "secret2", changes)
    assert token is None, label
    expected = {
        k: getattr(before, k)
        for k in ("address", "public", "mask_request_host", "max_connections", "token_hash", "created_at")
    }
    assert {k: getattr(after, k) for k in expected} == {**expected, **want}, label


def test_update_public_drops_the_token_hash(store):
    """update public=True makes the sandbox public and forgets its token hash."""
    _guarded(store)
    after, token = ops.update_sandbox(store, "secret2", {"public": True})
    assert (after.public, after.token_hash, token) == (True, None, None)
    assert after.max_connections == 5 and after.mask_request_host == "localhost:${PORT}"


def test_update_private_on_a_public_sandbox_makes_a_token_once(store):
    """A public sandbox made private gets a new token, returned once; its hash is what is stored."""
    ops.add_sandbox(store, "open", address="127.0.0.2", max_connections=3)
    after, token = ops.update_sandbox(store, "open", {"public": False})
    assert token and after.public is False and after.token_hash == ops.hash_token(token)
    assert after.max_connections == 3


@pytest.mark.parametrize(
    "label, changes, field",
    [
        ("address removed", {"address": None}, "address"),
        ("public removed", {"public": None}, "public"),
        ("public a string", {"public": "false"}, "public"),
        ("address refused", {"address": "169.254.169.254"}, "address"),
        ("limit zero", {"max_connections": 0}, "max_connections"),
        ("unknown field", {"token_hash": "x"}, "token_hash"),
    ],
)
def test_bad_updates_are_refused_and_write_nothing(store, label, changes, field):
    """A bad field is a ValidationError naming it; the record is untouched."""
    before, _ = _guarded(store)
    with pytest.raises(ValidationError) as info:
        ops.update_sandbox(store, "secret2", changes)
    assert info.value.field == field, label
    assert store.get("secret2") == before, label


def test_update_of_an_absent_sandbox_is_not_found(store):
    """update never creates: an unknown ID is SandboxNotFound."""
    with pytest.raises(SandboxNotFound):
        ops.update_sandbox(store, "ghost", {"address": "127.0.0.2"})
    assert store.get("ghost") is None


def test_rotate_refuses_a_public_sandbox_and_keeps_it_public(store):
    """Rotating a public sandbox raises SandboxIsPublic; it stays public, with no token."""
    ops.add_sandbox(store, "open", address="127.0.0.2")
    with pytest.raises(SandboxIsPublic):
        ops.rotate_token(store, "open")
    assert (store.get("open").public, store.get("open").token_hash) == (True, None)


def test_rotate_on_a_private_sandbox_replaces_the_hash_and_keeps_the_rest(store):
    """A rotation changes only the token hash."""
    before, old = _guarded(store)
    after, new = ops.rotate_token(store, "secret2")
    assert new != old and after.token_hash == ops.hash_token(new)
    assert (after.address, after.max_connections, after.mask_request_host) == ("127.0.0.2", 5, "localhost:${PORT}")


def test_put_replaces_whole_and_keeps_a_private_token(store):
    """put is full replacement (left-out fields get defaults); a sandbox staying private keeps its hash."""
    before, _ = _guarded(store)
    after, token = ops.put_sandbox(store, "secret2", address="127.0.0.3", public=False)
    assert token is None and after.token_hash == before.token_hash
    assert (after.max_connections, after.mask_request_host) == (None, None)


@pytest.mark.parametrize(
    "label, write",
    [
        ("add", lambda s: ops.add_sandbox(s, "meta", address="169.254.169.254")),
        ("put", lambda s: ops.put_sandbox(s, "meta", address="0.0.0.0")),
        ("put, IPv4-mapped", lambda s: ops.put_sandbox(s, "meta", address="::ffff:169.254.169.254")),
    ],
)
def test_writes_refuse_addresses_that_are_no_sandbox(store, label, write):
    """add and put validate the address before anything is written."""
    with pytest.raises(ValidationError) as info:
        write(store)
    assert info.value.field == "address" and store.get("meta") is None, label
