"""HTTPS: the TLS transport under both lanes, certificates by SNI, with real clients (curl, openssl,
websockets). Certificates come from a throwaway CA (tests/tlsutil.py); ACME has its own tests."""

from __future__ import annotations

import json
import os
import shutil
import socket
import ssl
import subprocess
import time

import pytest
import trio
from websockets.sync.client import connect as ws_connect

from edge.catalog.model import Sandbox
from edge.metrics import STATS
from tests.conftest import BOTH_LANES, curl, parse_responses
from tests.tlsutil import TestCA

pytestmark = [pytest.mark.trio, pytest.mark.parametrize("lane", BOTH_LANES, indirect=True)]

DOMAIN = "sandbox.localhost"


@pytest.fixture
def ca(tmp_path):
    return TestCA(tmp_path)


@pytest.fixture
async def tls_edge(make_edge, ca, backend):
    cert, key = ca.issue([f"*.{DOMAIN}", DOMAIN], "wildcard")
    return await make_edge(
        [Sandbox("demo", "127.0.0.2"), Sandbox("secret", "127.0.0.2", public=False, token_hash="0" * 64)],
        https={"listen": "127.0.0.1:0", "certs": [{"cert": str(cert), "key": str(key)}], "handshake_timeout": 1.0},
    )


def https_url(edge, port: int, sandbox: str, path: str = "/") -> str:
    return f"https://{port}-{sandbox}.{DOMAIN}:{edge.tls_port}{path}"


def resolve(edge, port: int, sandbox: str) -> list[str]:
    return ["--resolve", f"{port}-{sandbox}.{DOMAIN}:{edge.tls_port}:127.0.0.1"]


async def test_curl_gets_an_answer_over_https_with_the_wildcard_certificate(tls_edge, ca, backend):
    """curl verifies the certificate for the sandbox host and the sandbox is told X-Forwarded-Proto: https."""
    res = await curl(
        "--cacert",
        str(ca.path),
        *resolve(tls_edge, backend.port, "demo"),
        https_url(tls_edge, backend.port, "demo", "/echo"),
    )
    doc = json.loads(res.stdout)
    headers = {k: v for k, v in doc["headers"]}
    assert headers["x-forwarded-proto"] == "https"
    assert headers["x-forwarded-port"] == str(tls_edge.tls_port)


async def test_keep_alive_and_pipelined_requests_over_tls(tls_edge, ca, backend):
    """Three requests in one TLS write come back in order on one connection."""
    host = f"{backend.port}-demo.{DOMAIN}"

    def talk() -> bytes:
        ctx = ssl.create_default_context(cafile=str(ca.path))
        with (
            socket.create_connection(("127.0.0.1", tls_edge.tls_port)) as raw,
            ctx.wrap_socket(raw, server_hostname=host) as tls,
        ):
            req = f"GET /echo HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
            tls.sendall(req * 2 + req.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n"))
            out = b""
            while chunk := tls.recv(65536):
                out += chunk
            return out

    got = parse_responses(await trio.to_thread.run_sync(talk))
    assert [status for status, _, _ in got] == [200, 200, 200]


async def test_a_name_without_a_certificate_gets_the_unrecognized_name_alert(tls_edge, ca):
    """SNI for a name edge serves no certificate for: the handshake fails with unrecognized_name."""
    before = STATS.tls_handshake_failures["unrecognized_name"]

    def handshake() -> str:
        ctx = ssl.create_default_context(cafile=str(ca.path))
        with socket.create_connection(("127.0.0.1", tls_edge.tls_port)) as raw:
            try:
                with ctx.wrap_socket(raw, server_hostname="elsewhere.example"):
                    return "accepted"
            except ssl.SSLError as exc:
                return str(exc)

    assert "UNRECOGNIZED_NAME" in (await trio.to_thread.run_sync(handshake)).upper()
    with trio.fail_after(2):
        while STATS.tls_handshake_failures["unrecognized_name"] == before:
            await trio.sleep(0.01)


async def test_a_client_without_sni_gets_the_first_domains_certificate(tls_edge, ca):
    """No server name: the certificate for the first configured domain (openssl s_client -noservername)."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    proc = await trio.run_process(
        ["openssl", "s_client", "-connect", f"127.0.0.1:{tls_edge.tls_port}", "-noservername", "-CAfile", str(ca.path)],
        stdin=b"",
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )
    out = proc.stdout.decode()
    assert f"*.{DOMAIN}" in out and "Verify return code: 0 (ok)" in out


async def test_silent_tls_client_is_closed_after_the_handshake_timeout(tls_edge):
    """A TCP connection that never starts its handshake is closed after https.handshake_timeout."""
    before = STATS.tls_handshake_failures["timeout"]
    stream = await trio.open_tcp_stream("127.0.0.1", tls_edge.tls_port)
    with trio.fail_after(4):
        assert await stream.receive_some(100) == b""
    assert STATS.tls_handshake_failures["timeout"] == before + 1


async def test_large_download_over_tls_is_whole(tls_edge, ca, backend):
    """100 MiB through TLS (copied through Python here: no kTLS) arrives whole."""
    res = await curl(
        "--cacert",
        str(ca.path),
        *resolve(tls_edge, backend.port, "demo"),
        "-o",
        "/dev/null",
        "-w",
        "%{size_download} %{http_code}",
        https_url(tls_edge, backend.port, "demo", f"/bytes?n={100 << 20}"),
    )
    assert res.stdout == f"{100 << 20} 200".encode()


async def test_server_sent_events_stream_over_tls(tls_edge, ca, backend):
    """Each event arrives as it is sent, not at the end."""
    host = f"{backend.port}-demo.{DOMAIN}"

    def read_events() -> list[float]:
        ctx = ssl.create_default_context(cafile=str(ca.path))
        times = []
        with (
            socket.create_connection(("127.0.0.1", tls_edge.tls_port)) as raw,
            ctx.wrap_socket(raw, server_hostname=host) as tls,
        ):
            tls.sendall(f"GET /sse?n=3&gap=0.3 HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
            t0 = time.monotonic()
            buf = b""
            while chunk := tls.recv(65536):
                buf += chunk
                while b"\n\n" in buf and b"data: event" in buf.split(b"\n\n", 1)[0] + b"\n\n":
                    first, buf = buf.split(b"\n\n", 1)
                    if b"data: event" in first:
                        times.append(time.monotonic() - t0)
        return times

    times = await trio.to_thread.run_sync(read_events)
    assert len(times) == 3
    assert times[1] - times[0] > 0.2 and times[2] - times[1] > 0.2


async def test_websocket_echo_over_wss(make_edge, ca, lane):
    """wss:// through the edge to a WebSocket echo sandbox: text and binary come back unchanged."""
    import sys

    from tests.e2e.test_websocket import REPO  # noqa: F401 - the echo backend lives in tests/ws_echo.py

    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.ws_echo", "127.0.0.3"], cwd=REPO, stdout=subprocess.PIPE, text=True
    )
    try:
        port = int(proc.stdout.readline())
        cert, key = ca.issue([f"*.{DOMAIN}"], "ws")
        edge = await make_edge(
            [Sandbox("wsbox", "127.0.0.3")],
            https={"listen": "127.0.0.1:0", "certs": [{"cert": str(cert), "key": str(key)}]},
        )
        host = f"{port}-wsbox.{DOMAIN}"

        def talk() -> list:
            ctx = ssl.create_default_context(cafile=str(ca.path))
            raw = socket.create_connection(("127.0.0.1", edge.tls_port))
            with ws_connect(f"wss://{host}/", sock=raw, ssl=ctx, server_hostname=host) as ws:
                ws.send("hello")
                ws.send(b"\x00\x01" * 5000)
                return [ws.recv(timeout=5), ws.recv(timeout=5)]

        assert await trio.to_thread.run_sync(talk) == ["hello", b"\x00\x01" * 5000]
    finally:
        proc.terminate()
        proc.wait(timeout=10)


async def test_private_link_over_https_sets_a_secure_host_cookie(make_edge, ca, backend):
    """?edge_token= over https: 303 to the https URL with a __Host- cookie that is Secure."""
    import hashlib

    token = "tok-" + "x" * 40
    cert, key = ca.issue([f"*.{DOMAIN}"], "priv")
    edge = await make_edge(
        [Sandbox("secret", "127.0.0.2", public=False, token_hash=hashlib.sha256(token.encode()).hexdigest())],
        https={"listen": "127.0.0.1:0", "certs": [{"cert": str(cert), "key": str(key)}]},
    )
    res = await curl(
        "-i",
        "--cacert",
        str(ca.path),
        *resolve(edge, backend.port, "secret"),
        https_url(edge, backend.port, "secret", f"/echo?edge_token={token}"),
    )
    head = res.stdout.split(b"\r\n\r\n", 1)[0].decode().lower()
    assert head.startswith("http/1.1 303")
    assert f"location: https://{backend.port}-secret.{DOMAIN}:{edge.tls_port}/echo" in head
    cookie = next(line for line in head.split("\r\n") if line.startswith("set-cookie:"))
    assert "__host-edge_access_token=" in cookie and "secure" in cookie and "httponly" in cookie


async def test_plain_http_is_redirected_to_https_when_asked(make_edge, ca, backend):
    """https.redirect_http: a sandbox URL over plain HTTP gets 308 to the same URL over https."""
    cert, key = ca.issue([f"*.{DOMAIN}"], "redir")
    edge = await make_edge(
        [Sandbox("demo", "127.0.0.2")],
        https={"listen": "127.0.0.1:0", "redirect_http": True, "certs": [{"cert": str(cert), "key": str(key)}]},
    )
    res = await curl("-i", f"http://{backend.port}-demo.{DOMAIN}:{edge.port}/a/b?c=1")
    head = res.stdout.split(b"\r\n\r\n", 1)[0].decode()
    assert head.startswith("HTTP/1.1 308")
    assert f"location: https://{backend.port}-demo.{DOMAIN}:{edge.tls_port}/a/b?c=1" in head.lower()
    # And following it works end to end.
    res = await curl(
        "-L",
        "--cacert",
        str(ca.path),
        *resolve(edge, backend.port, "demo"),
        f"http://{backend.port}-demo.{DOMAIN}:{edge.port}/echo",
    )
    assert json.loads(res.stdout)["target"] == "/echo"


async def test_a_renewed_certificate_file_is_used_by_new_connections(make_edge, ca, backend, tmp_path):
    """Replacing the files on disk: new connections get the new certificate within about a second."""
    cert, key = ca.issue([f"*.{DOMAIN}"], "first")
    edge = await make_edge(
        [Sandbox("demo", "127.0.0.2")], https={"listen": "127.0.0.1:0", "certs": [{"cert": str(cert), "key": str(key)}]}
    )
    host = f"{backend.port}-demo.{DOMAIN}"

    def serial() -> int:
        ctx = ssl.create_default_context(cafile=str(ca.path))
        with (
            socket.create_connection(("127.0.0.1", edge.tls_port)) as raw,
            ctx.wrap_socket(raw, server_hostname=host) as tls,
        ):
            from cryptography import x509

            return x509.load_der_x509_certificate(tls.getpeercert(binary_form=True)).serial_number

    first = await trio.to_thread.run_sync(serial)
    new_cert, new_key = ca.issue([f"*.{DOMAIN}"], "second")
    os.replace(new_key, key)
    os.replace(new_cert, cert)
    with trio.fail_after(3):
        while await trio.to_thread.run_sync(serial) == first:
            await trio.sleep(0.2)


def _kernel_has_ktls() -> bool:
    try:
        with open("/proc/sys/net/ipv4/tcp_available_ulp") as f:
            return "tls" in f.read().split()
    except OSError:
        return False


async def test_with_kernel_tls_bodies_are_spliced_into_the_tls_socket(tls_edge, ca, backend):
    """Where the kernel has kTLS (Debian's stock kernel: `modprobe tls`), OpenSSL hands the records
    to it and the edge splices a large body into the TLS socket; the bytes still arrive whole."""
    if not _kernel_has_ktls():
        pytest.skip("this kernel has no kTLS (no 'tls' in /proc/sys/net/ipv4/tcp_available_ulp)")
    before = STATS.tls_ktls_connections
    res = await curl(
        "--tlsv1.2",
        "--tls-max",
        "1.2",
        "--cacert",
        str(ca.path),
        *resolve(tls_edge, backend.port, "demo"),
        "-o",
        "/dev/null",
        "-w",
        "%{size_download}",
        https_url(tls_edge, backend.port, "demo", f"/bytes?n={16 << 20}"),
    )
    assert res.stdout == str(16 << 20).encode()
    assert STATS.tls_ktls_connections == before + 1


async def test_ktls_is_never_assumed_on_a_socket_without_it(lane):
    """A plain TCP socket answers no SOL_TLS option: splice into it as TLS would corrupt the stream."""
    from edge.http.tls import TLS_RX, TLS_TX, ktls_active

    a, b = socket.socketpair()
    with a, b:
        assert not ktls_active(a, TLS_TX) and not ktls_active(a, TLS_RX)
