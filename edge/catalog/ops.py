"""The writes the CLI and the admin API share, so both keep the same rules.

Private sandboxes: a traffic access token is random (256 bits from `secrets`), shown once, and stored
only as its SHA-256. A fast hash is right here: the token has full entropy, so there is nothing for a
slow hash to protect, and the edge hashes the presented token on every request to a private sandbox.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import replace

from edge.catalog.model import (
    Sandbox,
    validate_address,
    validate_id,
    validate_mask,
    validate_max_connections,
)
from edge.catalog.store import Store
from edge.errors import SandboxNotFound

TOKEN_BYTES = 32


def new_token() -> str:
    return secrets.token_urlsafe(TOKEN_BYTES)


def hash_token(token: str | bytes) -> str:
    if isinstance(token, str):
        token = token.encode()
    return hashlib.sha256(token).hexdigest()


def token_matches(token: bytes, token_hash: str) -> bool:
    """Constant-time comparison of a presented token against the stored hash."""
    return hmac.compare_digest(hashlib.sha256(token).hexdigest().encode(), token_hash.encode())


def put_sandbox(
    store: Store,
    sandbox_id: str,
    *,
    address: str,
    public: bool = True,
    mask_request_host: str | None = None,
    max_connections: int | None = None,
) -> tuple[Sandbox, str | None]:
    """Create or replace a sandbox. Returns the record and, when a token was just made, the token.

    A sandbox made private gets a new token; one that was private already keeps its token (rotate it
    with `rotate_token`); one made public loses its token.
    """
    record = Sandbox(
        id=validate_id(sandbox_id),
        address=validate_address(address),
        public=bool(public),
        mask_request_host=validate_mask(mask_request_host),
        max_connections=validate_max_connections(max_connections),
    )
    token = None
    if not record.public:
        existing = store.get(record.id)
        if existing is not None and existing.token_hash:
            record = replace(record, token_hash=existing.token_hash)
        else:
            token = new_token()
            record = replace(record, token_hash=hash_token(token))
    return store.put(record), token


def rotate_token(store: Store, sandbox_id: str) -> tuple[Sandbox, str]:
    """Give a sandbox a new token (making it private); the old one stops working at once."""
    existing = store.get(validate_id(sandbox_id))
    if existing is None:
        raise SandboxNotFound(sandbox_id)
    token = new_token()
    return store.put(replace(existing, public=False, token_hash=hash_token(token))), token
