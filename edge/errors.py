"""The one error hierarchy of edge.

Every error that can reach a client or a user is an `EdgeError`. Each carries its own answer: the
HTTP status (`status`), a stable machine-readable `code`, and a short human message. The HTTP edge
turns any of them into a page with one function (`edge.http.pages.render_error`); the CLI turns any
of them into one line on stderr and a non-zero exit. trio and h11 exceptions are translated into
these at the boundary where they are caught, once.
"""

from __future__ import annotations

from typing import TypeVar


class EdgeError(Exception):
    """Base class. `status` is the HTTP status a client sees; `code` a stable short name."""

    status: int = 500
    code: str = "internal_error"
    #: True for errors in the client's own bytes: after answering, the connection cannot go on.
    closes_connection: bool = False
    #: Seconds a client should wait before trying again (Retry-After), when that is known.
    retry_after: int | None = None

    def __init__(self, message: str, **details: object) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


# --- configuration, command line and catalog input -------------------------------------------------


class ConfigError(EdgeError):
    """A config file, flag or environment variable has a bad value or an unknown key."""

    status = 500
    code = "config_error"


class ValidationError(EdgeError):
    """A value given by a user (CLI argument, API field) is not acceptable."""

    status = 422
    code = "invalid"

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}", field=field, reason=reason)
        self.field = field
        self.reason = reason


class CatalogError(EdgeError):
    """The catalog could not be read or written."""

    status = 503
    code = "catalog_unavailable"


class SandboxNotFound(EdgeError):
    """No sandbox with this ID is in the catalog (HTTP: E2B's 502 'The sandbox was not found')."""

    status = 502
    code = "sandbox_not_found"

    def __init__(self, sandbox_id: str, port: int | None = None) -> None:
        super().__init__("The sandbox was not found", sandbox_id=sandbox_id, port=port)
        self.sandbox_id = sandbox_id
        self.port = port


class SandboxExists(EdgeError):
    """`edge sandbox add` of an ID already in the catalog: adding never changes a sandbox; updating does."""

    status = 409
    code = "sandbox_exists"

    def __init__(self, sandbox_id: str) -> None:
        super().__init__(f"sandbox {sandbox_id!r} exists already", sandbox_id=sandbox_id)
        self.sandbox_id = sandbox_id


class SandboxIsPublic(EdgeError):
    """A token rotation asked of a public sandbox: it has no token; making it private is an update."""

    status = 409
    code = "sandbox_public"

    def __init__(self, sandbox_id: str) -> None:
        super().__init__(f"sandbox {sandbox_id!r} is public: it has no token to rotate", sandbox_id=sandbox_id)
        self.sandbox_id = sandbox_id


class AcmeNotConfigured(EdgeError):
    """A certificate renewal was asked of an edge without `[acme] directory`."""

    status = 409
    code = "acme_not_configured"

    def __init__(self) -> None:
        super().__init__("ACME is off: set [acme] directory in the config file for edge to obtain certificates")


# --- the HTTP edge ----------------------------------------------------------------------------------


class BadRequest(EdgeError):
    """The client's request cannot be served as sent. The connection is closed after the answer."""

    status = 400
    code = "bad_request"
    closes_connection = True


class BadHost(BadRequest):
    """The Host (or absolute-form target) does not name `<port>-<sandbox>.<domain>`."""

    code = "bad_host"


class HeadTooLarge(EdgeError):
    """The request head is over the size or field-count limit."""

    status = 431
    code = "request_header_fields_too_large"
    closes_connection = True


class VersionNotSupported(EdgeError):
    status = 505
    code = "http_version_not_supported"
    closes_connection = True


class NotImplementedByEdge(EdgeError):
    """A transfer coding or feature edge does not implement (h11's 501 hint)."""

    status = 501
    code = "not_implemented"
    closes_connection = True


class RequestTimeout(EdgeError):
    status = 408
    code = "request_timeout"
    closes_connection = True


class PortNotOpen(EdgeError):
    """The sandbox is known but nothing listens on the port (E2B: 502, sandbox running, port not open)."""

    status = 502
    code = "port_not_open"

    def __init__(self, sandbox_id: str, port: int) -> None:
        super().__init__(f"The sandbox is running but port {port} is not open", sandbox_id=sandbox_id, port=port)
        self.sandbox_id = sandbox_id
        self.port = port


class LoopDetected(EdgeError):
    """The request would come back to the edge: its target is one of the edge's own listeners, or it
    already passed through this edge (our Via token). Refused without connecting."""

    status = 508
    code = "loop_detected"

    def __init__(self, sandbox_id: str, port: int, why: str) -> None:
        super().__init__(f"The request would loop back to the edge ({why})", sandbox_id=sandbox_id, port=port)
        self.sandbox_id = sandbox_id
        self.port = port


class UpstreamTimeout(EdgeError):
    status = 504
    code = "upstream_timeout"

    def __init__(self, sandbox_id: str, port: int, what: str) -> None:
        super().__init__(
            f"The sandbox did not answer in time ({what}) on port {port}", sandbox_id=sandbox_id, port=port
        )
        self.sandbox_id = sandbox_id
        self.port = port


class UpstreamError(EdgeError):
    """The sandbox's server broke the protocol or the connection before a response head."""

    status = 502
    code = "upstream_error"

    def __init__(self, sandbox_id: str, port: int, reason: str) -> None:
        super().__init__(
            f"The server on port {port} of the sandbox closed the connection or sent an invalid response",
            sandbox_id=sandbox_id,
            port=port,
            reason=reason,
        )
        self.sandbox_id = sandbox_id
        self.port = port


_E = TypeVar("_E", bound=BaseException)


def first_in_group(exc: BaseException, kind: type[_E]) -> _E | None:
    """The first exception of `kind` in `exc` or, depth first, in the exception groups around it.

    trio's nurseries wrap what a child raised in groups; a server that cannot start raises from inside
    one, and the CLI wants that one error, not the groups around it."""
    if isinstance(exc, kind):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for sub in exc.exceptions:
            found = first_in_group(sub, kind)
            if found is not None:
                return found
    return None


# --- the DNS server ---------------------------------------------------------------------------------


class ZoneError(EdgeError):
    """A zone file cannot be used: `FILE:LINE: reason`. Refused at start; on reload the old zone stays."""

    status = 500
    code = "zone_error"

    def __init__(self, file: str, line: int, reason: str) -> None:
        super().__init__(f"{file}:{line}: {reason}", file=file, line=line, reason=reason)
        self.file = file
        self.line = line
        self.reason = reason


class AccessDenied(EdgeError):
    """A private sandbox was asked without a traffic access token, or with a wrong one."""

    status = 403

    def __init__(self, sandbox_id: str, port: int, missing: bool) -> None:
        message = (
            "This sandbox is private: a traffic access token is required"
            if missing
            else "The traffic access token is invalid"
        )
        super().__init__(message, sandbox_id=sandbox_id, port=port)
        self.code = "missing_token" if missing else "invalid_token"


class TooManyConnections(EdgeError):
    """The sandbox's max_connections are all in use (E2B's 429 shape)."""

    status = 429
    code = "too_many_connections"
    retry_after = 1

    def __init__(self, sandbox_id: str, port: int, limit: int) -> None:
        super().__init__(
            f"The sandbox has reached its limit of {limit} concurrent connections", sandbox_id=sandbox_id, port=port
        )
