"""ACME challenge values in the catalog: which names are accepted, storage, expiry, the snapshot."""

from __future__ import annotations

import pytest
import trio

from edge.catalog import ops
from edge.catalog.model import Challenge, challenge_domain, validate_challenge_value
from edge.catalog.sqlite import SqliteStore
from edge.catalog.store import LiveCatalog, watch
from edge.errors import ValidationError

DOMAINS = ("sandbox.test", "a.sandbox.test", "example.com")
VALUE = "LPsIwTo7o8BoG0-vjCyGQGBWSVIPxI-i_X336eUOQZo"  # 43 base64url characters, like a real one


@pytest.mark.parametrize(
    "label, fqdn, name, domain",
    [
        ("the domain's own name", "_acme-challenge.sandbox.test", "_acme-challenge.sandbox.test", "sandbox.test"),
        ("trailing dot, upper case", "_ACME-Challenge.Sandbox.Test.", "_acme-challenge.sandbox.test", "sandbox.test"),
        ("a name below the domain", "_acme-challenge.x.sandbox.test", "_acme-challenge.x.sandbox.test", "sandbox.test"),
        (
            "the longest configured domain wins",
            "_acme-challenge.a.sandbox.test",
            "_acme-challenge.a.sandbox.test",
            "a.sandbox.test",
        ),
    ],
)
def test_challenge_names_under_a_configured_domain_are_accepted(label, fqdn, name, domain):
    """`_acme-challenge.` under a configured domain: normalized, with its domain."""
    assert challenge_domain(fqdn, DOMAINS) == (name, domain)


@pytest.mark.parametrize(
    "label, fqdn",
    [
        ("another domain", "_acme-challenge.evil.test"),
        ("a suffix that is not a label boundary", "_acme-challenge.xsandbox.test"),
        ("not a challenge name", "www.sandbox.test"),
        ("the challenge label not first", "x._acme-challenge.sandbox.test"),
        ("the domain itself", "sandbox.test"),
        ("a bare label", "_acme-challenge"),
        ("not a name", "_acme-challenge..sandbox.test"),
        ("not ASCII", "_acme-challenge.sändbox.test"),
        ("not a string", 5),
    ],
)
def test_other_names_are_refused(label, fqdn):
    """Anything but `_acme-challenge.` under a configured domain is a ValidationError on `fqdn`."""
    with pytest.raises(ValidationError) as err:
        challenge_domain(fqdn, DOMAINS)
    assert err.value.field == "fqdn"


@pytest.mark.parametrize("value", ["", "a b", 'a"b', "x" * 256, "é", None, 43])
def test_values_other_than_base64url_are_refused(value):
    with pytest.raises(ValidationError):
        validate_challenge_value(value)


def test_present_and_cleanup_round_trip_and_move_the_version(tmp_path):
    """Presenting and cleaning up each bump the version; the snapshot holds what is served."""
    store = SqliteStore(tmp_path / "c.db")
    v0 = store.version()
    held = ops.present_challenge(store, DOMAINS, "_acme-challenge.sandbox.test.", VALUE, now=1e10)
    assert held == Challenge("_acme-challenge.sandbox.test", VALUE, 1e10 + 3600)
    ops.present_challenge(store, DOMAINS, "_acme-challenge.sandbox.test", "second", now=1e10)
    assert store.version() > v0
    assert [c.value for c in store.snapshot().challenges] == [VALUE, "second"]
    v1 = store.version()
    assert ops.cleanup_challenge(store, DOMAINS, "_acme-challenge.sandbox.test.", VALUE) is True
    assert ops.cleanup_challenge(store, DOMAINS, "_acme-challenge.sandbox.test.", VALUE) is False
    assert store.version() > v1 and [c.value for c in store.snapshot().challenges] == ["second"]


def test_expired_values_are_not_in_the_snapshot_and_are_purged_on_the_next_write(tmp_path):
    """A value past its lifetime is never loaded, and the next present deletes it."""
    store = SqliteStore(tmp_path / "c.db")
    ops.present_challenge(store, DOMAINS, "_acme-challenge.sandbox.test", "old", lifetime=1, now=1000.0)
    assert store.snapshot().challenges == () and store.challenges() == ()
    ops.present_challenge(store, DOMAINS, "_acme-challenge.sandbox.test", "new")
    rows = store._run("SELECT value FROM challenges")
    assert rows == [("new",)]


def test_presenting_again_renews_the_expiry_without_a_second_row(tmp_path):
    store = SqliteStore(tmp_path / "c.db")
    ops.present_challenge(store, DOMAINS, "_acme-challenge.sandbox.test", VALUE, now=1e10)
    ops.present_challenge(store, DOMAINS, "_acme-challenge.sandbox.test", VALUE, now=2e10)
    assert store.challenges() == (Challenge("_acme-challenge.sandbox.test", VALUE, 2e10 + 3600),)


def test_one_name_holds_a_bounded_number_of_values(tmp_path):
    """Past MAX_CHALLENGES_PER_NAME values at one name, a new one is refused (a known one still renews)."""
    store = SqliteStore(tmp_path / "c.db")
    for i in range(ops.MAX_CHALLENGES_PER_NAME):
        ops.present_challenge(store, DOMAINS, "_acme-challenge.sandbox.test", f"v{i}")
    with pytest.raises(ValidationError, match="clean some up first"):
        ops.present_challenge(store, DOMAINS, "_acme-challenge.sandbox.test", "one-more")
    ops.present_challenge(store, DOMAINS, "_acme-challenge.sandbox.test", "v0")
    ops.present_challenge(store, DOMAINS, "_acme-challenge.x.sandbox.test", "elsewhere")


async def test_the_live_catalog_sees_values_written_by_another_connection(tmp_path, nursery):
    """watch() swaps in a snapshot holding a value another process presented."""
    live = LiveCatalog()
    await nursery.start(watch, SqliteStore(tmp_path / "c.db"), live, 0.02)
    ops.present_challenge(SqliteStore(tmp_path / "c.db"), DOMAINS, "_acme-challenge.sandbox.test", VALUE)
    with trio.fail_after(3):
        while not live.snapshot.challenges:
            await trio.sleep(0.02)
    assert live.snapshot.challenges[0].value == VALUE
