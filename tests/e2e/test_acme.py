"""ACME DNS-01 end to end and offline: Debian's pebble (the ACME test CA) issues certificates to a
running `edge serve`, validating through edge's own DNS server; lego obtains one through edge's httpreq
endpoint. Everything real: processes, sockets, the CA's own checks.

Pebble starts first with `-dnsserver` pointed at a port picked for edge's DNS; edge then starts with
that port, a domain (`sandbox.test`, its zone synthesized: `[dns] synthesize`) and `[acme]` pointing at pebble.
"""

from __future__ import annotations

import json
import os
import socket
import ssl
import stat
import subprocess
import time
from pathlib import Path

import dns.message
import pytest
import trio
from cryptography import x509
from cryptography.x509.verification import PolicyBuilder, Store
from prometheus_client.parser import text_string_to_metric_families

from tests.backends import Backend
from tests.dns.support import udp
from tests.pebble import Pebble, free_port
from tests.proc import EdgeProcess, edge_cli, edge_env

DOMAIN = "sandbox.test"
TOKEN = "acme-test-admin-token"


@pytest.fixture
def dns_port() -> int:
    return free_port(both=True)


@pytest.fixture
def pebble(tmp_path, dns_port):
    ca = Pebble(tmp_path / "pebble", dns_port)
    yield ca
    ca.stop()


def write_config(tmp_path: Path, pebble: Pebble, extra: str = "", ca_bundle: bool = True) -> Path:
    (tmp_path / "zones").mkdir(exist_ok=True)
    path = tmp_path / "edge.toml"
    path.write_text(
        f'domains = ["{DOMAIN}"]\n'
        f'[dns]\nzones = "{tmp_path / "zones"}"\nsynthesize = {{"{DOMAIN}" = ["127.0.0.1"]}}\n'
        f'[acme]\ndirectory = "{pebble.directory}"\nemail = "ops@{DOMAIN}"\n'
        + (f'ca_bundle = "{pebble.ca}"\n' if ca_bundle else "")
        + extra
    )
    return path


async def start_edge(tmp_path: Path, config: Path, dns_port: int) -> tuple[EdgeProcess, dict[str, str]]:
    env = edge_env(tmp_path, EDGE_ADMIN_TOKEN=TOKEN)
    args = ["serve", "--config", str(config), "--http", "127.0.0.1:0", "--dns", f"127.0.0.1:{dns_port}"]
    return await trio.to_thread.run_sync(lambda: EdgeProcess(args, env)), env


async def cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return await trio.to_thread.run_sync(edge_cli, args, env)


async def wait_for_certificate(config: Path, env: dict[str, str], timeout: float = 30) -> dict:
    """`edge cert list --json` once it lists a certificate for the domain."""
    with trio.fail_after(timeout):
        while True:
            res = await cli(["cert", "list", "--json", "--config", str(config)], env)
            assert res.returncode == 0, res.stderr
            doc = json.loads(res.stdout)
            if doc["domains"][0]["certificate"]:
                return doc["domains"][0]["certificate"]
            await trio.sleep(0.2)


def leaf_and_chain(path: Path) -> tuple[x509.Certificate, list[x509.Certificate]]:
    certs = x509.load_pem_x509_certificates(path.read_bytes())
    return certs[0], certs[1:]


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def test_edge_serve_obtains_a_wildcard_certificate_from_pebble_through_its_own_dns(tmp_path, pebble, dns_port):
    """A running edge gets `*.domain` and `domain` from the CA, files 0600, the chain valid for a sandbox host."""
    config = write_config(tmp_path, pebble)
    edge, env = await start_edge(tmp_path, config, dns_port)
    try:
        listed = await wait_for_certificate(config, env)
        assert sorted(listed["names"]) == [f"*.{DOMAIN}", DOMAIN]
        assert listed["source"] == "acme" and listed["issuer"].startswith("Pebble Intermediate CA")

        folder = tmp_path / "state" / "certs" / DOMAIN
        assert mode(folder) == 0o700
        assert mode(folder / "fullchain.pem") == 0o600 and mode(folder / "privkey.pem") == 0o600
        assert mode(tmp_path / "state" / "acme" / "account.json") == 0o600
        assert sorted(p.name for p in folder.iterdir()) == ["fullchain.pem", "privkey.pem"]  # no temp file left

        # The chain leads to pebble's root, for a sandbox host under the wildcard.
        leaf, intermediates = leaf_and_chain(folder / "fullchain.pem")
        verifier = (
            PolicyBuilder().store(Store(pebble.roots())).build_server_verifier(x509.DNSName(f"3000-demo.{DOMAIN}"))
        )
        verifier.verify(leaf, intermediates)

        # The TXT values are gone from edge's DNS once the order is done.
        await challenge_withdrawn(dns_port)
        # The running edge knows the certificate: status, the API's ACME state, metrics.
        res = await cli(["status", "--config", str(config), "--admin", edge.listening["admin"]], env)
        assert f"{DOMAIN}  " in res.stdout and "acme, expires" in res.stdout, res.stdout
        state = await admin_get(edge, "/v1/certs")
        acme = state["domains"][0]["acme"]
        assert acme["failures"] == 0 and acme["last_error"] is None and acme["last_success"]
        assert acme["next_attempt"] == pytest.approx(
            listed["not_before"] + (listed["not_after"] - listed["not_before"]) * 2 / 3, abs=1
        )
        families = {f.name: f for f in text_string_to_metric_families(await admin_text(edge, "/metrics"))}
        expiry = {s.labels["domain"]: s.value for s in families["edge_tls_certificate_expiry_seconds"].samples}
        assert expiry[f"*.{DOMAIN}"] == pytest.approx(listed["not_after"] - time.time(), abs=60)
        renewals = {
            s.labels["result"]: s.value
            for s in families["edge_acme_renewals"].samples
            if s.name == "edge_acme_renewals_total"
        }
        assert renewals == {"success": 1.0, "failure": 0.0}
        res = await cli(["status", "--json", "--config", str(config), "--admin", edge.listening["admin"]], env)
        assert json.loads(res.stdout)["certificates"][0]["certificate"]["names"] == listed["names"]
    finally:
        out = edge.stop()
    assert "certificate for" in out and "obtained from Pebble" in out


async def test_forced_renewal_swaps_the_certificate_for_new_connections_only(tmp_path, pebble, dns_port, nursery):
    """`edge cert renew` brings a new certificate (a new serial) that new TLS connections get at once,
    while a connection opened before keeps its certificate and keeps working."""
    backend = await Backend("b").start(nursery, "127.0.0.2")
    https_port = free_port()
    config = write_config(tmp_path, pebble, f'[https]\nlisten = "127.0.0.1:{https_port}"\n')
    edge, env = await start_edge(tmp_path, config, dns_port)
    try:
        await cli(["sandbox", "add", "demo", "--address", "127.0.0.2"], env)
        await wait_for_certificate(config, env)
        trust = ssl.create_default_context()
        trust.load_verify_locations(cadata="".join(c.public_bytes(ssl_encoding()).decode() for c in pebble.roots()))
        host = f"{backend.port}-demo.{DOMAIN}"

        def connect() -> ssl.SSLSocket:
            raw = socket.create_connection(("127.0.0.1", https_port), timeout=10)
            return trust.wrap_socket(raw, server_hostname=host)

        def serial(conn: ssl.SSLSocket) -> int:
            return x509.load_der_x509_certificate(conn.getpeercert(binary_form=True)).serial_number

        def get(conn: ssl.SSLSocket) -> bytes:
            conn.sendall(f"GET /echo HTTP/1.1\r\nHost: {host}:{https_port}\r\n\r\n".encode())
            data = b""
            while b"\r\n\r\n" not in data:
                data += conn.recv(65536)
            head, _, body = data.partition(b"\r\n\r\n")
            length = int(
                next(line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length"))
            )
            while len(body) < length:
                body += conn.recv(65536)
            return head.split(b"\r\n")[0].split(b" ")[1]  # the status code

        with trio.fail_after(10):
            while True:  # the HTTPS listener's store has it within its reload interval
                old = await trio.to_thread.run_sync(connect)
                if old.getpeercert():
                    break
        with trio.fail_after(5):  # the sandbox is in the edge's catalog within a poll
            while await trio.to_thread.run_sync(get, old) != b"200":
                await trio.sleep(0.1)
        first = serial(old)

        res = await cli(["cert", "renew", DOMAIN, "--config", str(config), "--admin", edge.listening["admin"]], env)
        assert res.returncode == 0, res.stderr
        assert "acme, expires" in res.stdout

        new = await trio.to_thread.run_sync(connect)
        assert serial(new) != first  # at once: the ACME task reloaded the store it shares with the listener
        leaf, _ = leaf_and_chain(tmp_path / "state" / "certs" / DOMAIN / "fullchain.pem")
        assert serial(new) == leaf.serial_number
        assert (await trio.to_thread.run_sync(get, new)) == b"200"
        # The connection opened before the renewal: same certificate, still serving requests.
        assert serial(old) == first
        assert (await trio.to_thread.run_sync(get, old)) == b"200"
        old.close()
        new.close()
    finally:
        out = edge.stop()
    assert out.count("obtained from Pebble") == 2, out[-3000:]


async def test_lego_obtains_a_certificate_through_the_httpreq_endpoint(tmp_path, pebble, dns_port):
    """lego's httpreq provider presents its value on the admin API (Basic auth, the token as password);
    pebble checks it on edge's DNS; lego gets its certificate. Certificates edge does not order itself."""
    config = write_config(tmp_path, pebble)
    config.write_text(config.read_text().replace(f'directory = "{pebble.directory}"', 'directory = ""'))
    edge, env = await start_edge(tmp_path, config, dns_port)
    lego_env = {
        **os.environ,
        "HTTPREQ_ENDPOINT": f"http://{edge.listening['admin']}",
        "HTTPREQ_USERNAME": "lego",
        "HTTPREQ_PASSWORD": TOKEN,
        "LEGO_CA_CERTIFICATES": str(pebble.ca),
        "HTTPREQ_PROPAGATION_TIMEOUT": "30",
        "HTTPREQ_POLLING_INTERVAL": "1",
    }
    try:
        res = await trio.run_process(
            [
                "lego",
                "--server",
                pebble.directory,
                "--email",
                f"ops@{DOMAIN}",
                "--accept-tos",
                "--dns",
                "httpreq",
                "--dns.resolvers",
                f"127.0.0.1:{dns_port}",
                "--dns.disable-cp",
                "--domains",
                f"*.{DOMAIN}",
                "--path",
                str(tmp_path / "lego"),
                "run",
            ],
            env=lego_env,
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
        log = res.stderr.decode()
        assert res.returncode == 0, log[-3000:]
        leaf, intermediates = leaf_and_chain(tmp_path / "lego" / "certificates" / f"_.{DOMAIN}.crt")
        PolicyBuilder().store(Store(pebble.roots())).build_server_verifier(x509.DNSName(f"8080-x.{DOMAIN}")).verify(
            leaf, intermediates
        )
        assert "The server validated our request" in log
        state = await admin_get(edge, "/v1/certs")
        assert state["certificates"] == []  # lego's certificate is lego's: edge neither ordered nor loaded it
        await challenge_withdrawn(dns_port)  # lego cleaned up: edge's DNS stops serving the value
    finally:
        out = edge.stop()
    assert "serving 1 ACME challenge value(s)" in out, out


async def test_a_failing_order_is_reported_and_retried_after_a_backoff(tmp_path, pebble, dns_port):
    """Without the CA's trust (no ca_bundle), the order fails: the error is in the API, `edge status`,
    the log and the metrics, and the next try waits the backoff (a minute after the first failure)."""
    config = write_config(tmp_path, pebble, ca_bundle=False)
    edge, env = await start_edge(tmp_path, config, dns_port)
    try:
        with trio.fail_after(20):
            while not (acme := (await admin_get(edge, "/v1/certs"))["domains"][0]["acme"])["failures"]:
                await trio.sleep(0.1)
        assert "TLS" in acme["last_error"] and "acme.ca_bundle" in acme["last_error"]
        assert acme["next_attempt"] == pytest.approx(acme["last_attempt"] + 60, abs=1)
        res = await cli(["status", "--config", str(config), "--admin", edge.listening["admin"]], env)
        assert "no certificate" in res.stdout and "last error (1 in a row)" in res.stdout, res.stdout
        families = {f.name: f for f in text_string_to_metric_families(await admin_text(edge, "/metrics"))}
        renewals = {
            s.labels["result"]: s.value
            for s in families["edge_acme_renewals"].samples
            if s.name == "edge_acme_renewals_total"
        }
        assert renewals == {"success": 0.0, "failure": 1.0}
        res = await cli(["cert", "renew", DOMAIN, "--config", str(config), "--admin", edge.listening["admin"]], env)
        assert res.returncode == 1 and "renewal of sandbox.test failed: TLS" in res.stderr, res.stderr
        res = await cli(
            ["cert", "renew", "nope.test", "--config", str(config), "--admin", edge.listening["admin"]], env
        )
        assert res.returncode == 1 and "not a configured domain" in res.stderr
    finally:
        out = edge.stop()
    assert "not obtained (failure 1 in a row)" in out and "next try in 60 s" in out


# --- helpers --------------------------------------------------------------------------------------------


async def challenge_withdrawn(dns_port: int) -> None:
    """Wait until edge's DNS answers `_acme-challenge.<domain>` TXT with no value (5 s at most)."""
    query = dns.message.make_query(f"_acme-challenge.{DOMAIN}", "TXT")
    with trio.fail_after(5):
        while (await udp(query, ("127.0.0.1", dns_port))).answer:
            await trio.sleep(0.1)


def ssl_encoding():
    from cryptography.hazmat.primitives.serialization import Encoding

    return Encoding.PEM


async def admin_text(edge: EdgeProcess, path: str) -> str:
    import httpx

    async with httpx.AsyncClient(
        base_url=f"http://{edge.listening['admin']}", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10
    ) as c:
        res = await c.get(path)
        assert res.status_code == 200, res.text
        return res.text


async def admin_get(edge: EdgeProcess, path: str) -> dict:
    return json.loads(await admin_text(edge, path))
