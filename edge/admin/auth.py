"""The admin API's bearer token: where it comes from, and how a presented one is checked.

One function, `resolve_token`, answers "which token?" for both the server and the CLI, so they can
never disagree. Sources, first wins:

1. `admin.token` in the config file;
2. the environment variable EDGE_ADMIN_TOKEN;
3. the file `<state_dir>/admin-token`, generated at the server's first start (256 random bits,
   mode 0600, written aside and linked into place so two processes starting at once agree on one token).

The server refuses a non-loopback listen address unless the token came from 1 or 2: a token that only
exists in a file on the server's disk was never handed to anyone on purpose, and an admin API on a
public address must not be protected by an accident. The CLI never generates a token; it only reads.

Tokens are compared with `hmac.compare_digest`, in time independent of where they first differ.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import ipaddress
import os
import secrets
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from edge.config import Config, Listen
from edge.errors import ConfigError

ENV_VAR = "EDGE_ADMIN_TOKEN"
TOKEN_FILE = "admin-token"
TOKEN_BYTES = 32


@dataclass(frozen=True)
class AdminToken:
    value: str
    #: "config", "env" or "file": where the token was found (never printed with the token).
    source: str


def token_path(config: Config) -> Path:
    return Path(config.state_dir) / TOKEN_FILE


def is_loopback(listen: Listen) -> bool:
    """Every address the admin API listens on is a loopback one."""
    return all(one.host == "localhost" or ipaddress.ip_address(one.host).is_loopback for one in listen.all())


def resolve_token(config: Config, env: Mapping[str, str] | None = None, *, create: bool = False) -> AdminToken:
    """The admin token from config, env or the state file; `create` makes the file if it is missing.

    Raises ConfigError when there is no token (and `create` is false) or the file is unusable.
    """
    env = os.environ if env is None else env
    if config.admin.token:
        return AdminToken(config.admin.token, "config")
    if env.get(ENV_VAR):
        return AdminToken(env[ENV_VAR], "env")
    path = token_path(config)
    if create:
        _create(path)
    return AdminToken(_read(path), "file")


def server_token(config: Config, env: Mapping[str, str] | None = None) -> AdminToken:
    """The token the admin server uses; refuses a non-loopback address without a configured token."""
    env = os.environ if env is None else env
    if not (config.admin.token or env.get(ENV_VAR)) and not is_loopback(config.admin.listen):
        raise ConfigError(
            f"admin.listen: {config.admin.listen} is not a loopback address; set admin.token in the"
            f" config file or {ENV_VAR} before exposing the admin API"
        )
    return resolve_token(config, env, create=True)


def matches(presented: str | bytes, expected: str) -> bool:
    """Constant-time comparison of a presented bearer token with the expected one."""
    if isinstance(presented, str):
        presented = presented.encode("utf-8", "surrogateescape")
    return hmac.compare_digest(presented, expected.encode("utf-8", "surrogateescape"))


def bearer(authorization: bytes | str | None) -> bytes | None:
    """The credentials of an `Authorization: Bearer <token>` value (RFC 6750 section 2.1), else None.

    The scheme name is case-insensitive (RFC 9110 section 11.1).
    """
    if not authorization:
        return None
    if isinstance(authorization, str):
        authorization = authorization.encode("latin-1", "replace")
    scheme, _, credentials = authorization.strip().partition(b" ")
    if scheme.lower() != b"bearer" or not credentials.strip():
        return None
    return credentials.strip()


def basic_password(authorization: bytes | str | None) -> bytes | None:
    """The password of an `Authorization: Basic base64(user:password)` value (RFC 7617), else None.

    Only the ACME challenge endpoints take it (lego's httpreq provider sends Basic auth, with
    HTTPREQ_USERNAME and HTTPREQ_PASSWORD): the admin token is the password, the user name is ignored."""
    if not authorization:
        return None
    if isinstance(authorization, str):
        authorization = authorization.encode("latin-1", "replace")
    scheme, _, credentials = authorization.strip().partition(b" ")
    if scheme.lower() != b"basic":
        return None
    try:
        decoded = base64.b64decode(credentials.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    _, colon, password = decoded.partition(b":")
    return password if colon and password else None


def _create(path: Path) -> None:
    # Write a private temporary file, then link it into place: the link fails if the token file
    # exists, so concurrent first starts agree on one token and no reader sees a half-written file.
    if path.exists():
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w") as fh:
                fh.write(secrets.token_urlsafe(TOKEN_BYTES) + "\n")
            os.link(tmp, path)
        except FileExistsError:
            pass  # another process won the race: use its token
        finally:
            tmp.unlink(missing_ok=True)
    except OSError as exc:
        raise ConfigError(f"admin token file {path}: {exc.strerror}") from None


def _read(path: Path) -> str:
    try:
        mode = path.stat().st_mode
        text = path.read_text().strip()
    except FileNotFoundError:
        raise ConfigError(
            f"no admin token: {path} does not exist (start `edge serve` once, or set admin.token or {ENV_VAR})"
        ) from None
    except OSError as exc:
        raise ConfigError(f"admin token file {path}: {exc.strerror}") from None
    if stat.S_IMODE(mode) & 0o077:
        # As ssh does with private keys: a token others can read is not a secret any more.
        raise ConfigError(f"admin token file {path} is readable by others; run: chmod 600 {path}")
    if not text:
        raise ConfigError(f"admin token file {path} is empty; remove it to generate a new token")
    return text
