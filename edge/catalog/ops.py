"""The writes the CLI and the admin API share, so both keep the same rules.

Four writes, each one transaction (`Store.modify`: the record is read and written under one lock, so
two writers cannot lose each other's fields):

    add_sandbox     create; an ID already there is an error (`edge sandbox add`)
    put_sandbox     create or replace whole: fields left out get their defaults (PUT)
    update_sandbox  change only the fields named (`edge sandbox update`, PATCH)
    rotate_token    a new token for a private sandbox; a public one is an error

Every address, mask, limit and outbound policy entry is validated here, before the transaction (edge.catalog.model);
records already in a catalog are loaded as they are.

ACME DNS-01 challenges (`present_challenge`, `cleanup_challenge`: edge's own ACME task, the admin API's
POST /present and /cleanup) are TXT values at `_acme-challenge.<name>` under a configured domain, each
served until it is removed or its lifetime (an hour) has passed.

Private sandboxes: a traffic access token is random (256 bits from `secrets`), shown once, and stored
only as its SHA-256. A fast hash is right here: the token has full entropy, so there is nothing for a
slow hash to protect, and the edge hashes the presented token on every request to a private sandbox.
A sandbox that becomes private gets a new token; one that stays private keeps its token; one that
becomes public loses it.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import Any

from edge.catalog.model import (
    CHALLENGE_LIFETIME,
    Challenge,
    Sandbox,
    challenge_domain,
    validate_address,
    validate_challenge_value,
    validate_id,
    validate_list,
    validate_mask,
    validate_max_connections,
    validate_policy,
)
from edge.catalog.store import Store
from edge.errors import SandboxExists, SandboxIsPublic, SandboxNotFound, ValidationError

TOKEN_BYTES = 32
#: Values served at one name at most: an ACME order for `D` and `*.D` needs two; a few clients at once, a few more.
MAX_CHALLENGES_PER_NAME = 16


def new_token() -> str:
    return secrets.token_urlsafe(TOKEN_BYTES)


def hash_token(token: str | bytes) -> str:
    if isinstance(token, str):
        token = token.encode()
    return hashlib.sha256(token).hexdigest()


def token_matches(token: bytes, token_hash: str) -> bool:
    """Constant-time comparison of a presented token against the stored hash."""
    return hmac.compare_digest(hashlib.sha256(token).hexdigest().encode(), token_hash.encode())


def _validate(field: str, value: object) -> Any:  # the field's own type: str, bool, int or None
    """One field's value, validated and normalized. None removes a mask or a limit; `address` and
    `public` always have a value."""
    if field == "address":
        if value is None:
            raise ValidationError("address", "cannot be removed: a sandbox always has an address")
        return validate_address(value)
    if field == "public":
        if value is None:
            raise ValidationError("public", "cannot be removed: give true or false")
        if not isinstance(value, bool):
            raise ValidationError("public", f"{value!r} is not true or false")
        return value
    if field == "mask_request_host":
        return validate_mask(value)
    if field == "max_connections":
        return validate_max_connections(value)
    if field == "internet_access":
        if not isinstance(value, bool):
            raise ValidationError("internet_access", f"{value!r} is not true or false")
        return value
    if field in ("allow_out", "deny_out"):
        return validate_list(field, () if value is None else value)  # null empties the list
    raise ValidationError(field, "unknown field")


def _with_token(record: Sandbox, old: Sandbox | None) -> tuple[Sandbox, str | None]:
    """The record's token hash after a write, and the token when one was just made."""
    if record.public:
        return replace(record, token_hash=None), None
    if old is not None and not old.public and old.token_hash:
        return replace(record, token_hash=old.token_hash), None
    token = new_token()
    return replace(record, token_hash=hash_token(token)), token


def _new_record(
    sandbox_id: str,
    address: str,
    public: bool,
    mask_request_host: str | None,
    max_connections: int | None,
    internet_access: bool,
    allow_out: Iterable[str],
    deny_out: Iterable[str],
) -> Sandbox:
    policy = validate_policy(internet_access, allow_out, deny_out)
    return Sandbox(
        id=validate_id(sandbox_id),
        address=validate_address(address),
        public=_validate("public", public),
        mask_request_host=validate_mask(mask_request_host),
        max_connections=validate_max_connections(max_connections),
        internet_access=policy.internet_access,
        allow_out=policy.allow_out,
        deny_out=policy.deny_out,
    )


def _written(store: Store, sandbox_id: str, change) -> tuple[Sandbox, str | None]:
    """Run `change(old) -> (record or None, token)` in one store transaction."""
    made: list[str | None] = [None]

    def run(old: Sandbox | None) -> Sandbox | None:
        record, made[0] = change(old)
        return record

    stored = store.modify(sandbox_id, run)
    assert stored is not None  # every change here either writes or raises when there is no record
    return stored, made[0]


def add_sandbox(
    store: Store,
    sandbox_id: str,
    *,
    address: str,
    public: bool = True,
    mask_request_host: str | None = None,
    max_connections: int | None = None,
    internet_access: bool = True,
    allow_out: Iterable[str] = (),
    deny_out: Iterable[str] = (),
) -> tuple[Sandbox, str | None]:
    """Create a sandbox; one with this ID already is `SandboxExists` and stays as it was."""
    record = _new_record(
        sandbox_id, address, public, mask_request_host, max_connections, internet_access, allow_out, deny_out
    )

    def change(old: Sandbox | None):
        if old is not None:
            raise SandboxExists(record.id)
        return _with_token(record, None)

    return _written(store, record.id, change)


def put_sandbox(
    store: Store,
    sandbox_id: str,
    *,
    address: str,
    public: bool = True,
    mask_request_host: str | None = None,
    max_connections: int | None = None,
    internet_access: bool = True,
    allow_out: Iterable[str] = (),
    deny_out: Iterable[str] = (),
) -> tuple[Sandbox, str | None]:
    """Create or replace a sandbox whole: a field left out gets its default, not its old value.

    Returns the record and, when a token was just made, the token. A sandbox made private gets a new
    token; one that was private already keeps its token (rotate it with `rotate_token`); one made
    public loses it.
    """
    record = _new_record(
        sandbox_id, address, public, mask_request_host, max_connections, internet_access, allow_out, deny_out
    )
    return _written(store, record.id, lambda old: _with_token(record, old))


def update_sandbox(store: Store, sandbox_id: str, changes: Mapping[str, object]) -> tuple[Sandbox, str | None]:
    """Change only the fields in `changes` (a JSON merge patch, RFC 7396: None removes a field).

    `mask_request_host` and `max_connections` may be removed (None); `address` and `public` may not.
    No changes: the record as it is, nothing written. An absent sandbox is `SandboxNotFound`. A stored
    address that is refused today must be replaced in the same update.
    """
    sandbox_id = validate_id(sandbox_id)
    fields = {name: _validate(name, value) for name, value in changes.items()}

    def change(old: Sandbox | None):
        if old is None:
            raise SandboxNotFound(sandbox_id)
        if not fields:
            return None, None
        if "address" not in fields:
            # A record loaded leniently may hold an address refused since: a write never keeps one.
            validate_address(old.address)
        return _with_token(replace(old, **fields), old)

    return _written(store, sandbox_id, change)


def rotate_token(store: Store, sandbox_id: str) -> tuple[Sandbox, str]:
    """Give a private sandbox a new token; the old one stops working at once.

    A public sandbox is `SandboxIsPublic`: making it private is an update (`update --private`, or
    PATCH {"public": false}), never a side effect of a rotation.
    """
    sandbox_id = validate_id(sandbox_id)

    def change(old: Sandbox | None):
        if old is None:
            raise SandboxNotFound(sandbox_id)
        if old.public:
            raise SandboxIsPublic(sandbox_id)
        token = new_token()
        return replace(old, token_hash=hash_token(token)), token

    record, token = _written(store, sandbox_id, change)
    assert token is not None
    return record, token


def present_challenge(
    store: Store,
    domains: Iterable[str],
    fqdn: object,
    value: object,
    *,
    lifetime: float = CHALLENGE_LIFETIME,
    now: float | None = None,
) -> Challenge:
    """Serve `value` as a TXT record at `fqdn` (`_acme-challenge.` under a configured domain) for
    `lifetime` seconds, beside any other values there. Presenting the same value again renews it."""
    name, _ = challenge_domain(fqdn, tuple(domains))
    value = validate_challenge_value(value)
    now = time.time() if now is None else now
    others = [c for c in store.challenges() if c.fqdn == name and c.value != value]
    if len(others) >= MAX_CHALLENGES_PER_NAME:
        raise ValidationError("fqdn", f"{name} holds {len(others)} values already; clean some up first")
    challenge = Challenge(name, value, now + lifetime)
    store.add_challenge(challenge)
    return challenge


def cleanup_challenge(store: Store, domains: Iterable[str], fqdn: object, value: object) -> bool:
    """Stop serving `value` at `fqdn`; False when it was not there (already gone: not an error)."""
    name, _ = challenge_domain(fqdn, tuple(domains))
    return store.remove_challenge(name, validate_challenge_value(value))
