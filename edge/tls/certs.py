"""Certificates by SNI, and reloading them as their files change.

Where certificates come from (each a PEM chain and its key):

  static  `[https] certs = [{cert = ..., key = ...}]`: each serves the names its certificate carries.
  acme    `<state_dir>/certs/<domain>/fullchain.pem` and `privkey.pem`, written by edge/tls/acme.py
          (or put there by hand): the same layout certbot's `live/` folder has.

`CertStore.listening` is the one SSLContext every TLS listener of the process uses, made once and
never replaced, so session tickets survive reloads (OpenSSL keeps tickets and the session cache on the
context a connection started with). Its `sni_callback` switches each connection to the context of the
certificate for the name asked: exact name first, then the wildcard one label up
(`3000-x.sandbox.localhost` -> `*.sandbox.localhost`). A name edge has no certificate for gets the
`unrecognized_name` alert; a client that sends no name gets the first configured domain's.

`reload()` re-reads a pair only when one of its files changed (mtime, size); a pair that fails to
load keeps its previous context and is logged. New connections use a new certificate at once;
connections already open are not touched.

TLS settings (Mozilla's "intermediate"): TLS 1.2 and 1.3, for 1.2 only ECDHE with AES-GCM or
ChaCha20-Poly1305, ALPN `http/1.1`, no compression, no renegotiation.
"""

from __future__ import annotations

import logging
import os
import ssl
from dataclasses import dataclass
from datetime import UTC
from pathlib import Path

from cryptography import x509
from cryptography.x509.oid import NameOID

from edge.config import Config

log = logging.getLogger("edge.tls")

#: Mozilla intermediate, TLS 1.2 part (TLS 1.3 suites are OpenSSL's defaults, all AEAD).
CIPHERS_TLS12 = ":".join(
    (
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "ECDHE-RSA-AES128-GCM-SHA256",
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "ECDHE-RSA-AES256-GCM-SHA384",
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        "ECDHE-RSA-CHACHA20-POLY1305",
    )
)
#: SSL_OP_ENABLE_KTLS (OpenSSL 3.0): ask for kernel TLS where the kernel has it. Python 3.11 has no name for it.
OP_ENABLE_KTLS = 1 << 3


@dataclass(frozen=True)
class CertInfo:
    """What one certificate pair serves, for `edge cert list`, the admin API and metrics."""

    names: tuple[str, ...]
    not_before: float
    not_after: float
    issuer: str
    source: str  # "static" or "acme"
    cert: Path
    key: Path

    def to_json(self) -> dict[str, object]:
        return {
            "names": list(self.names),
            "not_before": self.not_before,
            "not_after": self.not_after,
            "issuer": self.issuer,
            "source": self.source,
            "cert": str(self.cert),
            "key": str(self.key),
        }


def describe(cert_path: Path, key_path: Path, source: str) -> CertInfo:
    """Read the leaf certificate of a PEM chain: the names it serves (SANs, else the CN) and its dates."""
    leaf = x509.load_pem_x509_certificate(cert_path.read_bytes())
    try:
        sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = tuple(n.lower() for n in sans.get_values_for_type(x509.DNSName))
    except x509.ExtensionNotFound:
        names = tuple(str(a.value).lower() for a in leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME))
    issuer = ", ".join(str(a.value) for a in leaf.issuer.get_attributes_for_oid(NameOID.COMMON_NAME))
    return CertInfo(
        names,
        leaf.not_valid_before_utc.replace(tzinfo=UTC).timestamp(),
        leaf.not_valid_after_utc.replace(tzinfo=UTC).timestamp(),
        issuer,
        source,
        cert_path,
        key_path,
    )


def acme_dir(config: Config) -> Path:
    """Where certificates obtained by ACME live: <state_dir>/certs/<domain>/."""
    return config.state_dir / "certs"


def server_context(config: Config) -> ssl.SSLContext:
    """A server-side context with edge's TLS settings and no certificate yet."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers(CIPHERS_TLS12)
    ctx.set_alpn_protocols(["http/1.1"])
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION | ssl.OP_CIPHER_SERVER_PREFERENCE
    if config.https.ktls:
        ctx.options |= OP_ENABLE_KTLS
    return ctx


@dataclass
class _Loaded:
    info: CertInfo
    context: ssl.SSLContext
    stamp: tuple[float, int, float, int]


class CertStore:
    """The certificates this edge serves, by name; `listening` is the context TLS listeners use."""

    def __init__(self, config: Config) -> None:
        self._config = config
        self._loaded: dict[Path, _Loaded] = {}
        self._by_name: dict[str, ssl.SSLContext] = {}
        self._default: ssl.SSLContext | None = None
        self.listening = server_context(config)
        self.listening.sni_callback = self._pick
        self.reload()

    # --- which certificate a connection gets -------------------------------------------------------

    def _pick(self, sslobj: ssl.SSLObject, name: str | None, _ctx: ssl.SSLContext) -> int | None:
        if name is None:
            if self._default is None:
                return ssl.ALERT_DESCRIPTION_UNRECOGNIZED_NAME
            sslobj.context = self._default
            return None
        context = self.context_for(name)
        if context is None:
            return ssl.ALERT_DESCRIPTION_UNRECOGNIZED_NAME
        sslobj.context = context
        return None

    def context_for(self, name: str) -> ssl.SSLContext | None:
        name = name.lower().rstrip(".")
        by_name = self._by_name
        context = by_name.get(name)
        if context is None:
            dot = name.find(".")
            if dot > 0:
                context = by_name.get("*" + name[dot:])
        return context

    # --- loading ---------------------------------------------------------------------------------

    def sources(self) -> list[tuple[Path, Path, str]]:
        """Every (cert, key, source) pair configured or found in the ACME folder, static ones first."""
        pairs = [(c.cert, c.key, "static") for c in self._config.https.certs]
        folder = acme_dir(self._config)
        if folder.is_dir():
            for domain in sorted(folder.iterdir()):
                cert, key = domain / "fullchain.pem", domain / "privkey.pem"
                if cert.is_file() and key.is_file():
                    pairs.append((cert, key, "acme"))
        return pairs

    def reload(self) -> list[CertInfo]:
        """Load what is new or changed on disk; returns the pairs (re)loaded. Never raises for a bad pair."""
        changed: list[CertInfo] = []
        loaded: dict[Path, _Loaded] = {}
        for cert, key, source in self.sources():
            try:
                stamp = _stamp(cert) + _stamp(key)
            except OSError as exc:
                log.error("certificate %s: %s", cert, exc.strerror)
                continue
            old = self._loaded.get(cert)
            if old is not None and old.stamp == stamp:
                loaded[cert] = old
                continue
            try:
                context = server_context(self._config)
                context.load_cert_chain(cert, key)
                info = describe(cert, key, source)
            except (OSError, ssl.SSLError, ValueError) as exc:
                if old is not None:
                    log.error("certificate %s could not be reloaded (%s); keeping the one loaded before", cert, exc)
                    loaded[cert] = old
                else:
                    log.error("certificate %s could not be loaded: %s", cert, exc)
                continue
            loaded[cert] = _Loaded(info, context, stamp)
            changed.append(info)
            log.info(
                "certificate for %s loaded from %s (expires %s)", ", ".join(info.names), cert, _date(info.not_after)
            )
        by_name: dict[str, ssl.SSLContext] = {}
        for entry in loaded.values():
            for name in entry.info.names:
                by_name.setdefault(name, entry.context)  # static ones came first: they win
        self._loaded = loaded
        self._by_name = by_name
        self._default = self._default_context(by_name)
        return changed

    def _default_context(self, by_name: dict[str, ssl.SSLContext]) -> ssl.SSLContext | None:
        for domain in self._config.domains:
            for name in (domain, "*." + domain):
                if name in by_name:
                    return by_name[name]
        return next(iter(by_name.values()), None)

    def info(self) -> list[CertInfo]:
        return [entry.info for entry in self._loaded.values()]

    def covers(self, domain: str) -> bool:
        """True when both `domain` and `*.domain` have a certificate."""
        return self.context_for(domain) is not None and self.context_for("x." + domain) is not None


def _stamp(path: Path) -> tuple[float, int]:
    st = os.stat(path)
    return st.st_mtime, st.st_size


def _date(ts: float) -> str:
    import datetime

    return datetime.datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M UTC")
