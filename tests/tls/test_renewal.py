"""When certificates are renewed and failures retried (edge.tls.renewal): pure, table-driven."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from edge.tls.certs import CertInfo
from edge.tls.renewal import DomainState, backoff, cert_domain, next_attempt, renewal_time, report

DAY = 86400.0
T0 = 1_800_000_000.0


@pytest.mark.parametrize(
    "label, lifetime_days, renew_after_days",
    [
        ("Let's Encrypt's 90 days: 30 days before the end, as certbot", 90, 60),
        ("six-day certificates: two days before the end", 6, 4),
        ("pebble's five years", 1826, 1826 * 2 / 3),
    ],
)
def test_renewal_is_at_two_thirds_of_the_lifetime(label, lifetime_days, renew_after_days):
    assert renewal_time(T0, T0 + lifetime_days * DAY) == pytest.approx(T0 + renew_after_days * DAY)


@pytest.mark.parametrize(
    "failures, wait",
    [(0, 0), (1, 60), (2, 120), (3, 240), (4, 480), (5, 960), (6, 1920), (7, 3600), (8, 3600), (500, 3600)],
)
def test_backoff_doubles_from_a_minute_to_an_hour(failures, wait):
    assert backoff(failures) == wait


ACME_CERT = (T0, T0 + 90 * DAY)


@pytest.mark.parametrize(
    "label, acme_cert, covered, state, due",
    [
        ("no certificate at all: now", None, False, DomainState("d"), -math.inf),
        ("static certificates cover it: never", None, True, DomainState("d"), None),
        ("an ACME certificate: at 2/3 of its life", ACME_CERT, True, DomainState("d"), T0 + 60 * DAY),
        ("an ACME certificate beside static ones: still renewed", ACME_CERT, True, DomainState("d"), T0 + 60 * DAY),
        (
            "first order failed: a minute after the attempt",
            None,
            False,
            DomainState("d", failures=1, last_attempt=T0),
            T0 + 60,
        ),
        (
            "third failure in a row: four minutes after",
            None,
            False,
            DomainState("d", failures=3, last_attempt=T0),
            T0 + 240,
        ),
        (
            "a renewal failed: retried after the backoff, not at once",
            ACME_CERT,
            True,
            DomainState("d", failures=2, last_attempt=T0 + 61 * DAY),
            T0 + 61 * DAY + 120,
        ),
        ("forced: now, whatever the certificate's age", ACME_CERT, True, DomainState("d", forced=True), -math.inf),
        (
            "forced: now, even after failures",
            None,
            False,
            DomainState("d", forced=True, failures=5, last_attempt=T0),
            -math.inf,
        ),
        ("forced: now, even under static certificates", None, True, DomainState("d", forced=True), -math.inf),
    ],
)
def test_next_attempt(label, acme_cert, covered, state, due):
    """When the ACME task runs an order for a domain next."""
    assert next_attempt(acme_cert, covered, state) == due


def info(names, source, cert="/s/certs/sandbox.test/fullchain.pem", not_after=T0 + 90 * DAY) -> CertInfo:
    return CertInfo(tuple(names), T0, not_after, "Test CA", source, Path(cert), Path(cert).with_name("privkey.pem"))


@pytest.mark.parametrize(
    "label, cert, domain",
    [
        ("ACME: the folder's domain", info(["a.test"], "acme"), "sandbox.test"),
        ("static with the wildcard", info(["*.b.test"], "static", "/etc/b.pem"), "b.test"),
        ("static with the apex", info(["b.test"], "static", "/etc/b.pem"), "b.test"),
        ("static for other names", info(["www.c.test"], "static", "/etc/c.pem"), None),
    ],
)
def test_a_certificate_belongs_to_its_domain(label, cert, domain):
    assert cert_domain(cert, ["sandbox.test", "b.test"]) == domain


def test_report_names_the_serving_certificate_and_the_acme_state_per_domain():
    """Per domain: the first certificate for it (static ones are listed first: they win) and the state."""
    static = info(["*.b.test", "b.test"], "static", "/etc/b.pem", not_after=T0 + 10)
    acme = info(["*.b.test", "b.test"], "acme", "/s/certs/b.test/fullchain.pem")
    states = {"b.test": DomainState("b.test", failures=1, last_error="boom", last_attempt=T0)}
    doc = report(["b.test", "none.test"], "https://ca/dir", [static, acme], states, now=T0)
    assert doc["acme_directory"] == "https://ca/dir"
    b, none = doc["domains"]
    assert b["certificate"]["source"] == "static" and b["certificate"]["expires_in"] == 10
    assert b["acme"]["last_error"] == "boom" and b["acme"]["failures"] == 1
    assert none == {"domain": "none.test", "certificate": None, "acme": None}
    assert [c["domain"] for c in doc["certificates"]] == ["b.test", "b.test"]
