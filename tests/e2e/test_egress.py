"""The egress router end to end: a sandbox namespace whose TCP nftables redirects to edge, an internet
namespace with HTTP, TLS, echo and DNS servers (tests/egress_world.py), real clients in the sandbox."""

from __future__ import annotations

import json

import pytest
import trio

from edge.egress.stats import EGRESS
from tests.egress_world import (
    NOT_A_SANDBOX,
    PORT,
    RESOLVER,
    SANDBOX_ADDRESSES,
    SANDBOX_V6,
    egress_world,
    skip_reason,
)
from tests.proc import EdgeProcess, edge_cli, edge_env

pytestmark = pytest.mark.skipif(skip_reason() is not None, reason=skip_reason() or "")

BOX = SANDBOX_ADDRESSES[0]


@pytest.fixture
async def world(nursery, tmp_path):
    async with egress_world(tmp_path) as w:
        await w.start_edge(nursery)
        yield w


def _json(done) -> dict:
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


# A client in the sandbox that talks to 203.0.113.10:7000 (the echo) and says what happened.
ECHO = """
import socket, sys
try:
    s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5)
    s.sendall(b"ping")
    print("echo:" + s.recv(100).decode())
except ConnectionResetError:
    print("reset")
"""


async def test_allowed_domain_passes_over_http_and_https_with_the_certificate_verified(world) -> None:
    """No internet but api.example.com: both ports reach the real server; curl verifies its certificate
    (edge never terminates TLS), and the log line says who, where, which rule and how many bytes."""
    world.sandbox("box", internet_access=False, allow_out=["api.example.com"])
    doc = _json(await world.curl("http://api.example.com/"))
    assert doc == {"server": "http", "local": "198.51.100.10:80", "host": "api.example.com", "path": "/"}
    doc = _json(await world.curl("https://api.example.com/tls"))
    assert doc["server"] == "tls" and doc["sni"] == "api.example.com" and doc["local"] == "198.51.100.10:443"
    line = await world.log(port=443)
    assert line["sandbox"] == "box" and line["client"] == BOX and line["dst"] == "198.51.100.10"
    assert line["name"] == "api.example.com" and line["via"] == "sni"
    assert line["decision"] == "allow" and line["rule"] == "allow_out api.example.com"
    assert line["upstream"] == "198.51.100.10" and line["bytes_out"] > 200 and line["bytes_in"] > 500
    assert line["duration_ms"] > 0 and line["error"] is None


async def test_denied_http_gets_a_403_naming_the_sandbox_and_the_rule(world) -> None:
    world.sandbox("box", deny_out=["*.example.org"])
    done = await world.curl("http://blocked.example.org/", "-w", "\n%{http_code}")
    body, status = done.stdout.decode().rsplit("\n", 1)
    assert status == "403"
    doc = json.loads(body)
    assert doc["sandboxId"] == "box" and doc["error"] == "egress_denied"
    assert "blocked.example.org" in doc["message"] and "deny_out *.example.org" in doc["message"]
    html = await world.curl("http://blocked.example.org/", "-H", "Sec-Fetch-Mode: navigate")
    assert b"<html" in html.stdout and b"deny_out *.example.org" in html.stdout
    assert (await world.log(name="blocked.example.org"))["decision"] == "deny"


async def test_denied_https_gets_a_tls_access_denied_alert(world) -> None:
    """curl and openssl both say "access denied", not a silent close."""
    world.sandbox("box", deny_out=["blocked.example.org"])
    done = await world.curl("https://blocked.example.org/")
    assert done.returncode == 35 and b"alert access denied" in done.stderr, done.stderr
    done = await world.run(
        "openssl",
        "s_client",
        "-connect",
        "198.51.100.20:443",
        "-servername",
        "blocked.example.org",
        "-bind",
        f"{BOX}:0",
    )
    assert b"alert access denied" in done.stderr, done.stderr
    line = await world.log(name="blocked.example.org", via="sni")
    assert line["decision"] == "deny" and line["rule"] == "deny_out blocked.example.org"


async def test_denied_other_port_is_reset_and_allowed_one_echoes(world) -> None:
    world.sandbox("box", deny_out=["203.0.113.0/24"])
    done = await world.python(ECHO, "203.0.113.10", "7000")
    assert done.stdout.strip() == b"reset", done
    assert (await world.log(port=7000))["rule"] == "deny_out 203.0.113.0/24"
    world.sandbox("box", deny_out=["198.51.100.0/24"])
    done = await world.python(ECHO, "203.0.113.10", "7000")
    assert done.stdout.strip() == b"echo:ping", done
    line = await world.log(port=7000, decision="allow")
    assert line["via"] == "none" and line["bytes_out"] == 4 and line["bytes_in"] == 4


async def test_wildcard_matches_subdomains_and_the_apex_needs_its_own_entry(world) -> None:
    world.sandbox("box", internet_access=False, allow_out=["*.example.com"])
    assert _json(await world.curl("https://www.example.com/"))["sni"] == "www.example.com"
    assert (await world.curl("https://example.com/")).returncode == 35  # the apex: not matched
    assert (await world.log(name="example.com"))["rule"] == "internet_access false"
    world.sandbox("box", internet_access=False, allow_out=["*.example.com", "example.com"])
    assert _json(await world.curl("https://example.com/"))["sni"] == "example.com"


async def test_allow_wins_over_deny(world) -> None:
    """An allowed domain inside a denied range passes; its neighbour in the range does not."""
    world.sandbox("box", allow_out=["api.example.com"], deny_out=["198.51.100.0/24"])
    assert _json(await world.curl("http://api.example.com/"))["host"] == "api.example.com"
    done = await world.curl("http://other.example.org/", "-w", "%{http_code}")
    assert done.stdout.endswith(b"403")
    assert (await world.log(name="other.example.org"))["rule"] == "deny_out 198.51.100.0/24"


async def test_no_internet_refuses_every_port_in_its_own_way(world) -> None:
    world.sandbox("box", internet_access=False)
    http = await world.curl("http://api.example.com/", "-w", "%{http_code}")
    assert http.stdout.endswith(b"403") and b"internet_access false" in http.stdout
    assert b"alert access denied" in (await world.curl("https://api.example.com/")).stderr
    assert (await world.python(ECHO, "203.0.113.10", "7000")).stdout.strip() == b"reset"


async def test_a_runtime_change_applies_to_new_connections_within_a_second(world) -> None:
    world.sandbox("box")
    assert _json(await world.curl("http://api.example.com/"))["host"] == "api.example.com"
    world.sandbox("box", internet_access=False)
    start = trio.current_time()
    while (await world.curl("http://api.example.com/", "-w", "%{http_code}")).stdout[-3:] != b"403":
        assert trio.current_time() - start < 1.0
        await trio.sleep(0.05)
    world.sandbox("box", internet_access=False, allow_out=["api.example.com"])
    assert _json(await world.curl("http://api.example.com/"))["host"] == "api.example.com"


async def test_an_allowed_name_that_resolves_to_a_private_address_is_refused(world, nursery) -> None:
    """intranet.example.com is allowed but its address is private: refused, unless egress.allow_private."""
    world.sandbox("box", internet_access=False, allow_out=["intranet.example.com"])
    done = await world.curl("http://intranet.example.com/", "-w", "%{http_code}")
    assert done.stdout.endswith(b"403")
    assert (await world.log(name="intranet.example.com"))["rule"] == (
        "always_denied private 172.16.0.0/12 (172.31.99.10)"
    )
    await world.start_edge(nursery, allow_private=("172.31.99.0/24",))
    assert _json(await world.curl("http://intranet.example.com/"))["local"] == "172.31.99.10:80"


async def test_the_metadata_address_is_refused_even_when_everything_is_allowed(world) -> None:
    world.sandbox("box")
    done = await world.curl("http://169.254.169.254/latest/meta-data/", "-w", "%{http_code}")
    assert done.stdout.endswith(b"403")
    assert (await world.log(dst="169.254.169.254"))[
        "rule"
    ] == "always_denied link-local 169.254.0.0/16 (169.254.169.254)"
    world.sandbox("box", allow_out=["metadata.example.com"])
    done = await world.curl("http://metadata.example.com/", "-w", "%{http_code}")
    assert done.stdout.endswith(b"403")


async def test_a_name_allowed_by_domain_is_dialled_by_edge_not_at_the_sandbox_address(world) -> None:
    """A sandbox that pins api.example.com to another server's address still reaches api.example.com."""
    world.sandbox("box", internet_access=False, allow_out=["api.example.com"])
    done = await world.curl("http://api.example.com/", "--resolve", "api.example.com:80:192.0.2.10")
    assert _json(done)["local"] == "198.51.100.10:80"
    line = await world.log(name="api.example.com")
    assert line["dst"] == "192.0.2.10" and line["upstream"] == "198.51.100.10"


async def test_a_cname_chain_is_followed_by_edge_resolver(world) -> None:
    world.sandbox("box", internet_access=False, allow_out=["cdn.example.com"])
    assert _json(await world.curl("https://cdn.example.com/"))["local"] == "198.51.100.11:443"


SPLIT_HELLO = """
import socket, ssl, sys, time
ca, host, address = sys.argv[1], sys.argv[2], sys.argv[3]
ctx = ssl.create_default_context(cafile=ca)
incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
tls = ctx.wrap_bio(incoming, outgoing, server_hostname=host)
try:
    tls.do_handshake()
except ssl.SSLWantReadError:
    pass
first = outgoing.read()
hs, pos = b"", 0
while pos < len(first):
    n = int.from_bytes(first[pos + 3:pos + 5], "big"); hs += first[pos + 5:pos + 5 + n]; pos += 5 + n
sock = socket.create_connection((address, 443), source_address=(sys.argv[4], 0))
sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
cuts = [0, 3, 60, 61, len(hs)]  # four records: 3 bytes, 57, 1, the rest; each sent in two writes
for a, b in zip(cuts, cuts[1:]):
    record = b"\\x16\\x03\\x01" + (b - a).to_bytes(2, "big") + hs[a:b]
    for piece in (record[:2], record[2:]):
        sock.sendall(piece)
        time.sleep(0.05)
def pump():
    data = outgoing.read()
    if data:
        sock.sendall(data)
while True:
    try:
        tls.do_handshake()
        break
    except ssl.SSLWantReadError:
        pump()
        incoming.write(sock.recv(65536))
pump()
tls.write(b"GET /split HTTP/1.1\\r\\nHost: " + host.encode() + b"\\r\\n\\r\\n")
pump()
out = b""
while True:
    data = sock.recv(65536)
    if not data:
        break
    incoming.write(data)
    try:
        out += tls.read(65536)
    except ssl.SSLWantReadError:
        pass
    except ssl.SSLZeroReturnError:
        break
print(out.split(b"\\r\\n\\r\\n", 1)[1].decode())
"""


async def test_a_client_hello_split_over_records_and_reads_is_read(world) -> None:
    """Four records, eight writes 50 ms apart: the SNI is found, and the handshake (which the server
    completes over the re-fragmented hello) verifies end to end."""
    world.sandbox("box", internet_access=False, allow_out=["*.example.com"])
    done = await world.python(SPLIT_HELLO, str(world.ca.path), "www.example.com", "192.0.2.11", BOX)
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert doc["sni"] == "www.example.com" and doc["path"] == "/split"
    assert (await world.log(name="www.example.com", via="sni"))["rule"] == "allow_out *.example.com"


async def test_traffic_from_an_address_that_is_no_sandbox_is_refused(world) -> None:
    world.sandbox("box")
    done = await world.curl("http://api.example.com/", source=NOT_A_SANDBOX)
    assert done.returncode != 0
    line = await world.log(client=NOT_A_SANDBOX)
    assert line["sandbox"] is None and line["decision"] == "deny" and line["rule"] == "no sandbox"


async def test_a_connection_made_to_the_listener_itself_is_refused(world) -> None:
    """Not redirected (its original destination is the listener): dialling it would loop."""
    world.sandbox("box")
    done = await world.python(ECHO, "10.77.0.1", "15001")
    assert done.stdout.strip() == b"reset", done
    assert (await world.log(dst="10.77.0.1"))["rule"] == "not redirected"


async def test_udp_is_dropped_but_dns_to_the_resolver(world) -> None:
    """The ruleset's forward chain: DNS to 203.0.113.53 answers; a DNS query elsewhere is dropped
    (a timeout, where without the drop the internet would refuse it at once)."""
    ok = await world.run("dig", "+short", "+tries=1", "+time=2", "@203.0.113.53", "api.example.com")
    assert ok.stdout.strip() == b"198.51.100.10", ok
    dropped = await world.run("dig", "+tries=1", "+time=1", "@198.51.100.10", "api.example.com")
    assert b"timed out" in dropped.stdout + dropped.stderr, dropped


async def test_counters_follow_the_decisions(world) -> None:
    """edge_egress_connections_total{decision} and the bytes each way."""
    before = dict(EGRESS.connections), EGRESS.bytes_in, EGRESS.bytes_out
    world.sandbox("box", deny_out=["blocked.example.org"])
    await world.curl("http://api.example.com/")
    await world.curl("http://blocked.example.org/")
    assert EGRESS.connections["allow"] == before[0]["allow"] + 1
    assert EGRESS.connections["deny"] == before[0]["deny"] + 1
    assert EGRESS.bytes_in > before[1] and EGRESS.bytes_out > before[2]
    names = {f.name for f in EGRESS.families()}
    assert {"edge_egress_connections", "edge_egress_bytes", "edge_egress_active_connections"} <= names


BIG_ECHO = """
import socket, sys, threading
s = socket.create_connection(("203.0.113.10", 7000), timeout=10)
payload = bytes(range(256)) * 8192  # 2 MiB
threading.Thread(target=lambda: (s.sendall(payload), s.shutdown(socket.SHUT_WR))).start()
got = bytearray()
while True:
    data = s.recv(1 << 16)
    if not data:
        break
    got += data
print(len(got), got == payload)
"""


async def test_large_transfers_arrive_whole_both_ways(world) -> None:
    """Past the first 64 KiB a direction moves by splice(2): a 2 MiB echo round trip and an 8 MiB
    download arrive byte for byte, and EOF is passed on as a half-close."""
    world.sandbox("box", internet_access=False, allow_out=["example.com", "203.0.113.10"])
    done = await world.python(BIG_ECHO)
    assert done.stdout.split() == [b"2097152", b"True"], done
    line = await world.log(port=7000)
    assert line["bytes_out"] == line["bytes_in"] == 2097152
    done = await world.curl("http://example.com/bytes/8388608", "-o", "/dev/null", "-w", "%{size_download}")
    assert done.stdout == b"8388608"
    assert (await world.log(name="example.com"))["bytes_in"] > 8388608


async def test_an_allowed_name_that_does_not_resolve_is_reset_and_logged_as_an_error(world) -> None:
    world.sandbox("box", internet_access=False, allow_out=["*.example.com"])
    done = await world.curl("http://nx.example.com/", "--resolve", "nx.example.com:80:192.0.2.10")
    assert done.returncode != 0
    line = await world.log(name="nx.example.com")
    assert line["decision"] == "error" and line["error"] == "resolve: nx.example.com: NXDOMAIN"


async def test_an_ipv6_sandbox_is_decided_and_dialled_the_same(world) -> None:
    """fd77::2 redirected by the ruleset's ip6 rules to the same dual-stack listener: SO_ORIGINAL_DST
    at SOL_IPV6; the name edge dials resolves to an IPv6 address (AAAA)."""
    world.sandbox("box6", SANDBOX_V6, internet_access=False, allow_out=["v6.example.com"])
    done = await world.curl(
        "https://v6.example.com/", "-6", "--resolve", "v6.example.com:443:[2001:db8:10::10]", source=SANDBOX_V6
    )
    doc = _json(done)
    assert doc["sni"] == "v6.example.com" and doc["local"] == "2001:db8:10::10:443"
    line = await world.log(sandbox="box6")
    assert line["client"] == SANDBOX_V6 and line["dst"] == "2001:db8:10::10" and line["upstream"] == "2001:db8:10::10"
    done = await world.curl("http://[2001:db8:10::10]/", "-6", "-w", "%{http_code}", source=SANDBOX_V6)
    assert done.stdout.endswith(b"403")
    assert (await world.log(sandbox="box6", port=80))["rule"] == "internet_access false"


# --- the wiring: `edge serve --egress`, the catalog, and the CLI that writes it --------------------------


async def _status_within(world, url: str, status: bytes, seconds: float = 1.0) -> None:
    """Poll until curl from the sandbox gets `status` for `url`, failing after `seconds`."""
    start = trio.current_time()
    while (got := (await world.curl(url, "-o", "/dev/null", "-w", "%{http_code}")).stdout) != status:
        assert trio.current_time() - start < seconds, (url, got, status)
        await trio.sleep(0.05)


async def test_edge_serve_egress_applies_what_the_cli_writes_to_the_catalog_within_a_second(tmp_path) -> None:
    """`edge serve --egress` reads the policy `edge sandbox add/network` write; a change applies within a
    second, a bad entry is refused with the reason and changes nothing."""
    async with egress_world(tmp_path) as world:
        conf = tmp_path / "edge.toml"
        conf.write_text(f'[egress]\nresolver = "{RESOLVER}"\n')
        env = edge_env(tmp_path, EDGE_CATALOG=f"sqlite:///{tmp_path}/catalog.db", EDGE_CONFIG=str(conf))
        edge = EdgeProcess(
            ["serve", "--http", "127.0.0.1:0", "--dns", "127.0.0.1:0", "--log-format", "text"]
            + ["--egress", f"[::]:{PORT}"],
            env,
        )
        try:
            assert edge.port("egress") == PORT
            add = ["sandbox", "add", "box", "--address", BOX, "--no-internet", "--allow-out", "api.example.com"]
            done = edge_cli([*add, "--no-wait", "--json"], env)
            assert done.returncode == 0, done.stderr
            assert json.loads(done.stdout)["allow_out"] == ["api.example.com"]
            await _status_within(world, "http://api.example.com/", b"200")
            await _status_within(world, "http://blocked.example.org/", b"403")

            network = ["sandbox", "network", "box", "--allow-out", "blocked.example.org", "--no-wait"]
            assert (done := edge_cli(network, env)).returncode == 0, done.stderr
            await _status_within(world, "http://blocked.example.org/", b"200")
            await _status_within(world, "http://api.example.com/", b"403")

            done = edge_cli(["sandbox", "network", "box", "--allow-out", "not a name", "--no-wait"], env)
            assert done.returncode == 1 and "allow_out: 'not a name' is not an IP, a CIDR or a domain" in done.stderr
            shown = json.loads(edge_cli(["sandbox", "show", "box", "--json"], env).stdout)
            assert (shown["internet_access"], shown["allow_out"]) == (False, ["blocked.example.org"])

            done = edge_cli(["sandbox", "network", "box", "--internet", "--no-allow-out", "--no-wait"], env)
            assert done.returncode == 0, done.stderr
            await _status_within(world, "http://api.example.com/", b"200")
        finally:
            out = edge.stop()
        assert "edge: egress listening on [::]:15001" in out
