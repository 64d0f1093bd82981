"""The admin API's request and response bodies, as pydantic models.

They are the single description of the API's data: FastAPI validates request bodies against them
and derives /openapi.json from them, so the document cannot drift from the code. The rules
themselves are not repeated here: each field calls the catalog's own validator (edge.catalog.model),
the same one the CLI uses, and its reason becomes the error's reason.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema
from pydantic_core import PydanticCustomError

from edge.catalog import model
from edge.errors import ValidationError


def _check(validator):
    """A pydantic validator from a catalog validator: its ValidationError's reason becomes the message."""

    def run(value):
        try:
            return validator(value)
        except ValidationError as exc:
            raise PydanticCustomError("invalid", exc.reason) from None

    return AfterValidator(run)


def _integral(value):
    """JSON Schema counts 5.0 as an integer (2020-12, section 6.3 of the validation spec); so do we."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _entries(field: str):
    """A validator for `allow_out` / `deny_out`: the catalog's, in normal form; null passes (a patch
    empties the list with it)."""

    def run(value):
        return None if value is None else list(model.validate_list(field, value))

    return run


def _entries_schema(what: str) -> dict:
    return {
        "type": "array",
        # What the items look like; the validator decides (CIDRs such as 198.51.100.0/24 are taken too).
        "items": {
            "anyOf": [
                {"type": "string", "format": "ipv4"},
                {"type": "string", "format": "ipv6"},
                {"type": "string", "format": "hostname"},
                {"type": "string", "pattern": r"^\*\.([a-z0-9]{1,20}\.){1,4}[a-z]{2,20}$"},
            ]
        },
        "maxItems": model.MAX_ENTRIES,
        "description": f"IPs, CIDRs and domains (`example.com`; `*.example.com` for its subdomains) {what}."
        " Stored in normal form, duplicates dropped. edge/egress/README.md.",
    }


ALLOW_OUT_SCHEMA = _entries_schema("the sandbox may reach, through the egress router; wins over deny_out")
DENY_OUT_SCHEMA = _entries_schema("the sandbox may not reach, through the egress router")
INTERNET_DESCRIPTION = "False: the egress router denies every destination but those in allow_out."

ID_PATTERN = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"
# What validate_mask accepts: printable ASCII but space, '$', '/' and '@' ('!'..'~' less those), or ${PORT}.
MASK_PATTERN = r"^([!-#%-.0-?A-~]|\$\{PORT\})*$"

# The addresses the catalog refuses (model.address_refusal), in their usual spellings, so that
# /openapi.json says which IPs are no sandbox. The validator decides; this pattern only describes.
# IPv4: 0.0.0.0/8, 169.254.0.0/16, 224.0.0.0/4, 255.255.255.255. IPv6: a zone ID, ::, fe80::/10,
# ff00::/8, the ::ffff: (IPv4-mapped) forms of the IPv4 ones, and ::a.b.c.d (IPv4-compatible) but ::1.
_V4_REFUSED = r"(0\.|169\.254\.|2(2[4-9]|3[0-9])\.|255\.255\.255\.255$)"
_V4_REFUSED_HEX = r"([0-9a-fA-F]{1,2}:|[aA]9[fF][eE]:|[eE][0-9a-fA-F]{3}:|[fF]{4}:[fF]{4}$)"
REFUSED_ADDRESS_PATTERN = (
    rf"^{_V4_REFUSED}|%|^::$|^[fF][eE][89aAbB][0-9a-fA-F]:|^[fF]{{2}}[0-9a-fA-F]{{2}}:"
    rf"|^::[fF]{{4}}:({_V4_REFUSED}|{_V4_REFUSED_HEX})"
    r"|^::(?!1$)([0-9a-fA-F]{1,4}(:[0-9a-fA-F]{1,4})?|\d+\.\d+\.\d+\.\d+)$"
)
ADDRESS_SCHEMA = {
    "anyOf": [{"type": "string", "format": "ipv4"}, {"type": "string", "format": "ipv6"}],
    "not": {"type": "string", "pattern": REFUSED_ADDRESS_PATTERN},
    "description": "IPv4 or IPv6 address where the sandbox's ports are reachable from the edge. Refused, as"
    " no sandbox: unspecified (0.0.0.0/8, ::), link-local (169.254.0.0/16 with the cloud metadata"
    " address, fe80::/10), multicast, broadcast (255.255.255.255), an IPv6 zone ID, and the IPv4-mapped"
    " forms of these. Loopback is accepted.",
}

SandboxId = Annotated[
    str,
    _check(model.validate_id),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": ID_PATTERN,
            "minLength": 1,
            "maxLength": 63,
            "description": "One DNS label in lower case: letters, digits and '-', not first or last.",
        }
    ),
]


class SandboxIn(BaseModel):
    """The body of `PUT /v1/sandboxes/{id}`. Unknown fields are refused, types are not coerced."""

    model_config = ConfigDict(extra="forbid", strict=True)

    address: Annotated[
        str,
        _check(model.validate_address),
        WithJsonSchema(ADDRESS_SCHEMA),
    ]
    public: bool = Field(True, description="False: requests need the sandbox's traffic access token.")
    mask_request_host: Annotated[
        str | None,
        _check(model.validate_mask),
        WithJsonSchema(
            {
                "anyOf": [{"type": "string", "pattern": MASK_PATTERN}, {"type": "null"}],
                "description": "Host header sent upstream instead of the client's, e.g. 'localhost:${PORT}'."
                " Printable ASCII without spaces, '/', '@' or '$' other than in ${PORT}.",
            }
        ),
    ] = None
    max_connections: Annotated[int | None, BeforeValidator(_integral)] = Field(
        None, ge=1, le=1_000_000, description="Concurrent requests and tunnels at most; past it, 429."
    )
    internet_access: bool = Field(True, description=INTERNET_DESCRIPTION)
    allow_out: Annotated[list[str], _check(_entries("allow_out")), WithJsonSchema(ALLOW_OUT_SCHEMA)] = Field(
        default_factory=list
    )
    deny_out: Annotated[list[str], _check(_entries("deny_out")), WithJsonSchema(DENY_OUT_SCHEMA)] = Field(
        default_factory=list
    )


def _present(field: str, what: str):
    """A patch validator: null would remove the field, which this one cannot lose."""

    def run(value):
        if value is None:
            raise ValidationError(field, f"cannot be removed: {what}")
        return value

    return run


def _no_default(schema: dict) -> None:
    # A field left out of a patch keeps its value: there is no default to show.
    schema.pop("default", None)


class SandboxPatch(BaseModel):
    """The body of `PATCH /v1/sandboxes/{id}`: a JSON merge patch (RFC 7396).

    A field left out keeps its value; `null` removes `mask_request_host` or `max_connections`
    (no mask, no limit); `address` and `public` cannot be removed. Unknown fields are refused.
    """

    model_config = ConfigDict(extra="forbid", strict=True)

    address: Annotated[
        str | None,
        _check(_present("address", "a sandbox always has an address")),
        _check(model.validate_address),
        WithJsonSchema(ADDRESS_SCHEMA),
    ] = Field(None, json_schema_extra=_no_default)
    public: Annotated[
        bool | None,
        _check(_present("public", "give true or false")),
        WithJsonSchema({"type": "boolean", "description": "False: requests need a traffic access token."}),
    ] = Field(None, json_schema_extra=_no_default)
    mask_request_host: Annotated[
        str | None,
        _check(model.validate_mask),
        WithJsonSchema(
            {
                "anyOf": [{"type": "string", "pattern": MASK_PATTERN}, {"type": "null"}],
                "description": "Host header sent upstream instead of the client's; null removes the mask.",
            }
        ),
    ] = Field(None, json_schema_extra=_no_default)
    max_connections: Annotated[int | None, BeforeValidator(_integral)] = Field(
        None,
        ge=1,
        le=1_000_000,
        json_schema_extra=_no_default,
        description="Concurrent requests and tunnels at most; past it, 429. null removes the limit.",
    )
    internet_access: Annotated[
        bool | None,
        _check(_present("internet_access", "give true or false")),
        WithJsonSchema({"type": "boolean", "description": INTERNET_DESCRIPTION}),
    ] = Field(None, json_schema_extra=_no_default)
    allow_out: Annotated[
        list[str] | None,
        _check(_entries("allow_out")),
        WithJsonSchema({"anyOf": [ALLOW_OUT_SCHEMA, {"type": "null"}]}),
    ] = Field(None, json_schema_extra=_no_default, description="The whole list, replaced; null empties it.")
    deny_out: Annotated[
        list[str] | None,
        _check(_entries("deny_out")),
        WithJsonSchema({"anyOf": [DENY_OUT_SCHEMA, {"type": "null"}]}),
    ] = Field(None, json_schema_extra=_no_default, description="The whole list, replaced; null empties it.")

    def changes(self) -> dict:
        """The fields the patch names, null included: what `ops.update_sandbox` takes."""
        return self.model_dump(include=self.model_fields_set)


class SandboxOut(BaseModel):
    """A sandbox as the API shows it: never its token nor the token's hash."""

    id: str
    address: str
    public: bool
    mask_request_host: str | None
    max_connections: int | None
    internet_access: bool = True
    allow_out: list[str] = Field(default_factory=list)
    deny_out: list[str] = Field(default_factory=list)
    created_at: float = Field(description="Unix time, seconds.")
    updated_at: float = Field(description="Unix time, seconds.")


class SandboxPut(SandboxOut):
    traffic_access_token: str | None = Field(
        None, description="Only when a token was just made (a sandbox that became private). Shown once."
    )


class SandboxToken(SandboxOut):
    traffic_access_token: str = Field(description="The new token; the old one stops working. Shown once.")


class FieldError(BaseModel):
    field: str
    reason: str


class ErrorOut(BaseModel):
    """Every error the API answers with. Validation errors name the field and the reason."""

    code: str = Field(description="Stable short name: unauthorized, invalid, malformed_json, not_found, ...")
    message: str
    field: str | None = Field(None, description="The first invalid field (validation errors only).")
    reason: str | None = Field(None, description="Why that field is invalid.")
    errors: list[FieldError] | None = Field(None, description="Every invalid field (validation errors only).")


class Listener(BaseModel):
    kind: str
    address: str


class SandboxCounts(BaseModel):
    total: int
    private: int
    catalog_version: int


class CatalogOut(BaseModel):
    url: str = Field(description="The catalog URL this edge reads.")
    path: str | None = Field(description="The file it names, absolute, symlinks resolved.")
    version: int = Field(
        description="The catalog version every process of this edge serves (with workers: the"
        " lowest); a write is served once this reaches the version it made."
    )


class DeployOut(BaseModel):
    kind: str = Field(description="reload or upgrade")
    ok: bool
    error: str | None = Field(description="Why it was refused or failed; the serving generation stayed.")
    generation: int = Field(description="The generation serving after it.")
    at: float = Field(description="When it ended, Unix time.")


class SupervisorOut(BaseModel):
    pid: int = Field(description="The supervisor's process id (the one systemd knows; an upgrade keeps it).")
    started: float = Field(description="When the supervisor first started, Unix time.")
    generation: int = Field(description="The generation serving: 1 at start, one more per reload or upgrade.")
    generation_started: float = Field(description="When it took over, Unix time.")
    workers: int
    draining: list[int] = Field(description="Older generations whose workers still drain their connections.")
    draining_connections: int = Field(description="Client connections the draining workers still hold.")
    last_deploy: DeployOut | None


class Busy(BaseModel):
    id: str
    requests: int


# --- certificates (edge/tls) and ACME challenges -------------------------------------------------------


class CertOut(BaseModel):
    """A certificate pair the edge serves (edge.tls.certs.CertInfo)."""

    names: list[str] = Field(description="The names it serves (its subjectAltNames).")
    not_before: float = Field(description="Unix time, seconds.")
    not_after: float = Field(description="Unix time, seconds.")
    expires_in: int = Field(description="Seconds until not_after (negative: expired).")
    issuer: str
    source: str = Field(description="`acme` (obtained by edge, in the state folder) or `static` (https.certs).")
    cert: str = Field(description="Path of the PEM chain.")
    key: str = Field(description="Path of the PEM key.")
    domain: str | None = Field(description="The configured domain it belongs to, if any.")


class AcmeStateOut(BaseModel):
    """What edge's ACME task knows about a domain."""

    failures: int = Field(description="Failed orders in a row; the next try waits 1 min doubling to 1 h.")
    last_error: str | None
    last_attempt: float | None = Field(description="Unix time of the last order started.")
    last_success: float | None
    renewing: bool = Field(description="An order is asked for or running now.")
    next_attempt: float | None = Field(
        description="Unix time of the next order (renewal at 2/3 of the lifetime);"
        " null: none planned (static certificates cover the domain)."
    )


class CertDomainOut(BaseModel):
    domain: str
    certificate: CertOut | None = Field(description="The certificate serving it (static ones first); null: none yet.")
    acme: AcmeStateOut | None = Field(description="null when ACME is off.")


class CertsOut(BaseModel):
    """`GET /v1/certs`: per configured domain, and every certificate loaded."""

    acme_directory: str | None
    domains: list[CertDomainOut]
    certificates: list[CertOut]


class RenewOut(BaseModel):
    domain: str
    requested_at: float = Field(description="Unix time of the request: a later `last_attempt` is its order.")
    acme: AcmeStateOut


# lego's httpreq provider (and a certbot hook with curl) sends {"fqdn": "_acme-challenge.<name>.", "value": ...}.
CHALLENGE_FQDN_PATTERN = r"^_[aA][cC][mM][eE]-[cC][hH][aA][lL][lL][eE][nN][gG][eE]\.[!-~]+$"
CHALLENGE_VALUE_PATTERN = r"^[A-Za-z0-9_-]{1,255}$"
_LABEL_PATTERN = r"[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9])?"


def challenge_fqdn_pattern(domains: tuple[str, ...]) -> str:
    """The names `model.challenge_domain` accepts for these domains, as a JSON Schema pattern (ECMA 262
    has no case-insensitive flag: each letter is a class)."""

    def spelled(text: str) -> str:
        # Domain names hold letters, digits, '-', '_' and '.': only the dot needs an escape.
        return "".join(f"[{c.lower()}{c.upper()}]" if c.isalpha() else "\\." if c == "." else c for c in text)

    under = "|".join(spelled(model.normalize_domain(d)) for d in domains)
    return rf"^{spelled('_acme-challenge')}(\.{_LABEL_PATTERN})*\.({under})\.?$"


class ChallengeIn(BaseModel):
    """The body of `POST /present` and `POST /cleanup` (lego's httpreq DNS provider)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    fqdn: Annotated[
        str,
        WithJsonSchema(
            {
                "type": "string",
                "pattern": CHALLENGE_FQDN_PATTERN,
                "maxLength": 254,
                "description": "`_acme-challenge.` under a domain this edge serves; a trailing dot is fine.",
            }
        ),
    ]
    value: Annotated[
        str,
        WithJsonSchema(
            {
                "type": "string",
                "pattern": CHALLENGE_VALUE_PATTERN,
                "description": "The TXT value: base64url, as DNS-01 makes it.",
            }
        ),
    ]


class ChallengeOut(BaseModel):
    fqdn: str = Field(description="The name, lower case, without the trailing dot.")
    value: str
    expires_at: float | None = Field(description="Unix time the value stops being served (present only).")
    removed: bool | None = Field(description="Whether the value was there (cleanup only).")


class StatusOut(BaseModel):
    """What `edge status` prints. Counters are this process's since it started."""

    uptime_seconds: float
    listeners: list[Listener]
    sandboxes: SandboxCounts
    active_connections: int
    active_tunnels: int
    requests: dict[str, int] = Field(description="HTTP requests answered by the edge, by status class.")
    busiest: list[Busy] = Field(description="The sandboxes with the most requests, busiest first.")
    certificates: list[CertDomainOut] = Field(description="Per configured domain: its certificate and ACME state.")
    catalog: CatalogOut
    supervisor: SupervisorOut | None = Field(
        description="The generations of `edge serve`'s worker processes (edge/supervisor.py)."
    )


class Health(BaseModel):
    status: str = Field(description="ok, degraded (still serving; see reasons) or draining (stopping)")
    reasons: list[str] = Field(default=[], description="Why degraded: catalog unreadable, fleet heartbeat failing")
    catalog_stale_seconds: float = Field(default=0.0, description="Seconds since the catalog was last read")
    fleet: dict[str, Any] | None = Field(default=None, description="With a Redis catalog: this edge in the fleet")
