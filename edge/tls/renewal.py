"""When a domain's certificate is due, and what is known about each domain. Pure: the time is passed in.

A domain is one of the configured `domains`; its certificate serves `<domain>` and `*.<domain>`.

  - ACME certificate on disk (`<state_dir>/certs/<domain>/`): renewed at two thirds of its lifetime
    (`renewal_time`: for a 90-day certificate, 30 days before it expires, as certbot does).
  - no ACME certificate, but static ones (`[https] certs`) cover both names: nothing to do; those are
    the operator's to renew (edge reloads them when their files change).
  - neither: obtain one now.

A failure is retried after `backoff(failures)`: one minute, doubling, at most an hour, so a CA that
is down or a DNS setup that is wrong is not hammered, and a fix is picked up within the hour. A
forced renewal (`edge cert renew`, POST /v1/certs/{domain}/renew) is due at once, whatever the rest.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from edge.tls.certs import CertInfo

#: A certificate is renewed when this fraction of its lifetime has passed.
RENEW_AT = 2 / 3
#: Seconds before the first retry after a failure; doubled per failure in a row, up to BACKOFF_MAX.
BACKOFF_FIRST = 60.0
BACKOFF_MAX = 3600.0


def renewal_time(not_before: float, not_after: float) -> float:
    """When a certificate valid from `not_before` to `not_after` (Unix seconds) is renewed."""
    return not_before + (not_after - not_before) * RENEW_AT


def backoff(failures: int) -> float:
    """Seconds to wait after `failures` failures in a row (>= 1): 60, 120, 240, ... at most 3600."""
    if failures < 1:
        return 0.0
    return min(BACKOFF_FIRST * 2.0 ** min(failures - 1, 32), BACKOFF_MAX)


@dataclass
class DomainState:
    """What the ACME task knows about one domain; the admin API and `edge status` show it."""

    domain: str
    failures: int = 0
    last_error: str | None = None
    last_attempt: float | None = None
    last_success: float | None = None
    #: A renewal was asked for (edge cert renew) and has not started yet.
    forced: bool = False
    #: An ACME order is running now.
    renewing: bool = False
    #: When the task acts next (None: nothing to do, e.g. static certificates cover the domain).
    next_attempt: float | None = None

    def to_json(self) -> dict[str, object]:
        return {
            "failures": self.failures,
            "last_error": self.last_error,
            "last_attempt": self.last_attempt,
            "last_success": self.last_success,
            "renewing": self.renewing or self.forced,
            "next_attempt": self.next_attempt,
        }


def next_attempt(acme_cert: tuple[float, float] | None, covered: bool, state: DomainState) -> float | None:
    """When to run ACME for a domain next (a time in the past: now), or None for never.

    `acme_cert`: (not_before, not_after) of the domain's ACME certificate, None when there is none;
    `covered`: other (static) certificates serve both names."""
    if state.forced:
        return float("-inf")
    retry = state.last_attempt + backoff(state.failures) if state.failures and state.last_attempt is not None else None
    if acme_cert is not None:
        due = renewal_time(*acme_cert)
    elif covered:
        return None
    else:
        due = float("-inf")
    return due if retry is None else max(due, retry)


def cert_domain(info: CertInfo, domains: Iterable[str]) -> str | None:
    """The configured domain a certificate belongs to: its ACME folder's name, else the first domain
    whose name or wildcard it serves; None for a certificate of other names."""
    if info.source == "acme":
        return info.cert.parent.name
    names = set(info.names)
    return next((d for d in domains if d in names or "*." + d in names), None)


def report(
    domains: Iterable[str], directory: str, infos: Iterable[CertInfo], states: Mapping[str, DomainState], now: float
) -> dict[str, Any]:
    """The certificates document (GET /v1/certs, `edge status`, `edge cert list`).

    `domains`: one entry per configured domain: the certificate serving it (a static one first, as
    the TLS listener picks), seconds to expiry, and the ACME task's state when ACME is on.
    `certificates`: every certificate loaded, with the domain it belongs to."""
    infos = list(infos)
    domains = list(domains)
    certificates = []
    for info in infos:
        doc = info.to_json()
        doc["domain"] = cert_domain(info, domains)
        doc["expires_in"] = round(info.not_after - now)
        certificates.append(doc)
    rows = []
    for domain in domains:
        serving = next((c for c in certificates if c["domain"] == domain), None)
        row: dict[str, object] = {"domain": domain, "certificate": serving}
        state = states.get(domain)
        row["acme"] = state.to_json() if state is not None else None
        rows.append(row)
    return {"acme_directory": directory or None, "domains": rows, "certificates": certificates}
