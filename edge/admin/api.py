"""The admin API as an ASGI app: routes, bearer-token auth, and the one error mapping.

Theory of operation. FastAPI (on Starlette) does the HTTP-facing work: routing, reading and
validating JSON bodies against `schemas`, and writing /openapi.json from the same models. The routes
are thin: each calls the catalog's shared write operations (`edge.catalog.ops`, the ones the CLI
uses) so the two writers keep one set of rules. Store calls are blocking SQLite calls, so those
routes are plain `def`: Starlette runs them in a worker thread (anyio, which runs on trio), and the
event loop that also serves the HTTP edge never waits on the disk.

Writes are the exception: their routes are `async` and hand the store call to a worker thread
themselves, because after the commit they must serve the new catalog in this process at once
(`AdminContext.publish`: `reload()` swaps the live snapshot, whose listeners run in the trio thread),
so the next request to this edge sees the change instead of a 502 until the next catalog poll. With
`--workers`, the answer waits (bounded) until every worker serves it too. Each write leaves one line
on the "edge.admin" logger: who (client address, the token's fingerprint, never the token), what
(method, the sandbox or name, the fields written).

Auth is a plain ASGI middleware in front of everything but /healthz, so an unauthenticated request
is refused before its body is read. Every error, whatever raised it (pydantic, Starlette's router,
the catalog), leaves through `_error()` as `{"code", "message"[, "field", "reason", "errors"]}`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import trio
from fastapi import Depends, FastAPI, Request, Security
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from edge import metrics
from edge.admin import auth, status
from edge.admin.schemas import (
    CertsOut,
    ChallengeIn,
    ChallengeOut,
    ErrorOut,
    Health,
    RenewOut,
    SandboxId,
    SandboxIn,
    SandboxOut,
    SandboxPatch,
    SandboxPut,
    SandboxToken,
    StatusOut,
)
from edge.catalog import ops
from edge.catalog.model import Sandbox, challenge_domain
from edge.catalog.store import LiveCatalog, Store, catalog_location, reload
from edge.errors import (
    AcmeNotConfigured,
    CatalogError,
    EdgeError,
    SandboxIsPublic,
    SandboxNotFound,
    ValidationError,
)
from edge.tls.renewal import report as certificates_report

log = logging.getLogger("edge.admin")

#: Seconds a write's answer waits for a supervisor's workers to serve the catalog it made (they poll
#: it every catalog_poll); past it the answer goes anyway: the write is committed.
PUBLISH_WAIT = 2.0

OPEN_PATHS = frozenset({"/healthz"})
#: lego's httpreq DNS provider authenticates with HTTP Basic: there, the admin token as the password works too.
BASIC_PATHS = frozenset({"/present", "/cleanup"})
REALM = 'Bearer realm="edge admin"'


@dataclass
class AdminContext:
    """What the routes need, handed over once (app.state.edge) instead of through globals."""

    store: Store
    live: LiveCatalog
    token: str
    #: Called at each status request: [(kind, "addr:port"), ...]; the server fills it once bound.
    listeners: Callable[[], Iterable[tuple[str, str]]] = lambda: ()
    started: float = field(default_factory=time.monotonic)
    #: Request bodies past this many bytes get 413 before any route sees them (config admin.max_body_bytes).
    max_body: int = 65536
    #: The configured domains (ACME challenges are accepted under these only).
    domains: tuple[str, ...] = ()
    #: The certificates this process serves (edge.tls.certs.CertStore), if it has any TLS.
    certs: Any = None
    #: The ACME task (edge.tls.acme.Acme) when `acme.directory` is set; it runs in this process.
    acme: Any = None
    #: The catalog's URL: /v1/status reports it with the file it names, so `edge sandbox` can tell
    #: whether it wrote the catalog this edge serves.
    catalog_url: str = ""
    #: The catalog versions other processes of this edge serve (a supervisor's HTTP workers).
    served_versions: Callable[[], list[int]] | None = None
    #: What the supervisor says of its generations (edge/supervisor.py), for /v1/status; None: no supervisor.
    supervisor: Callable[[], dict | None] | None = None

    @property
    def token_id(self) -> str:
        """A short fingerprint of the admin token for the log: which token, never the token itself."""
        return "sha256:" + hashlib.sha256(self.token.encode()).hexdigest()[:8]

    def catalog(self) -> dict:
        """The /v1/status `catalog`: its URL, its file, and the version every process of this edge serves."""
        own = self.live.snapshot.version
        version = min([own, *self.served_versions()]) if self.served_versions is not None else own
        path = catalog_location(self.catalog_url) if self.catalog_url else None
        return {"url": self.catalog_url, "path": path, "version": version}

    async def publish(self) -> None:
        """After a write: serve the catalog as it is now in this process at once; with workers, wait
        (at most PUBLISH_WAIT) until each of them serves it too."""
        try:
            await reload(self.store, self.live)
        except CatalogError as exc:  # committed, just not read back: the watcher's next poll will
            log.warning("catalog written but not read back: %s", exc.message)
            return
        if self.served_versions is None:
            return
        written = self.live.snapshot.version
        with trio.move_on_after(PUBLISH_WAIT):
            while min(self.served_versions(), default=written) < written:
                await trio.sleep(0.01)

    def certificates(self) -> dict:
        """The GET /v1/certs document (edge.tls.renewal.report)."""
        if self.acme is not None:
            return self.acme.report()
        infos = self.certs.info() if self.certs is not None else []
        return certificates_report(self.domains, "", infos, {}, time.time())


# --- errors -------------------------------------------------------------------------------------------

# FastAPI raises a bare 400 only when it cannot decode the body (e.g. not UTF-8).
_CODES = {
    400: "malformed_json",
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    413: "body_too_large",
    415: "unsupported_media_type",
}


def _error(status_code: int, code: str, message: str, headers: dict | None = None, **extra) -> JSONResponse:
    return JSONResponse({"code": code, "message": message, **extra}, status_code=status_code, headers=headers)


FieldErr = tuple[str, str]


def _field_errors(errors: list[FieldErr]) -> dict:
    first = errors[0]
    return {"field": first[0], "reason": first[1], "errors": [{"field": f, "reason": r} for f, r in errors]}


def _pydantic_errors(raw: Iterable[dict]) -> list[FieldErr]:
    out = []
    for err in raw:
        loc = [str(part) for part in err.get("loc", ())]
        # ("body", "address") -> "address"; ("path", "id") -> "id"; ("body",) -> "body"
        name = ".".join(loc[1:]) if len(loc) > 1 else (loc[0] if loc else "body")
        kind = err.get("type", "")
        if kind == "extra_forbidden":
            reason = "unknown field"
        elif kind == "missing":
            reason = "required"
        else:
            reason = err.get("msg", "invalid")
        out.append((name, reason))
    return out or [("body", "invalid")]


async def _on_validation(request: Request, exc: RequestValidationError) -> JSONResponse:
    raw = list(exc.errors())
    bad_json = next((e for e in raw if e.get("type") == "json_invalid"), None)
    if bad_json is not None:
        detail = (bad_json.get("ctx") or {}).get("error", "")
        return _error(400, "malformed_json", f"the body is not valid JSON{': ' + str(detail) if detail else ''}")
    errors = _pydantic_errors(raw)
    message = "; ".join(f"{f}: {r}" for f, r in errors)
    return _error(422, "invalid", message, **_field_errors(errors))


async def _on_edge_error(request: Request, exc: EdgeError) -> JSONResponse:
    if isinstance(exc, ValidationError):
        return _error(422, exc.code, exc.message, **_field_errors([(exc.field, exc.reason)]))
    if isinstance(exc, SandboxNotFound):
        # The HTTP edge answers an unknown sandbox with E2B's 502; for the API it is a missing resource.
        return _error(404, "not_found", f"no sandbox {exc.sandbox_id!r} in the catalog")
    if isinstance(exc, SandboxIsPublic):
        return _error(
            409,
            exc.code,
            f"{exc.message}; make it private with PATCH /v1/sandboxes/{exc.sandbox_id}"
            ' {"public": false}, whose answer carries its new token once',
        )
    if isinstance(exc, CatalogError):
        return _error(503, exc.code, exc.message)
    return _error(exc.status, exc.code, exc.message)


async def _on_http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    code = _CODES.get(exc.status_code, "error")
    headers = getattr(exc, "headers", None)
    if exc.status_code == 400:
        return _error(400, code, f"the body is not valid JSON: {exc.detail}")
    if exc.status_code == 405:
        # Starlette names only the first matching route's methods; RFC 9110 section 10.2.1 wants
        # all the methods the resource supports.
        headers = {"Allow": ", ".join(_allowed_methods(request))}
    return _error(exc.status_code, code, str(exc.detail), headers=headers)


def _allowed_methods(request: Request) -> list[str]:
    methods: set[str] = set()
    for route in request.app.router.routes:
        match, _ = route.matches({**request.scope, "method": "GET"})
        if match is not Match.NONE and getattr(route, "methods", None):
            methods |= route.methods
    return sorted(methods)


async def _on_unexpected(request: Request, exc: Exception) -> JSONResponse:
    return _error(500, "internal_error", "internal error; see the server log")


# --- the change log -----------------------------------------------------------------------------------

#: What a PUT writes: every field (those left out get their defaults).
SANDBOX_FIELDS = (
    "address",
    "public",
    "mask_request_host",
    "max_connections",
    "internet_access",
    "allow_out",
    "deny_out",
)


def _fields(record: Sandbox, names: Iterable[str], token: str | None) -> str:
    """`address="10.0.0.7" public=false ...`: the fields written, as stored (JSON values); never a token."""
    parts = [f"{name}={json.dumps(getattr(record, name))}" for name in names]
    if token:
        parts.append("new traffic access token")
    return " ".join(parts) or "nothing"


def _audit(request: Request, method: str, what: str, detail: str) -> None:
    """One line per change: what changed, and who asked: the client's address and a fingerprint of the
    token it presented (which token, after the admin token was changed; never the token)."""
    client = request.client
    who = f"{client.host}:{client.port}" if client is not None else "an unknown client"
    log.info("change: %s %s: %s; by %s with token %s", method, what, detail, who, _ctx(request).token_id)


# --- auth ---------------------------------------------------------------------------------------------


class BearerAuth:
    """ASGI middleware: `Authorization: Bearer <token>` on every path but OPEN_PATHS (RFC 6750)."""

    def __init__(self, app, token: str) -> None:
        self.app = app
        self.token = token

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            return await self.app(scope, receive, send)
        header = next((v for k, v in scope["headers"] if k == b"authorization"), None)
        presented = auth.bearer(header)
        if presented is None and scope["path"] in BASIC_PATHS:
            presented = auth.basic_password(header)
        if presented is None:
            response = _error(401, "unauthorized", "missing bearer token", headers={"WWW-Authenticate": REALM})
        elif not auth.matches(presented, self.token):
            response = _error(
                401,
                "unauthorized",
                "invalid bearer token",
                headers={"WWW-Authenticate": f'{REALM}, error="invalid_token"'},
            )
        else:
            return await self.app(scope, receive, send)
        await response(scope, receive, send)


class BodyLimit:
    """ASGI middleware: a request body past `limit` bytes is answered 413 body_too_large, unread.

    A declared Content-Length past the limit is refused at once; a body without one (chunked) is read
    up to the limit and handed on whole, so a route never sees a body larger than the limit. Runs
    inside BearerAuth: without the token, nothing of the body is read.
    """

    def __init__(self, app, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = next((v for k, v in scope["headers"] if k == b"content-length"), None)
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            return await self._refuse(scope, receive, send)
        chunks, total = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client left: let the app see it as usual
                first = message
                break
            body = message.get("body", b"")
            total += len(body)
            if total > self.limit:
                return await self._refuse(scope, receive, send)
            chunks.append(body)
            if not message.get("more_body", False):
                first = {"type": "http.request", "body": b"".join(chunks), "more_body": False}
                break
        handed = False

        async def replay():
            nonlocal handed
            if not handed:
                handed = True
                return first
            return await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, scope, receive, send) -> None:
        response = _error(
            413,
            "body_too_large",
            f"the request body is larger than {self.limit} bytes",
            headers={"Connection": "close"},
        )
        await response(scope, receive, send)


# --- the app ------------------------------------------------------------------------------------------

_E = {"model": ErrorOut}
_AUTH: dict[int | str, dict[str, Any]] = {401: {**_E, "description": "No bearer token, or a wrong one"}}
_INVALID = {
    400: {**_E, "description": "The body is not valid JSON"},
    422: {**_E, "description": "A field is invalid: `field` and `reason` say which and why"},
    413: {**_E, "description": "The body is larger than admin.max_body_bytes"},
}
_MISSING = {404: {**_E, "description": "No sandbox with this ID"}}
_MEDIA = {415: {**_E, "description": "The body is declared as a type other than JSON (PATCH: or merge patch)"}}
_PUBLIC = {409: {**_E, "description": "The sandbox is public: it has no token (code `sandbox_public`)"}}
# PATCH takes RFC 7396's own media type as well as plain JSON; both carry the same document.
_MERGE_PATCH = {
    "requestBody": {
        "content": {"application/merge-patch+json": {"schema": {"$ref": "#/components/schemas/SandboxPatch"}}}
    }
}
_STORE = {503: {**_E, "description": "The catalog cannot be read or written"}}

# Registers the security scheme in /openapi.json; BearerAuth does the checking.
_bearer = HTTPBearer(
    auto_error=False, description="The admin token (config admin.token, EDGE_ADMIN_TOKEN or <state_dir>/admin-token)"
)


def _ctx(request: Request) -> AdminContext:
    return request.app.state.edge


PUT_TYPES = ("application/json",)
#: RFC 7396's own media type, and plain JSON for clients that know no other.
PATCH_TYPES = ("application/merge-patch+json", "application/json")


def _body_types(*allowed: str, patch: bool = False):
    """A dependency: a body not declared as one of `allowed` is 415, before the body is validated.

    FastAPI reads a body as JSON only when its Content-Type says so; anything else (curl -d sends a
    form type) would otherwise fail as "not an object", which hides the cause. A 415 to a PATCH
    names the patch formats in Accept-Patch (RFC 5789 section 3.1).
    """

    def check(request: Request) -> None:
        declared = (request.headers.get("content-type") or "").split(";", 1)[0].strip()
        if declared.lower() in allowed:
            return
        headers = {"Accept-Patch": ", ".join(allowed)} if patch else None
        sent = f"not {declared}" if declared else "declared with a Content-Type header"
        raise StarletteHTTPException(415, f"the body must be {' or '.join(allowed)}, {sent}", headers=headers)

    return Depends(check)


def create_app(ctx: AdminContext) -> FastAPI:
    app = FastAPI(
        title="edge admin API",
        version="1",
        description="Manage the sandbox catalog and watch the edge. Every path but /healthz needs the bearer token.",
        docs_url=None,
        redoc_url=None,
    )
    app.state.edge = ctx
    # Starlette types a handler as taking any Exception; each of these gets only the class it is added for.
    app.add_exception_handler(RequestValidationError, _on_validation)  # type: ignore[arg-type]
    app.add_exception_handler(EdgeError, _on_edge_error)  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, _on_http_error)  # type: ignore[arg-type]
    app.add_exception_handler(Exception, _on_unexpected)
    # Starlette runs the last added outermost: the token is checked before any of the body is read.
    app.add_middleware(BodyLimit, limit=ctx.max_body)
    app.add_middleware(BearerAuth, token=ctx.token)

    # Routes live on the app itself (not an included router) so the 405 handler can list their methods.
    def api(method: str, path: str, *, responses: dict | None = None, dependencies: list | None = None, **kw):
        return app.api_route(
            path,
            methods=[method],
            dependencies=[Security(_bearer), *(dependencies or [])],
            responses={**_AUTH, **(responses or {})},
            **kw,
        )

    def written(record, token: str | None) -> Response:
        doc = record.to_json()
        if token:
            doc["traffic_access_token"] = token
        return JSONResponse(doc)

    @api(
        "PUT",
        "/v1/sandboxes/{id}",
        response_model=SandboxPut,
        responses={**_INVALID, **_MEDIA, **_STORE},
        dependencies=[_body_types(*PUT_TYPES)],
        summary="Create or replace a sandbox whole",
        description="Full replacement: a field left out gets its default (`public` true, no mask, no limit),"
        " not its old value; PATCH changes only the fields it names. A sandbox made private gets a"
        " `traffic_access_token`, shown in this response only. One that was private already keeps its token"
        " (rotate it with POST .../token).",
    )
    async def put_sandbox(id: SandboxId, body: SandboxIn, request: Request) -> Response:
        ctx = _ctx(request)
        record, token = await trio.to_thread.run_sync(partial(ops.put_sandbox, ctx.store, id, **body.model_dump()))
        _audit(request, "PUT", f"sandbox {record.id}", _fields(record, SANDBOX_FIELDS, token))
        await ctx.publish()
        return written(record, token)

    @api(
        "PATCH",
        "/v1/sandboxes/{id}",
        response_model=SandboxPut,
        responses={**_MISSING, **_INVALID, **_MEDIA, **_STORE},
        dependencies=[_body_types(*PATCH_TYPES, patch=True)],
        openapi_extra=_MERGE_PATCH,
        summary="Change some fields of a sandbox (JSON merge patch)",
        description="RFC 7396: a field left out keeps its value; `null` removes `mask_request_host` or"
        " `max_connections`; `address` and `public` cannot be removed. Content type `application/json`"
        " or `application/merge-patch+json`. The read and the write are one catalog transaction, so"
        ' concurrent patches of different fields all land. `{"public": false}` on a public sandbox answers'
        ' its new `traffic_access_token`, shown this once; `{"public": true}` forgets the token.',
    )
    async def patch_sandbox(id: SandboxId, body: SandboxPatch, request: Request) -> Response:
        ctx = _ctx(request)
        changes = body.changes()
        record, token = await trio.to_thread.run_sync(ops.update_sandbox, ctx.store, id, changes)
        _audit(request, "PATCH", f"sandbox {record.id}", _fields(record, changes, token))
        await ctx.publish()
        return written(record, token)

    @api("GET", "/v1/sandboxes", response_model=list[SandboxOut], responses=_STORE, summary="List sandboxes")
    def list_sandboxes(request: Request) -> Response:
        return JSONResponse([s.to_json() for s in _ctx(request).store.list()])

    @api(
        "GET",
        "/v1/sandboxes/{id}",
        response_model=SandboxOut,
        responses={**_MISSING, 422: _INVALID[422], **_STORE},
        summary="Show one sandbox",
    )
    def get_sandbox(id: SandboxId, request: Request) -> Response:
        found = _ctx(request).store.get(id)
        if found is None:
            raise SandboxNotFound(id)
        return JSONResponse(found.to_json())

    @api(
        "DELETE",
        "/v1/sandboxes/{id}",
        status_code=204,
        response_class=Response,
        responses={**_MISSING, 422: _INVALID[422], **_STORE},
        summary="Remove a sandbox",
    )
    async def delete_sandbox(id: SandboxId, request: Request) -> Response:
        ctx = _ctx(request)
        if not await trio.to_thread.run_sync(ctx.store.delete, id):
            raise SandboxNotFound(id)
        _audit(request, "DELETE", f"sandbox {id}", "removed")
        await ctx.publish()
        return Response(status_code=204)

    @api(
        "POST",
        "/v1/sandboxes/{id}/token",
        response_model=SandboxToken,
        responses={**_MISSING, **_PUBLIC, 422: _INVALID[422], **_STORE},
        summary="Rotate a private sandbox's traffic access token",
        description="The old token stops working on every edge within a catalog poll. A public sandbox is"
        ' 409 `sandbox_public`: make it private with PATCH {"public": false}.',
    )
    async def rotate_token(id: SandboxId, request: Request) -> Response:
        ctx = _ctx(request)
        record, token = await trio.to_thread.run_sync(ops.rotate_token, ctx.store, id)
        _audit(request, "POST", f"sandbox {record.id}", "new traffic access token (the old one stops)")
        await ctx.publish()
        return JSONResponse({**record.to_json(), "traffic_access_token": token})

    @api("GET", "/v1/status", response_model=StatusOut, summary="What `edge status` prints")
    async def get_status(request: Request) -> Response:
        ctx = _ctx(request)
        doc = status.build(
            ctx.live.snapshot,
            metrics.combined(),
            ctx.listeners(),
            time.monotonic() - ctx.started,
            certificates=ctx.certificates()["domains"] if ctx.certs or ctx.acme else [],
            catalog=ctx.catalog(),
            supervisor=ctx.supervisor() if ctx.supervisor is not None else None,
        )
        return JSONResponse(doc)

    # --- certificates and ACME challenges (edge/tls/README.md) ----------------------------------------

    @api(
        "GET",
        "/v1/certs",
        response_model=CertsOut,
        summary="Certificates and the ACME state of each domain",
        description="Per configured domain: the certificate serving it and, with ACME on, the task's state"
        " (next renewal, failures, last error); and every certificate loaded, static and ACME.",
    )
    async def get_certs(request: Request) -> Response:
        return JSONResponse(_ctx(request).certificates())

    @api(
        "POST",
        "/v1/certs/{domain}/renew",
        status_code=202,
        response_model=RenewOut,
        responses={
            409: {**_E, "description": "ACME is off (code `acme_not_configured`)"},
            422: {**_E, "description": "Not a configured domain"},
        },
        summary="Renew a domain's certificate now",
        description="The ACME task starts an order for the domain at once, whatever its certificate's age; the"
        " answer comes before the order ends: GET /v1/certs shows its outcome (`last_attempt` after"
        " `requested_at`, then `last_error` or a new certificate).",
    )
    async def renew_cert(domain: str, request: Request) -> Response:
        ctx = _ctx(request)
        if ctx.acme is None:
            raise AcmeNotConfigured()
        requested = time.time()
        state = ctx.acme.request_renewal(domain)
        _audit(request, "POST", f"certificate {state.domain}", "renewal requested")
        return JSONResponse(
            {"domain": state.domain, "requested_at": requested, "acme": state.to_json()}, status_code=202
        )

    _challenge_docs = (
        " lego's httpreq DNS provider (HTTPREQ_ENDPOINT) and certbot hooks use it; the admin token"
        " goes as the bearer token or as the Basic auth password (HTTPREQ_PASSWORD)."
    )

    @api(
        "POST",
        "/present",
        response_model=ChallengeOut,
        responses={**_INVALID, **_MEDIA, **_STORE},
        dependencies=[_body_types(*PUT_TYPES)],
        summary="Serve an ACME DNS-01 TXT value",
        description="edge's DNS serves `value` as a TXT record at `fqdn` (`_acme-challenge.` under a configured"
        " domain), beside other values there, for an hour at most, on every edge sharing the catalog."
        + _challenge_docs,
    )
    async def present(body: ChallengeIn, request: Request) -> Response:
        ctx = _ctx(request)
        held = await trio.to_thread.run_sync(ops.present_challenge, ctx.store, ctx.domains, body.fqdn, body.value)
        _audit(request, "POST", f"challenge {held.fqdn}", "TXT value presented")
        await ctx.publish()
        return JSONResponse({"fqdn": held.fqdn, "value": held.value, "expires_at": held.expires_at, "removed": None})

    @api(
        "POST",
        "/cleanup",
        response_model=ChallengeOut,
        responses={**_INVALID, **_MEDIA, **_STORE},
        dependencies=[_body_types(*PUT_TYPES)],
        summary="Stop serving an ACME DNS-01 TXT value",
        description="A value that is not there (removed already, or expired) is not an error: `removed` says"
        " which." + _challenge_docs,
    )
    async def cleanup(body: ChallengeIn, request: Request) -> Response:
        ctx = _ctx(request)
        removed = await trio.to_thread.run_sync(ops.cleanup_challenge, ctx.store, ctx.domains, body.fqdn, body.value)
        name, _ = challenge_domain(body.fqdn, ctx.domains)
        if removed:
            _audit(request, "POST", f"challenge {name}", "TXT value removed")
            await ctx.publish()
        return JSONResponse({"fqdn": name, "value": body.value, "expires_at": None, "removed": removed})

    @api(
        "GET",
        "/metrics",
        response_class=Response,
        responses={
            200: {
                "content": {"text/plain": {"schema": {"type": "string"}}},
                "description": "Prometheus text exposition",
            }
        },
        summary="Prometheus metrics",
    )
    async def get_metrics() -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    @app.get(
        "/healthz",
        response_model=Health,
        responses={503: {"model": Health, "description": "Draining: this edge is stopping"}},
        summary="Liveness; needs no token",
        description="200 `ok`, or 200 `degraded` with `reasons` (the catalog store cannot be read: the edge"
        " serves its last snapshot; the fleet heartbeat fails); 503 `draining` once the edge is stopping.",
    )
    async def healthz() -> Response:
        from edge.catalog.fleet import health_report

        status_code, doc = health_report(ctx.live)
        return JSONResponse(doc, status_code=status_code)

    _describe_challenge_names(app, ctx.domains)
    return app


def _describe_challenge_names(app: FastAPI, domains: tuple[str, ...]) -> None:
    """/openapi.json: the fqdn of POST /present and /cleanup matches this edge's own domains."""
    if not domains:
        return
    from edge.admin.schemas import challenge_fqdn_pattern

    made = app.openapi

    def openapi() -> dict[str, Any]:
        doc = made()  # FastAPI keeps it (app.openapi_schema): this runs once
        fqdn = doc["components"]["schemas"]["ChallengeIn"]["properties"]["fqdn"]
        fqdn["pattern"] = challenge_fqdn_pattern(domains)
        return doc

    app.openapi = openapi  # type: ignore[method-assign]
