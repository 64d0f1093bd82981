"""Pebble, the ACME test CA (Debian's `pebble`), run as a real process for the ACME tests.

Debian's package ships no TLS certificate for pebble's own listeners, so `Pebble` makes a throwaway CA
and a leaf for 127.0.0.1 and localhost (ECDSA P-256, with `cryptography`); `ca` is the PEM file
clients trust (edge's `acme.ca_bundle`, lego's LEGO_CA_CERTIFICATES). Pebble validates DNS-01 by
asking `dns` (edge's DNS server) for `_acme-challenge.<domain>` TXT. Its roots, which sign what it
issues, come from its management interface (`roots()`).
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import shutil
import socket
import ssl
import subprocess
import time
import urllib.request
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def free_port(kind: int = socket.SOCK_STREAM, both: bool = False) -> int:
    """A port free now on 127.0.0.1 (both: for TCP and UDP at once, as edge's DNS needs)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, kind) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
            if not both:
                return port
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
                try:
                    u.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port
    raise RuntimeError("no free port")


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def make_tls(folder: Path) -> tuple[Path, Path, Path]:
    """A CA and a leaf for 127.0.0.1 and localhost signed by it: (ca.pem, cert.pem, key.pem)."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pebble listener test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    folder.mkdir(parents=True, exist_ok=True)
    paths = folder / "ca.pem", folder / "cert.pem", folder / "key.pem"
    paths[0].write_bytes(_pem(ca))
    paths[1].write_bytes(_pem(leaf))
    paths[2].write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return paths


class Pebble:
    """`pebble -config ... -dnsserver 127.0.0.1:<dns_port>` on free ports; `stop()` ends it."""

    def __init__(self, folder: Path, dns_port: int, timeout: float = 15.0) -> None:
        binary = shutil.which("pebble")
        if binary is None:
            raise RuntimeError("pebble is not installed: `make test-deps` installs it (Debian package pebble)")
        self.ca, cert, key = make_tls(folder / "tls")
        self.port, self.management = free_port(), free_port()
        config = {
            "pebble": {
                "listenAddress": f"127.0.0.1:{self.port}",
                "managementListenAddress": f"127.0.0.1:{self.management}",
                "certificate": str(cert),
                "privateKey": str(key),
                "httpPort": free_port(),
                "tlsPort": free_port(),  # http-01 and tls-alpn-01: not used here
                "ocspResponderURL": "",
                "externalAccountBindingRequired": False,
            }
        }
        (folder / "pebble.json").write_text(json.dumps(config))
        env = {
            **os.environ,
            "PEBBLE_VA_NOSLEEP": "1",  # validate at once, not after a random sleep
            "PEBBLE_VA_ALWAYS_VALID": "0",  # really ask edge's DNS
            "PEBBLE_WFE_NONCEREJECT": "0",  # no random badNonce: the tests are about DNS-01, not retries
            "PEBBLE_AUTHZREUSE": "0",
        }  # every order validates again (a renewal too)
        self.log = (folder / "pebble.log").open("w")
        self.proc = subprocess.Popen(
            [binary, "-config", str(folder / "pebble.json"), "-dnsserver", f"127.0.0.1:{dns_port}"],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env=env,
        )
        self.log_path = folder / "pebble.log"
        self._context = ssl.create_default_context(cafile=str(self.ca))
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.get("/dir")
                return
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError("pebble did not start:\n" + self.log_path.read_text()) from None
                time.sleep(0.1)

    @property
    def directory(self) -> str:
        return f"https://127.0.0.1:{self.port}/dir"

    def get(self, path: str, management: bool = False) -> bytes:
        port = self.management if management else self.port
        with urllib.request.urlopen(f"https://127.0.0.1:{port}{path}", context=self._context, timeout=5) as r:
            return r.read()

    def roots(self) -> list[x509.Certificate]:
        """The root pebble signs with (it makes a new one at each start)."""
        return x509.load_pem_x509_certificates(self.get("/roots/0", management=True))

    def stop(self) -> str:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        return self.log_path.read_text()
