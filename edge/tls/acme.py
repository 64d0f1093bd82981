"""ACME DNS-01, built in: edge obtains and renews `*.<domain>` + `<domain>` for its configured domains.

Theory of operation
-------------------
edge is authoritative for its own domains, so it answers `_acme-challenge.<domain>` itself: no DNS
provider plugin, no propagation wait. One task per process that runs the admin API (the supervisor
with workers), `Acme.run`, loops over the configured domains and asks edge.tls.renewal when each is
due: no certificate at all (and no static one covering it): now; an ACME one: at two thirds of its
lifetime; a failure: after a backoff (1 min doubling to 1 h); `edge cert renew` (POST
/v1/certs/{domain}/renew -> `request_renewal`): at once.

An order (`obtain`) runs in a worker thread, because the `acme` library (the one certbot is built on)
is synchronous:

  1. the account: an ECDSA P-256 key in `<state_dir>/acme/account.json` (0600), made on first use;
     registering it again each time returns the existing account (RFC 8555 7.3.1), so a CA that
     forgot it (a test CA restarted) is no problem;
  2. a new ECDSA P-256 key and an order for `<domain>` and `*.<domain>`: two authorizations, each with
     a DNS-01 challenge at `_acme-challenge.<domain>`, so two TXT values at one name;
  3. the values are written to the catalog (edge.catalog.ops.present_challenge, the table every edge
     sharing the catalog serves from), and the thread waits until this process's DNS server serves
     them (its live snapshot holds them) before telling the CA to look;
  4. the CA validates, the order is finalized, the chain downloaded; the values are removed (they
     also expire by themselves after an hour, should this process die in between).

Back in the trio thread the new key and chain, staged by the worker thread in the domain's folder
(temp files, 0600, fsync'ed), are moved into place with two os.replace calls (no await between them),
and the process's CertStore is reloaded at once: new TLS connections get the new certificate, open
ones keep theirs. Other processes (HTTP workers) see the files on their next reload (every second).

The thread is abandoned on shutdown (its HTTP calls have timeouts); it never touches the live files.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import trio

from edge import metrics
from edge.catalog import ops
from edge.catalog.model import normalize_domain
from edge.catalog.store import LiveCatalog, Store
from edge.config import Config
from edge.errors import AcmeNotConfigured, ValidationError
from edge.tls.certs import CertStore, acme_dir, describe
from edge.tls.renewal import DomainState, backoff, next_attempt, report

log = logging.getLogger("edge.acme")

#: Seconds an order may take, from the challenge answers to the chain (the CA polls our DNS meanwhile).
ORDER_TIMEOUT = 180.0
#: Seconds to wait for this process's DNS server to serve the new values before telling the CA.
SERVE_TIMEOUT = 10.0
#: Seconds between two looks at the certificate files when nothing is due (a file put there by hand).
IDLE_CHECK = 60.0
#: Seconds one HTTP request to the CA may take.
HTTP_TIMEOUT = 30
USER_AGENT = "edge (acme-python)"


def account_path(config: Config) -> Path:
    return config.state_dir / "acme" / "account.json"


# --- files ---------------------------------------------------------------------------------------------


def _private_dir(path: Path) -> Path:
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path


def stage(folder: Path, name: str, data: bytes) -> Path:
    """Write `data` to a new 0600 temp file in `folder` (created 0700), flushed to disk; its path."""
    _private_dir(folder)
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=folder)  # mkstemp: mode 0600
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
    except BaseException:
        os.unlink(tmp)
        raise
    return Path(tmp)


def write_private(path: Path, data: bytes) -> None:
    """Replace `path` atomically with `data`, mode 0600 (its folder 0700)."""
    os.replace(stage(path.parent, path.name, data), path)


@dataclass(frozen=True)
class Issued:
    """A new certificate, staged next to where it goes."""

    domain: str
    fullchain: Path  # staged temp files
    privkey: Path

    def install(self, folder: Path) -> tuple[Path, Path]:
        """Move the staged files into `folder` (the key first: for a moment the old chain sits with the
        new key, which a reload refuses and keeps the old pair for; never a new chain with an old key
        served). Returns the final (fullchain, privkey) paths."""
        cert, key = folder / "fullchain.pem", folder / "privkey.pem"
        os.replace(self.privkey, key)
        os.replace(self.fullchain, cert)
        return cert, key


# --- one order (synchronous: runs in a worker thread) ----------------------------------------------------


def _account_key(config: Config):
    """The account key (josepy JWK), made and saved (0600) on first use."""
    import josepy as jose
    from cryptography.hazmat.primitives.asymmetric import ec

    path = account_path(config)
    try:
        doc = json.loads(path.read_text())
        return jose.JWK.from_json(doc["key"]), doc
    except FileNotFoundError:
        pass
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{path}: not an account file edge wrote ({exc}); move it away for a new account") from None
    key = jose.JWKEC(key=ec.generate_private_key(ec.SECP256R1()))
    doc = {"key": key.to_json(), "accounts": {}}
    write_private(path, json.dumps(doc).encode())
    log.info("ACME account key made: %s", path)
    return key, doc


def _trust(config: Config) -> bool | str:
    """What requests verifies the directory's TLS with: the usual roots, plus acme.ca_bundle if set."""
    if not config.acme.ca_bundle:
        return True
    import certifi

    try:
        extra = Path(config.acme.ca_bundle).expanduser().read_bytes()
    except OSError as exc:
        raise ValueError(f"acme.ca_bundle {config.acme.ca_bundle}: {exc.strerror}") from None
    bundle = config.state_dir / "acme" / "trust.pem"
    write_private(bundle, Path(certifi.where()).read_bytes() + b"\n" + extra)
    return str(bundle)


def obtain(
    config: Config,
    domain: str,
    publish: Callable[[list[tuple[str, str]]], None],
    withdraw: Callable[[list[tuple[str, str]]], None],
) -> Issued:
    """Run one ACME order for `domain` and `*.domain` (see the module docstring); the new chain and key
    come back staged in the domain's folder. `publish(values)` must return once the (fqdn, value)
    pairs are served; `withdraw(values)` removes them. Raises on any failure."""
    import josepy as jose
    from acme import challenges, client, crypto_util, errors, messages
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key, doc = _account_key(config)
    net = client.ClientNetwork(
        key,
        alg=jose.ES256,
        verify_ssl=_trust(config),  # type: ignore[arg-type]
        user_agent=USER_AGENT,
        timeout=HTTP_TIMEOUT,
    )
    directory = client.ClientV2.get_directory(config.acme.directory, net)
    acme = client.ClientV2(directory, net)
    registration = messages.NewRegistration.from_data(email=config.acme.email or None, terms_of_service_agreed=True)
    try:
        account = acme.new_account(registration)
    except errors.ConflictError as exc:  # the key has an account there already: use it
        account = messages.RegistrationResource(uri=exc.location, body=messages.Registration())
        net.account = account
    if doc["accounts"].get(config.acme.directory) != account.uri:
        doc["accounts"][config.acme.directory] = account.uri
        write_private(account_path(config), json.dumps(doc).encode())

    private = ec.generate_private_key(ec.SECP256R1())
    key_pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    order = acme.new_order(crypto_util.make_csr(key_pem, [domain, f"*.{domain}"]))
    answers = []
    values: list[tuple[str, str]] = []
    for authz in order.authorizations:
        if authz.body.status == messages.STATUS_VALID:
            continue  # a CA may reuse an authorization validated before
        dns01 = next((c for c in authz.body.challenges if isinstance(c.chall, challenges.DNS01)), None)
        if dns01 is None:
            raise ValueError(f"the CA offers no dns-01 challenge for {authz.body.identifier.value}")
        values.append((dns01.chall.validation_domain_name(authz.body.identifier.value), dns01.chall.validation(key)))
        answers.append(dns01)
    try:
        publish(values)
        for dns01 in answers:
            acme.answer_challenge(dns01, dns01.chall.response(key))
        deadline = datetime.datetime.now() + datetime.timedelta(seconds=ORDER_TIMEOUT)
        order = acme.poll_and_finalize(order, deadline)
    finally:
        withdraw(values)
    folder = acme_dir(config) / domain
    chain = stage(folder, "fullchain.pem", order.fullchain_pem.encode())
    return Issued(domain, chain, stage(folder, "privkey.pem", key_pem))


def reason(exc: BaseException, directory: str = "") -> str:
    """One line saying why an order failed, for the log, the API and `edge status`."""
    import requests
    from acme import errors, messages

    text: str
    if isinstance(exc, errors.ValidationError):
        parts = [
            f"{a.body.identifier.value}: {c.error.detail or c.error.typ}"
            for a in exc.failed_authzrs
            for c in a.body.challenges
            if c.error is not None
        ]
        text = "validation failed: " + ("; ".join(parts) or "no reason given")
    elif isinstance(exc, messages.Error):
        text = f"the CA refused: {exc.detail or exc.typ}"
    elif isinstance(exc, errors.TimeoutError):
        text = f"the CA did not finish the order within {ORDER_TIMEOUT:.0f} s"
    elif isinstance(exc, requests.exceptions.SSLError):
        text = f"TLS to {directory} failed (a private CA needs acme.ca_bundle): {exc}"
    elif isinstance(exc, requests.exceptions.RequestException):
        text = f"cannot reach {directory}: {exc}"
    else:
        text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    text = " ".join(text.split())
    return text if len(text) <= 400 else text[:397] + "..."


# --- the task ---------------------------------------------------------------------------------------------


class Acme:
    """This process's ACME task and the state of each configured domain.

    `run()` is the task (started by edge.lifecycle where the admin API runs, when `acme.directory` is
    set); `request_renewal()` and `report()` are what the admin API calls, in the same trio thread."""

    def __init__(self, config: Config, certs: CertStore, store: Store, live: LiveCatalog | None) -> None:
        if not config.acme.directory:
            raise AcmeNotConfigured()
        self.config = config
        self.certs = certs
        self.store = store
        self.live = live
        self.states = {d: DomainState(d) for d in (normalize_domain(d) for d in config.domains)}
        self._wake = trio.Event()

    # --- asked by the admin API ----------------------------------------------------------------------

    def request_renewal(self, domain: str) -> DomainState:
        """Renew `domain` now, whatever its certificate's age (the task wakes at once)."""
        state = self.states.get(domain.lower().rstrip("."))
        if state is None:
            raise ValidationError("domain", f"{domain!r} is not a configured domain ({', '.join(self.states)})")
        state.forced = True
        self._wake.set()
        return state

    def report(self, now: float | None = None) -> dict[str, object]:
        return report(
            list(self.states),
            self.config.acme.directory,
            self.certs.info(),
            self.states,
            time.time() if now is None else now,
        )

    # --- the task ------------------------------------------------------------------------------------

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        log.info("ACME on: %s for %s", self.config.acme.directory, ", ".join(self.states))
        task_status.started()
        while True:
            self._wake = trio.Event()  # before looking: a request made while we work wakes the wait below
            soonest = time.time() + IDLE_CHECK
            for domain, state in self.states.items():
                when = self._plan(domain, state)
                if when is not None and when <= time.time():
                    await self._renew(domain, state)
                    when = self._plan(domain, state)
                if when is not None:
                    soonest = min(soonest, when)
            with trio.move_on_after(max(0.0, soonest - time.time())):
                await self._wake.wait()

    def _plan(self, domain: str, state: DomainState) -> float | None:
        folder = acme_dir(self.config) / domain
        try:
            info = describe(folder / "fullchain.pem", folder / "privkey.pem", "acme")
            acme_cert: tuple[float, float] | None = (info.not_before, info.not_after)
        except (OSError, ValueError):
            acme_cert = None
        when = next_attempt(acme_cert, self.certs.covers(domain), state)
        state.next_attempt = None if when is None else max(when, time.time())
        return when

    async def _renew(self, domain: str, state: DomainState) -> None:
        state.forced = False
        state.renewing = True
        state.last_attempt = time.time()
        log.info("obtaining a certificate for %s and *.%s from %s", domain, domain, self.config.acme.directory)
        try:
            issued = await trio.to_thread.run_sync(
                partial(obtain, self.config, domain, self._publish, self._withdraw), abandon_on_cancel=True
            )
            cert, _ = issued.install(acme_dir(self.config) / domain)
            self.certs.reload()
            info = describe(cert, cert.with_name("privkey.pem"), "acme")
        except Exception as exc:  # whatever failed (CA, network, DNS, disk): logged, retried later
            state.failures += 1
            state.last_error = reason(exc, self.config.acme.directory)
            metrics.STATS.acme_renewals["failure"] += 1
            log.error(
                "certificate for %s not obtained (failure %d in a row): %s; next try in %.0f s",
                domain,
                state.failures,
                state.last_error,
                backoff(state.failures),
            )
            return
        finally:
            state.renewing = False
        state.failures = 0
        state.last_error = None
        state.last_success = time.time()
        metrics.STATS.acme_renewals["success"] += 1
        log.info(
            "certificate for %s obtained from %s, valid until %s",
            ", ".join(info.names),
            info.issuer,
            datetime.datetime.fromtimestamp(info.not_after, datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        )

    # --- called from the worker thread ---------------------------------------------------------------

    def _publish(self, values: list[tuple[str, str]]) -> None:
        for fqdn, value in values:
            ops.present_challenge(self.store, self.config.domains, fqdn, value)
        if self.live is not None and values:
            trio.from_thread.run(self._served, values)

    def _withdraw(self, values: list[tuple[str, str]]) -> None:
        for fqdn, value in values:
            try:
                ops.cleanup_challenge(self.store, self.config.domains, fqdn, value)
            except Exception as exc:  # it expires by itself within the hour
                log.warning("challenge value at %s not removed: %s", fqdn, exc)

    async def _served(self, values: Iterable[tuple[str, str]]) -> None:
        assert self.live is not None
        wanted = set(values)
        with trio.fail_after(SERVE_TIMEOUT):
            while not wanted <= {(c.fqdn, c.value) for c in self.live.snapshot.challenges}:
                await trio.sleep(0.05)
