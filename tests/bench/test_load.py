"""bench/load.py and bench/sandboxd.py: the generator against a real `edge serve` and a real fleet.

The end-to-end tests start `edge serve` (tests/proc.py), bench/sandboxd.py on loopback addresses, and
run bench/load.py as a process, the way users do, then read its load.json. Each runs for 1-3 s of load.
The pure tests cover the parsers, the histogram and the thresholds without sockets.
"""

from __future__ import annotations

import json
import random
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import dns.message
import pytest
from websockets.sync.client import connect as ws_connect

from bench.loadlib import options, report, wire
from bench.loadlib.driver import due, sandbox_choice
from bench.loadlib.hist import Hist, Interval, Recorder, merged
from tests.proc import EdgeProcess, edge_env
from tests.tlsutil import TestCA

REPO = Path(__file__).resolve().parents[2]
LOAD = REPO / "bench" / "load.py"
SANDBOXD = REPO / "bench" / "sandboxd.py"
TOKEN = "load-test-admin-token-0123456789abcdef"
ALL = "small=40,newconn=10,download=10,upload=10,ws=10,sse=10,churn=10"
SHORT = [
    "--ws-messages",
    "2",
    "--ws-interval",
    "0.05",
    "--sse-events",
    "3",
    "--sse-interval",
    "0.05",
    "--download-size",
    "64KiB",
    "--upload-size",
    "64KiB",
    "--timeout",
    "5",
]


# --- processes ---------------------------------------------------------------------------------------


class Fleet:
    """bench/sandboxd.py as a process: `port` is the one port it serves on every address."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(SANDBOXD), *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        line = self.proc.stdout.readline()
        if "listening" not in line:
            self.stop()
            raise RuntimeError(f"sandboxd did not start: {line}")
        self.port = int(line.rsplit(" ", 1)[1])

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def fleet():
    started: list[Fleet] = []

    def start(*args: str) -> Fleet:
        started.append(Fleet(*args))
        return started[-1]

    yield start
    for f in started:
        f.stop()


@pytest.fixture
def edge(tmp_path):
    proc = EdgeProcess(
        ["serve", "--http", "127.0.0.1:0", "--dns", "127.0.0.1:0", "--no-access-log"],
        env=edge_env(tmp_path, EDGE_ADMIN_TOKEN=TOKEN),
    )
    yield proc
    proc.stop()


def admin_call(edge: EdgeProcess, method: str, path: str, doc: dict | None = None) -> tuple[int, object]:
    req = urllib.request.Request(
        f"http://{edge.listening['admin']}{path}",
        method=method,
        data=json.dumps(doc).encode() if doc is not None else None,
        headers={"authorization": f"Bearer {TOKEN}", "content-type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            body = r.read()
            return r.status, json.loads(body) if body else None
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def run_load(tmp_path: Path, *args: str, plots: bool = False, timeout: float = 90) -> tuple[int, dict, str]:
    """Run bench/load.py; (exit status, load.json, everything it printed)."""
    out = tmp_path / "report"
    cmd = [sys.executable, str(LOAD), *args, "--out", str(out), "--quiet", "--seed", "7"]
    if not plots:
        cmd.append("--no-plots")
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    text = done.stdout + done.stderr
    doc = json.loads((out / "load.json").read_text()) if (out / "load.json").exists() else {}
    return done.returncode, doc, text


def edge_args(edge: EdgeProcess) -> list[str]:
    return [
        "--edge",
        f"http://{edge.listening['http']}",
        "--admin",
        f"http://{edge.listening['admin']}",
        "--admin-token",
        TOKEN,
    ]


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def assert_accounted(block: dict, label: str) -> None:
    assert block["sent"] == block["answered"] + block["error_total"], (label, block)
    assert block["error_total"] == sum(block["errors"].values()), (label, block)


# --- end to end ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "label, mode",
    [
        ("open loop, 2 processes", ["--rate", "120", "--procs", "2", "--connections", "8"]),
        ("closed loop", ["--connections", "4"]),
    ],
)
def test_every_scenario_runs_and_every_request_is_answered_or_an_error(tmp_path, edge, fleet, label, mode):
    """All seven scenarios and DNS against a local edge with 4 registered sandboxes: each ran, each request
    is counted once (sent = answered + errors, none failed), and the sandboxes are removed afterwards."""
    f = fleet("--hosts", "127.0.0.2-127.0.0.3", "--ports", "0")
    rc, doc, text = run_load(
        tmp_path,
        *edge_args(edge),
        "--sandboxes",
        "4",
        "--sandbox-address",
        "127.0.0.2-127.0.0.3",
        "--port",
        str(f.port),
        "--private",
        "0.5",
        *mode,
        "--duration",
        "2",
        "--mix",
        ALL,
        *SHORT,
        "--dns",
        edge.listening["dns"],
        "--qps",
        "40",
        "--threshold",
        "errors<1,dns.errors<1",
        plots=label.startswith("open"),
    )
    assert rc == 0, text
    assert doc["errors"] == {} and doc["consistent"], text
    assert_accounted(doc, "all")
    assert set(doc["scenarios"]) == {"small", "newconn", "download", "upload", "ws", "sse", "churn"}, text
    for name, block in doc["scenarios"].items():
        assert block["sent"] > 0 and block["answered"] == block["sent"], (name, block)
        assert block["latency_ms"]["p50"] > 0, name
    assert doc["meta"]["private"] == 2
    counts = doc["counts"]
    assert counts["ws_messages"] == 2 * doc["scenarios"]["ws"]["answered"]
    assert counts["sse_events"] == 3 * doc["scenarios"]["sse"]["answered"]
    assert counts["download_bytes"] == 65536 * doc["scenarios"]["download"]["answered"]
    assert {"ws_echo", "churn_routable"} <= set(doc["latency_only_ms"])
    assert doc["dns"]["sent"] > 0 and doc["dns"]["answered"] == doc["dns"]["sent"], doc["dns"]
    assert sum(p["sent"] for p in doc["timeline"]) == doc["sent"]
    assert sum(p["answered"] for p in doc["timeline"]) == doc["answered"]
    if "--rate" in mode:
        assert doc["sent"] == 240  # 120/s for 2 s, due times fixed in advance
        assert {p.name for p in (tmp_path / "report").iterdir()} >= {"latency.png", "throughput.png", "errors.png"}
    status, left = admin_call(edge, "GET", "/v1/sandboxes")
    assert status == 200 and left == [], left  # registered and churned sandboxes all removed


def test_an_unknown_sandbox_and_a_closed_port_are_errors_by_kind_and_fail_the_threshold(tmp_path, edge, fleet):
    """ID:PORT lines naming a sandbox the edge does not know and a port nothing listens on: each error is
    counted under the edge's own code, the rest answered, and the threshold makes the exit status 1."""
    f = fleet("--hosts", "127.0.0.2", "--ports", "0")
    assert admin_call(edge, "PUT", "/v1/sandboxes/real", {"address": "127.0.0.2"})[0] == 200
    closed = free_port()
    ids = tmp_path / "ids.txt"
    ids.write_text(f"# three targets\nghost:{f.port}\nreal:{closed}\nreal:{f.port}\n")
    rc, doc, text = run_load(
        tmp_path,
        "--edge",
        f"http://{edge.listening['http']}",
        "--sandboxes",
        str(ids),
        "--rate",
        "60",
        "--duration",
        "2",
        "--mix",
        "small=2,newconn=1",
        "--threshold",
        "errors<1%",
    )
    assert rc == 1, text
    assert set(doc["errors"]) == {"sandbox_not_found", "port_not_open"}, doc["errors"]
    assert all(n > 5 for n in doc["errors"].values()), doc["errors"]
    assert doc["answered"] > 5 and doc["consistent"]
    assert_accounted(doc, "all")
    assert doc["thresholds"] == [
        {"threshold": "errors<1%", "actual": pytest.approx(100 * doc["error_rate"]), "ok": False}
    ]
    assert "threshold errors<1%" in text and "FAILED" in text

    ids.write_text(f"real:{f.port}\n")  # the same run on the one good target passes
    rc, doc, text = run_load(
        tmp_path,
        "--edge",
        f"http://{edge.listening['http']}",
        "--sandboxes",
        str(ids),
        "--rate",
        "60",
        "--duration",
        "1",
        "--threshold",
        "errors<1%,p99<500ms",
    )
    assert rc == 0 and doc["passed"] and doc["errors"] == {}, text


def test_a_closed_edge_port_is_connect_refused(tmp_path):
    """Nothing listening at --edge: every request is a connect_refused error, and errors<1% fails the run."""
    ids = tmp_path / "ids.txt"
    ids.write_text("a:3000\n")
    rc, doc, text = run_load(
        tmp_path,
        "--edge",
        f"http://127.0.0.1:{free_port()}",
        "--sandboxes",
        str(ids),
        "--rate",
        "50",
        "--duration",
        "1",
        "--threshold",
        "errors<1%",
    )
    assert rc == 1, text
    assert doc["errors"] == {"connect_refused": 50} and doc["answered"] == 0 and doc["sent"] == 50


def test_open_loop_latency_counts_from_the_intended_send_time(tmp_path, edge, fleet):
    """A sandbox that sleeps 100 ms every 10th request, at 50 req/s on one connection: the slow answers
    show in p99, and so does the wait of the requests due behind them (80, 60, 40, 20 ms), which a
    closed-loop tool would not see: p90 is far above the fast answers' ~1 ms."""
    f = fleet("--hosts", "127.0.0.2", "--ports", "0", "--slow-every", "10", "--slow-ms", "100")
    rc, doc, text = run_load(
        tmp_path,
        *edge_args(edge),
        "--sandboxes",
        "1",
        "--port",
        str(f.port),
        "--rate",
        "50",
        "--connections",
        "1",
        "--duration",
        "3",
    )
    assert rc == 0 and doc["errors"] == {}, text
    assert doc["sent"] == 150
    lat = doc["latency_ms"]
    assert 95 <= lat["p99"] <= 200, lat
    assert lat["p90"] >= 40, lat  # from the send time alone this would be ~1 ms
    assert lat["p50"] < 20, lat


def test_over_https_the_sandbox_host_is_verified_and_an_untrusted_certificate_is_a_tls_error(tmp_path, fleet):
    """--edge https://: each connection's SNI is the sandbox host, checked against the wildcard certificate with
    --cacert; without it the system's CAs do not trust the test CA and every request is a tls_error."""
    ca = TestCA(tmp_path)
    cert, key = ca.issue(["*.sandbox.localhost", "sandbox.localhost"], "wildcard")
    config = tmp_path / "edge.toml"
    config.write_text(f'[https]\nlisten = "127.0.0.1:0"\ncerts = [{{cert = "{cert}", key = "{key}"}}]\n')
    f = fleet("--hosts", "127.0.0.2", "--ports", "0")
    edge = EdgeProcess(["serve", "--config", str(config), "--http", "127.0.0.1:0", "--dns", "127.0.0.1:0",
                        "--no-access-log"], env=edge_env(tmp_path, EDGE_ADMIN_TOKEN=TOKEN))  # fmt: skip
    try:
        args = ["--edge", f"https://{edge.listening['https']}", "--admin", f"http://{edge.listening['admin']}",
                "--admin-token", TOKEN, "--sandboxes", "2", "--port", str(f.port), "--rate", "40", "--duration", "1",
                "--mix", "small=2,newconn,ws,sse", *SHORT]  # fmt: skip
        rc, doc, text = run_load(tmp_path, *args, "--cacert", str(ca.path))
        assert rc == 0 and doc["errors"] == {} and doc["answered"] == 40, text
        assert set(doc["scenarios"]) == {"small", "newconn", "ws", "sse"}
        rc, doc, text = run_load(tmp_path, *args)
        assert doc["errors"] == {"tls_error": 40}, text
    finally:
        edge.stop()


def test_the_websocket_client_speaks_to_an_independent_server(tmp_path):
    """The generator's own WebSocket client against the `websockets` library's server (tests/ws_echo.py)."""
    server = subprocess.Popen(
        [sys.executable, "-m", "tests.ws_echo", "127.0.0.2"], stdout=subprocess.PIPE, text=True, cwd=REPO
    )
    try:
        port = int(server.stdout.readline())
        ids = tmp_path / "ids.txt"
        ids.write_text("x:1\n")
        rc, doc, text = run_load(
            tmp_path,
            "--edge",
            f"http://127.0.0.2:{port}",
            "--sandboxes",
            str(ids),
            "--mix",
            "ws",
            "--connections",
            "2",
            "--duration",
            "1",
            "--ws-messages",
            "5",
            "--ws-interval",
            "0",
            "--ws-size",
            "300",
        )
    finally:
        server.terminate()
        server.wait(timeout=5)
    assert rc == 0 and doc["errors"] == {}, text
    assert doc["scenarios"]["ws"]["answered"] > 5 and doc["counts"]["ws_messages"] == 5 * doc["answered"]


def test_sandboxd_echoes_websocket_messages_to_an_independent_client(fleet):
    """bench/sandboxd.py's /ws against the `websockets` library's client: text and binary, small and large."""
    f = fleet("--hosts", "127.0.0.2", "--ports", "0")
    with ws_connect(f"ws://127.0.0.2:{f.port}/ws", max_size=None) as ws:
        for message in ("hello", b"\x00\xff" * 40000, "x" * 200):
            ws.send(message)
            assert ws.recv(timeout=5) == message


def test_sandboxd_serves_each_endpoint(fleet):
    """The answers each scenario relies on, read with urllib: small, N bytes, upload count, SSE, a status."""
    f = fleet("--hosts", "127.0.0.2-127.0.0.3", "--ports", "0")
    base = f"http://127.0.0.3:{f.port}"
    assert urllib.request.urlopen(f"{base}/anything").read() == b"hello from the sandbox\n"
    assert len(urllib.request.urlopen(f"{base}/bytes?n=300000").read()) == 300000
    req = urllib.request.Request(f"{base}/upload", data=b"y" * 100001, method="POST")
    assert urllib.request.urlopen(req).read() == b"100001\n"
    body = urllib.request.urlopen(f"{base}/sse?n=3&gap=0.01").read()
    assert body.count(b"\n\n") == 3 and body.startswith(b"id: 0\ndata: event 0")
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(f"{base}/status/503")
    assert err.value.code == 503


@pytest.mark.parametrize(
    "label, args, message",
    [
        ("unknown scenario", ["--mix", "smal=1"], "unknown scenario 'smal'"),
        ("unreadable threshold", ["--threshold", "p99 under 50"], "cannot read"),
        ("threshold on a scenario not in the mix", ["--threshold", "ws.p99<5ms"], "not in --mix"),
        ("registration without the admin API", ["--sandboxes", "10"], "needs --admin"),
        ("churn without the admin API", ["--mix", "churn"], "needs --admin"),
    ],
)
def test_bad_options_stop_the_run_before_it_starts(tmp_path, label, args, message):
    ids = tmp_path / "ids.txt"
    ids.write_text("a:3000\n")
    base = ["--edge", "http://127.0.0.1:9", "--sandboxes", str(ids)]
    done = subprocess.run(
        [sys.executable, str(LOAD), *base, *args],
        capture_output=True,
        text=True,
        timeout=30,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 2 and message in done.stderr, (label, done.stderr)


# --- pure: what is read off the wire -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "label, raw, status, length, chunked, close, error",
    [
        ("content-length", b"HTTP/1.1 200 OK\r\nContent-Length: 23", 200, 23, False, False, None),
        (
            "chunked wins over length",
            b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\nTransfer-Encoding: chunked",
            200,
            -1,
            True,
            False,
            None,
        ),
        (
            "connection close",
            b"HTTP/1.1 502 Bad Gateway\r\nConnection: close\r\ncontent-length: 2",
            502,
            2,
            False,
            True,
            None,
        ),
        ("HTTP/1.0 closes by default", b"HTTP/1.0 200 OK\r\ncontent-length: 0", 200, 0, False, True, None),
        (
            "HTTP/1.0 keep-alive",
            b"HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\ncontent-length: 0",
            200,
            0,
            False,
            False,
            None,
        ),
        (
            "edge error header",
            b"HTTP/1.1 502 Bad Gateway\r\nX-Edge-Error: port_not_open\r\ncontent-length: 9",
            502,
            9,
            False,
            False,
            "port_not_open",
        ),
        (
            "a hostile error header is no kind",
            b"HTTP/1.1 502 X\r\nx-edge-error: <script>\r\ncontent-length: 0",
            502,
            0,
            False,
            False,
            None,
        ),
        ("status line alone", b"HTTP/1.1 204 No Content", 204, -1, False, False, None),
    ],
)
def test_response_heads_are_read_for_framing_and_the_edge_code(label, raw, status, length, chunked, close, error):
    head = wire.parse_head(raw)
    assert (head.status, head.length, head.chunked, head.close, head.edge_error) == (
        status,
        length,
        chunked,
        close,
        error,
    ), label


@pytest.mark.parametrize("raw", [b"SSH-2.0-OpenSSH", b"HTTP/2 200", b"HTTP/1.1 20"])
def test_a_response_that_is_not_http_1_is_refused(raw):
    with pytest.raises(ValueError):
        wire.parse_head(raw)


EDGE_BODY = json.dumps({"sandboxId": "x", "message": "m", "code": 502, "error": "sandbox_not_found"}).encode()


@pytest.mark.parametrize(
    "label, status, header, body, kind",
    [
        ("2xx is answered", 200, None, b"", None),
        ("3xx is answered", 303, None, b"", None),
        ("the header names the edge's code", 502, "port_not_open", b"", "port_not_open"),
        ("the header wins over the status", 403, "missing_token", b"", "missing_token"),
        ("an older edge: the code from its JSON body", 502, None, EDGE_BODY, "sandbox_not_found"),
        ("a sandbox's JSON with an error field is the sandbox's", 500, None, b'{"error": "db_down"}', "sandbox_5xx"),
        ("a sandbox's 5xx", 503, None, b"busy", "sandbox_5xx"),
        ("a sandbox's 4xx", 404, None, b"not here", "sandbox_4xx"),
    ],
)
def test_answers_are_classified(label, status, header, body, kind):
    assert wire.classify(status, header, body) == kind, label


def test_a_chunked_body_decodes_whatever_the_pieces():
    """Split at every byte boundary: the same body, the trailer consumed, nothing after it lost."""
    raw = b"5;ext=1\r\nhello\r\n1a\r\n" + b"z" * 26 + b"\r\n0\r\nx-trailer: 1\r\n\r\nNEXT"
    for cut in range(len(raw)):
        dec = wire.Chunked()
        body = dec.feed(raw[:cut]) + dec.feed(raw[cut:])
        assert dec.done and body == b"hello" + b"z" * 26 and dec.rest == b"NEXT", cut


def test_websocket_frames_round_trip_masked_and_not():
    for size in (0, 5, 125, 126, 65535, 65536):
        payload = bytes(random.Random(size).randrange(256) for _ in range(size))
        for mask in (None, b"\x01\x02\x03\x04"):
            frame = wire.ws_frame(wire.OP_BINARY, payload, mask)
            assert wire.ws_parse(frame[:-1] if frame[-1:] else frame[:1]) is None
            assert wire.ws_parse(frame + b"more") == (wire.OP_BINARY, payload, len(frame))
    assert wire.ws_accept("dGhlIHNhbXBsZSBub25jZQ==") == b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="  # RFC 6455 1.3


def test_dns_queries_parse_as_dns_and_replies_are_classified():
    q = dns.message.from_wire(wire.dns_query(4660, "3000-abc.sandbox.localhost"))
    assert q.id == 4660 and str(q.question[0].name) == "3000-abc.sandbox.localhost." and q.question[0].rdtype == 1
    reply = dns.message.make_response(q)
    assert wire.dns_reply(reply.to_wire()) == (4660, 0, 0, False)
    assert wire.dns_error(0, 0) == "dns_no_answer" and wire.dns_error(0, 0, True) == "dns_truncated"
    assert wire.dns_error(3, 0) == "dns_nxdomain" and wire.dns_error(0, 1) is None
    with pytest.raises(ValueError):
        wire.dns_reply(wire.dns_query(1, "a.b"))  # a query, not a response


# --- pure: options ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, expected",
    [
        ("p99<50ms", [("all", "p99", "<", 50.0, False)]),
        ("p99.9<=0.2s,errors<0.1%", [("all", "p99.9", "<=", 200.0, False), ("all", "errors", "<", 0.1, True)]),
        ("small.p50<800us", [("small", "p50", "<", 0.8, False)]),
        ("dns.errors<10", [("dns", "errors", "<", 10.0, False)]),
        ("rate>=900/s", [("all", "rate", ">=", 900.0, False)]),
    ],
)
def test_thresholds_are_read(text, expected):
    got = [(t.scope, t.metric, t.op, t.value, t.percent) for t in options.thresholds(text)]
    assert got == expected


@pytest.mark.parametrize("text", ["p99<50kg", "p0<1ms", "nope.p99<1", "errors<1ms", "p99 50"])
def test_bad_thresholds_are_refused(text):
    with pytest.raises(ValueError):
        options.thresholds(text)


@pytest.mark.parametrize(
    "parse, text, expected",
    [
        (options.mix, "small=90,ws=5,sse=5", {"small": 90.0, "ws": 5.0, "sse": 5.0}),
        (options.mix, "small, churn=0", {"small": 1.0}),
        (options.size, "64KiB", 65536),
        (options.size, "1M", 1_000_000),
        (options.size, "1.5MiB", 1572864),
        (options.seconds, "2m", 120.0),
        (options.seconds, "500ms", 0.5),
        (options.pick, "zipf:1.2", 1.2),
        (options.pick, "uniform", 0.0),
        (options.addresses, "127.1.0.254-127.1.1.1", ["127.1.0.254", "127.1.0.255", "127.1.1.0", "127.1.1.1"]),
        (options.addresses, "127.2.0.0/30", ["127.2.0.1", "127.2.0.2"]),
        (options.ports, "3000-3002,4000", [3000, 3001, 3002, 4000]),
    ],
)
def test_option_values_are_read(parse, text, expected):
    assert parse(text) == expected


def test_a_sandboxes_file_takes_ids_ports_and_tokens():
    got = options.sandboxes_file("# fleet\nAbc:3000\n\nxyz-1:8080:tok3n  # private\n")
    assert got == [options.Sandbox("abc", 3000), options.Sandbox("xyz-1", 8080, "tok3n")]
    for bad in ("abc", "abc:http", "abc:70000", "", "# only a comment\n"):
        with pytest.raises(ValueError):
            options.sandboxes_file(bad)


@pytest.mark.parametrize(
    "url, resolve, connect, port, suffix",
    [
        ("http://127.0.0.1:8080", None, "127.0.0.1", 8080, ":8080"),
        ("https://edge.example.com", "203.0.113.10", "203.0.113.10", 443, ""),
        ("https://edge.example.com", "203.0.113.10:8443", "203.0.113.10", 8443, ""),
        ("http://edge.example.com:8080", "[2001:db8::1]:80", "2001:db8::1", 80, ":8080"),
    ],
)
def test_the_target_connects_where_resolve_says_and_keeps_the_urls_port_in_host(url, resolve, connect, port, suffix):
    t = options.target(url, resolve)
    assert (t.connect, t.port, t.suffix) == (connect, port, suffix)


# --- pure: timing, histograms, reports ----------------------------------------------------------------------


def test_due_times_are_fixed_by_the_rate_and_the_ramp():
    """At 100/s: 10 ms apart. With a 2 s ramp to 100/s: 100 requests due in the ramp (the area under it), then
    100 a second."""
    assert [round(due(k, 100, 0), 6) for k in range(3)] == [0.0, 0.01, 0.02]
    in_ramp = sum(1 for k in range(1000) if due(k, 100, 2.0) < 2.0)
    assert in_ramp == 100
    assert sum(1 for k in range(1000) if 2.0 <= due(k, 100, 2.0) < 3.0) == 100
    times = [due(k, 100, 2.0) for k in range(400)]
    assert times == sorted(times)


def test_zipf_choice_makes_the_first_sandboxes_hot():
    sbs = [options.Sandbox(f"s{i}", 3000) for i in range(100)]
    rng = random.Random(1)
    uniform = [sandbox_choice(sbs, 0).pick(rng).id for _ in range(20000)]
    zipf = [sandbox_choice(sbs, 1.0).pick(rng).id for _ in range(20000)]
    assert 150 < uniform.count("s0") < 260
    assert zipf.count("s0") > 20000 * 0.15 and zipf.count("s0") > 5 * zipf.count("s9")


def test_histogram_percentiles_are_within_two_percent():
    rng = random.Random(3)
    values = sorted(rng.lognormvariate(-6, 1.5) for _ in range(50000))  # seconds, ~2.5 ms median
    h = Hist()
    for v in values:
        h.record(v)
    for q in (50, 90, 99, 99.9):
        exact = values[int(len(values) * q / 100) - 1] * 1000
        assert h.percentile_ms(q) == pytest.approx(exact, rel=0.02), q
    assert h.percentile_ms(100) == pytest.approx(values[-1] * 1000)
    halves = Hist(), Hist()
    for i, v in enumerate(values):
        halves[i % 2].record(v)
    halves[0].merge(halves[1])
    assert halves[0].counts == h.counts and halves[0].n == h.n


def test_a_report_sums_seconds_and_thresholds_fail_on_errors_and_latency():
    rec = Recorder(0.0)
    for i in range(100):
        rec.sent("small", i / 100)
        if i % 10:
            rec.answered("small", i / 100 + 0.002, 0.002 if i % 45 else 0.2)
        else:
            rec.error("small", "port_not_open", i / 100 + 0.001)
    timeline = rec.take()
    meta = {"duration": 1.0, "ramp": 0.0}
    doc = report.summary(timeline, meta, {0: [(0.0, 0.0), (1.0, 0.5)]})
    assert (doc["sent"], doc["answered"], doc["errors"]) == (100, 90, {"port_not_open": 10})
    assert doc["consistent"] and doc["generator"]["cpu_percent"] == {"0": 50.0}
    checks = report.evaluate(options.thresholds("errors<11%,errors<10%,p50<3ms,p99<100ms,small.max<=250ms"), doc)
    assert [c["ok"] for c in checks] == [True, False, True, False, True]
    assert checks[1]["actual"] == pytest.approx(10.0)


def test_an_interval_merge_is_the_sum_of_its_parts():
    a, b = Interval(), Interval()
    a.sent["small"] += 3
    a.errors[("small", "reset")] += 1
    b.sent["small"] += 2
    b.errors[("small", "reset")] += 2
    b.hist("small").record(0.001)
    m = merged([a, b])
    assert m.sent["small"] == 5 and m.error_count() == 3 and m.latency["small"].n == 1
