"""The admin API's request and response bodies, as pydantic models.

They are the single description of the API's data: FastAPI validates request bodies against them
and derives /openapi.json from them, so the document cannot drift from the code. The rules
themselves are not repeated here: each field calls the catalog's own validator (edge.catalog.model),
the same one the CLI uses, and its reason becomes the error's reason.
"""

from __future__ import annotations

from typing import Annotated

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


ID_PATTERN = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"
# What validate_mask accepts: printable ASCII but space, '$', '/' and '@' ('!'..'~' less those), or ${PORT}.
MASK_PATTERN = r"^([!-#%-.0-?A-~]|\$\{PORT\})*$"

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
        WithJsonSchema(
            {
                "anyOf": [{"type": "string", "format": "ipv4"}, {"type": "string", "format": "ipv6"}],
                "description": "IPv4 or IPv6 address where the sandbox's ports are reachable from the edge.",
            }
        ),
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


class SandboxOut(BaseModel):
    """A sandbox as the API shows it: never its token nor the token's hash."""

    id: str
    address: str
    public: bool
    mask_request_host: str | None
    max_connections: int | None
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


class Busy(BaseModel):
    id: str
    requests: int


class StatusOut(BaseModel):
    """What `edge status` prints. Counters are this process's since it started."""

    uptime_seconds: float
    listeners: list[Listener]
    sandboxes: SandboxCounts
    active_connections: int
    active_tunnels: int
    requests: dict[str, int] = Field(description="HTTP requests answered by the edge, by status class.")
    busiest: list[Busy] = Field(description="The sandboxes with the most requests, busiest first.")


class Health(BaseModel):
    status: str
