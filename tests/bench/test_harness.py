"""The benchmark harness's pure helpers: wrk output parsing, run statistics, the scenario registry,
the Markdown report, the TLS scenarios' certificate, config and verdicts, and the access-log scenario's.

No benchmark runs here and nothing is timed; these only keep the harness's arithmetic honest.
"""

import socket
import ssl
import threading
import tomllib

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from bench import run
from bench.clients import _complete
from bench.peers import (
    CERT_NAMES,
    NGINX_PROXY,
    Certificate,
    certificate,
    edge_tls_config,
    median,
    metric,
    parse_wrk,
    spread,
    toml,
)
from bench.report import markdown
from bench.scenarios import (
    BY_NAME,
    LOG_TARGET,
    SCENARIOS,
    TLS_TARGETS,
    Row,
    Scenario,
    _tls_result,
    compare,
    count_lines,
    logged_result,
    order,
)
from edge.config import load

META = {
    "date": "d",
    "commit": "c",
    "cpus": 2,
    "cpu_model": "cpu",
    "python": "3.11",
    "nginx": "n",
    "wrk": "w",
    "proxy_cpu": "0",
    "load_cpu": "1",
    "args": {"runs": 1},
    "load_average_before": [1.0, 1.0, 1.0],
    "load_average_after": [1.0, 1.0, 1.0],
}

WRK_FAST = """Running 1s test @ http://127.0.0.2:57237/
  1 threads and 4 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency    68.24us  136.73us   3.68ms   99.37%
    Req/Sec    49.90k     3.66k   55.53k    63.64%
  Latency Distribution
     50%   59.00us
     75%   67.00us
     90%   74.00us
     99%  133.00us
  54548 requests in 1.10s, 8.90MB read
Requests/sec:  49599.73
Transfer/sec:      8.09MB
"""

WRK_ERRORS = """Running 2s test @ http://127.0.0.1:8080/
  1 threads and 50 connections
  Latency Distribution
     50%   26.56ms
     75%   30.00ms
     90%   41.49ms
     99%    1.20s
  3590 requests in 2.00s, 500.00KB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 5
Requests/sec:   1795.04
Transfer/sec:    250.00KB
"""


def test_wrk_rate_and_percentiles_in_milliseconds():
    """Microsecond percentiles are converted to ms; a clean run has no errors."""
    r = parse_wrk(WRK_FAST)
    assert r["rps"] == 49599.73
    assert r["requests"] == 54548
    assert abs(r["p50"] - 0.059) < 1e-9 and abs(r["p99"] - 0.133) < 1e-9
    assert r["non2xx"] == 0 and r["socket_errors"] == 0


def test_wrk_errors_and_second_percentiles_are_counted():
    """Socket errors are summed, non-2xx kept, a percentile in seconds becomes ms."""
    r = parse_wrk(WRK_ERRORS)
    assert r["socket_errors"] == 3
    assert r["non2xx"] == 5
    assert r["p99"] == 1200.0
    assert r["p50"] == 26.56


def test_median_of_odd_and_even_counts():
    assert median([3, 1, 2]) == 2
    assert median([4, 1, 3, 2]) == 2.5
    assert spread([5, 1, 3]) == {"median": 3, "min": 1, "max": 5, "runs": [5, 1, 3]}


def test_runs_alternate_which_proxy_goes_first():
    assert order(0) == ("edge", "nginx")
    assert order(1) == ("nginx", "edge")


def test_compare_gives_ratio_of_medians_and_sums_errors():
    """Errors are summed over runs, never hidden behind a median."""
    runs = {
        "edge": [{"rps": 100, "non2xx": 1}, {"rps": 300, "non2xx": 0}, {"rps": 200, "non2xx": 2}],
        "nginx": [{"rps": 1000, "non2xx": 0}, {"rps": 900, "non2xx": 0}, {"rps": 1100, "non2xx": 0}],
    }
    out = compare(runs, ("rps",))
    assert out["edge"]["rps"]["median"] == 200
    assert out["edge"]["non2xx"] == 3
    assert out["ratio"]["rps"] == 0.2


def test_markdown_table_shows_medians_ranges_and_ratio():
    small = compare(
        {
            "edge": [{"rps": 1800.0, "p50": 26.0, "p99": 57.0}],
            "nginx": [{"rps": 22000.0, "p50": 2.0, "p99": 9.0}],
        },
        ("rps", "p50", "p99"),
    )
    out = {"meta": META, "scenarios": {"small": {"setup": {"connections": 50, "seconds": 10}, **small}}}
    text = markdown(out)
    assert "| small requests | req/s | 1,800 | 1,800-1,800 | 22,000 | 22,000-22,000 | 0.082 |" in text
    assert "| 100 MiB download | MB/s | not run |" in text


def test_run_takes_its_scenarios_and_step_count_from_the_registry():
    """--only defaults to every entry in registry order; each entry counts its own progress lines."""
    assert run.parse_args([]).only == [sc.name for sc in SCENARIOS]
    assert len(BY_NAME) == len(SCENARIOS)
    a = run.parse_args(["--only", "small,bulk,idle", "--runs", "2"])
    assert run.steps(a) == 1 + 2 * 2 + 3 * 2 + 2 * 2 + 1  # micro, small, bulk, idle, DNS
    with pytest.raises(SystemExit):
        run.parse_args(["--only", "small,nope"])


def test_a_new_scenario_is_reported_from_its_entry_alone():
    """An entry's rows reach the main table and the CPU table, its note the lines below it."""
    entry = Scenario(
        "echo2",
        run=lambda b: {},
        steps=lambda a: 1,
        rows=(Row("echo twice", "req/s", "rps"),),
        note="echo2: {setup[n]} things; errors {errors}",
    )
    result = compare(
        {"edge": [{"rps": 1000.0, "proxy_cpu_pct": 99.0}], "nginx": [{"rps": 2000.0, "proxy_cpu_pct": 50.0}]},
        ("rps",),
    )
    out = {"meta": META, "scenarios": {"echo2": {"setup": {"n": 3}, **result}}}
    text = markdown(out, registry=(*SCENARIOS, entry))
    assert "| echo twice | req/s | 1,000 | 1,000-1,000 | 2,000 | 2,000-2,000 | 0.500 |" in text
    assert "- echo2: 3 things; errors edge: none; nginx: none" in text
    assert "| echo twice | 99 | 50 |" in text


def test_fast_lane_is_reported_against_the_h11_lane():
    """The fastlane entry gives a row per lane and the ratio edge/http/README.md quotes."""
    runs = {
        "fast lane": [{"rps": 15000.0, "p50": 3.0, "p99": 9.0, "socket_errors": 0}],
        "h11 lane": [{"rps": 4700.0, "p50": 10.0, "p99": 30.0, "socket_errors": 2}],
    }
    result = {
        "setup": {"connections": 50, "seconds": 10},
        **compare(runs, ("rps", "p50", "p99"), ("fast lane", "h11 lane")),
    }
    text = markdown({"meta": META, "scenarios": {"fastlane": result}})
    assert "`http.fast_lane = true` and `= false`" in text
    assert "| h11 lane | 4,700 | 4,700-4,700 | - | 10.0 | 30.0 | socket_errors 2 |" in text
    assert "| fast lane | 15,000 | 15,000-15,000 | - | 3.00 | 9.00 | none |" in text
    assert "fast lane / h11 lane: 3.19x req/s" in text


def test_a_skipped_scenario_is_said_not_hidden():
    text = markdown({"meta": META, "scenarios": {"fastlane": {"skipped": "this edge has no http.fast_lane"}}})
    assert "- fastlane: skipped, this edge has no http.fast_lane" in text


def test_edge_config_for_a_lane_is_toml_edge_reads():
    """peers.toml writes what `edge serve --config` loads (tables of scalars)."""
    config = {"log_format": "text", "http": {"fast_lane": False, "head_timeout": 2.5, "read_size": 4096}}
    assert tomllib.loads(toml(config)) == config


# --- TLS ---------------------------------------------------------------------------------------------


def _tls_runs(edge_tls: float, nginx_tls: float, edge_plain: float, nginx_plain: float, cpu: float = 100.0) -> dict:
    def side(rate: float) -> list[dict]:
        return [{"cps": rate, "cps_per_cpu": rate * 100 / cpu, "proxy_cpu_pct": cpu, "socket_errors": 0}]

    return {
        "tls": {"edge": side(edge_tls), "nginx": side(nginx_tls)},
        "plain": {"edge": side(edge_plain), "nginx": side(nginx_plain)},
    }


def test_tls_scenarios_are_in_the_registry_with_their_step_counts():
    """tls_handshake, tls_small, tls_bulk: four progress lines per run (two proxies, TLS and plain)."""
    a = run.parse_args(["--only", "tls_handshake,tls_small", "--runs", "3", "--micro", "0", "--no-dns"])
    assert run.steps(a) == 4 * 3 + 4 * 3
    assert {"tls_handshake", "tls_small", "tls_bulk"} <= set(BY_NAME)
    assert set(TLS_TARGETS) == {"tls_handshake", "tls_small", "tls_bulk"}


def test_tls_result_reads_the_target_off_the_tls_comparison_with_plain_beside_it():
    """The verdict is edge / nginx over TLS, as measured and per CPU-second; plain and TLS / plain beside it."""
    result = _tls_result(
        "tls_handshake", _tls_runs(300.0, 1000.0, 1500.0, 6000.0, cpu=50.0), ("cps", "cps_per_cpu"), {}
    )
    t = result["target"]
    assert t["at_least"] == 0.25 and t["ratio"] == 0.3 and t["verdict"] == "met"
    assert t["ratio_per_cpu"] == 0.3 and t["verdict_per_cpu"] == "met"
    assert t["plain_ratio"] == 0.25
    assert t["kept"] == {"edge": 0.2, "nginx": 1000.0 / 6000.0}
    missed = _tls_result("tls_handshake", _tls_runs(200.0, 1000.0, 1.0, 1.0), ("cps", "cps_per_cpu"), {})
    assert missed["target"]["verdict"] == "MISSED"


def test_tls_rows_and_target_reach_the_report():
    """TLS rows and the same-run plain rows in the main table, the target in the note, both in the CPU table."""
    result = _tls_result(
        "tls_handshake", _tls_runs(300.0, 1000.0, 1500.0, 6000.0), ("cps", "cps_per_cpu"), {"in_flight": 16}
    )
    text = markdown({"meta": META, "scenarios": {"tls_handshake": result}})
    assert (
        "| TLS: new connections (full handshake + GET) | conn/s | 300 | 300-300 | 1,000 | 1,000-1,000 | 0.300 |" in text
    )
    assert "| plain: new connections (same run) | conn/s | 1,500 | 1,500-1,500 | 6,000 | 6,000-6,000 | 0.250 |" in text
    assert (
        "- TLS new connections: target edge >= 0.25x nginx: measured 0.30x (met), per proxy CPU-second 0.30x (met)"
        in text
    )
    assert "TLS / plain: edge 0.20, nginx 0.17; 16 in flight" in text
    assert "errors tls edge: none; nginx: none, plain edge: none; nginx: none" in text
    assert "| TLS: new connections (full handshake + GET) | 100 | 100 |" in text
    assert "| plain: new connections (same run) | 100 | 100 |" in text


def test_bench_certificate_is_one_p256_leaf_for_the_sandbox_wildcard_that_the_ca_verifies():
    """The run's certificate loads into a server context and verifies for a sandbox name with the CA."""
    with certificate() as cert:
        leaf = x509.load_pem_x509_certificate(cert.cert.read_bytes())
        assert isinstance(leaf.public_key(), ec.EllipticCurvePublicKey)
        assert leaf.public_key().curve.name == "secp256r1"
        sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert tuple(sans.get_values_for_type(x509.DNSName)) == CERT_NAMES
        server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        server.load_cert_chain(cert.cert, cert.key)
        client = ssl.create_default_context(cafile=str(cert.ca))
        a, b = socket.socketpair()
        with a, b:
            s = server.wrap_socket(a, server_side=True, do_handshake_on_connect=False)
            c = client.wrap_socket(b, server_hostname="3000-bench.sandbox.localhost", do_handshake_on_connect=False)
            done = threading.Thread(target=s.do_handshake)
            done.start()
            c.do_handshake()
            done.join(5)
            assert c.version() in ("TLSv1.2", "TLSv1.3")
    assert not cert.cert.exists()  # a throwaway: gone with the run


def test_edge_https_config_is_toml_with_an_inline_table_of_certs(tmp_path):
    """peers.toml writes `certs = [{cert = ..., key = ...}]`, which edge's config loader reads back."""
    cert = Certificate(tmp_path / "ca.pem", tmp_path / "fullchain.pem", tmp_path / "privkey.pem", CERT_NAMES)
    config = edge_tls_config(8443, cert)
    assert tomllib.loads(toml(config)) == {
        "https": {"listen": "127.0.0.1:8443", "certs": [{"cert": str(cert.cert), "key": str(cert.key)}]}
    }
    (tmp_path / "edge.toml").write_text(toml(config))
    loaded = load(tmp_path / "edge.toml", env={"EDGE_STATE_DIR": str(tmp_path)})
    assert str(loaded.https.listen) == "127.0.0.1:8443"
    assert [(c.cert, c.key) for c in loaded.https.certs] == [(cert.cert, cert.key)]


@pytest.mark.parametrize(
    ("label", "data", "complete"),
    [
        ("head not finished", b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n", False),
        ("body short", b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nab", False),
        ("body complete", b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc", True),
        ("no length: ends at EOF", b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\nabc", False),
    ],
)
def test_new_connection_client_knows_when_a_response_is_whole(label, data, complete):
    assert _complete(bytearray(data)) is complete, label


# --- access logs (issue 11) --------------------------------------------------------------------------


def _log_runs(edge_off: float, nginx_off: float, edge_on: float, nginx_on: float, cpu: float = 100.0) -> dict:
    def side(rate: float) -> list[dict]:
        return [
            {"rps": rate, "rps_per_cpu": rate * 100 / cpu, "p50": 1.0, "p99": 2.0, "proxy_cpu_pct": cpu, "non2xx": 0}
        ]

    return {
        "without logs": {"edge": side(edge_off), "nginx": side(nginx_off)},
        "with logs": {"edge": side(edge_on), "nginx": side(nginx_on)},
    }


def _logged(edge_off: float, nginx_off: float, edge_on: float, nginx_on: float) -> dict:
    result = logged_result(_log_runs(edge_off, nginx_off, edge_on, nginx_on), {"connections": 50, "seconds": 10})
    result["log"] = {
        "edge": {"lines": 1010, "requests": 1000, "bytes": 1, "dropped": 0},
        "nginx": {"lines": 4040, "requests": 4000, "bytes": 1, "dropped": "n/a"},
    }
    return result


def test_logged_is_in_the_registry_with_four_lines_a_run_and_a_summary():
    """Two proxies, with and without logs, per run; then one line of log counts."""
    a = run.parse_args(["--only", "logged", "--runs", "5", "--micro", "0", "--no-dns"])
    assert run.steps(a) == 4 * 5 + 1
    assert [s.name for s in SCENARIOS][:2] == ["small", "logged"]


def test_logged_target_is_the_ratio_with_logs_over_the_ratio_without():
    """(edge / nginx with logs) / (edge / nginx without), as measured and per CPU-second, and each proxy's cost."""
    t = logged_result(_log_runs(1000.0, 4000.0, 950.0, 3800.0, cpu=50.0), {})["target"]
    assert t["ratio_without"] == 0.25 and t["ratio_with"] == 0.25
    assert t["kept"] == 1.0 and t["verdict"] == "met" and t["at_least"] == LOG_TARGET == 0.9
    assert t["kept_per_cpu"] == 1.0 and t["verdict_per_cpu"] == "met"
    assert t["cost"] == t["cost_per_cpu"] == {"edge": 0.95, "nginx": 0.95}
    missed = logged_result(_log_runs(1000.0, 4000.0, 600.0, 3800.0), {})["target"]
    assert abs(missed["kept"] - 0.6 / 0.95) < 1e-9 and missed["verdict"] == "MISSED"


def test_logged_rows_target_and_log_counts_reach_the_report():
    """Both modes in the main and CPU tables; the note carries the target, both ratios and the line counts."""
    text = markdown({"meta": META, "scenarios": {"logged": _logged(1000.0, 4000.0, 600.0, 3800.0)}})
    assert "| small requests, no access logs | req/s | 1,000 | 1,000-1,000 | 4,000 | 4,000-4,000 | 0.250 |" in text
    assert "| small requests, access logs to a file | req/s | 600 | 600-600 | 3,800 | 3,800-3,800 | 0.158 |" in text
    assert "target (edge / nginx with logs) >= 0.9 x (edge / nginx without): 0.158 / 0.250 = 0.63 (MISSED)" in text
    assert "with / without logs, each its own: edge 0.60 (per CPU-second 0.60), nginx 0.95 (0.95)" in text
    assert "log lines / requests answered: edge 1,010 / 1,000 (dropped, its /metrics: 0), nginx 4,040 / 4,000" in text
    assert "errors without logs edge: none; nginx: none, with logs edge: none; nginx: none" in text
    assert "| small requests, no access logs | 100 | 100 |" in text
    assert "| small requests, access logs to a file | 100 | 100 |" in text


def test_nginx_peer_logs_to_the_file_only_when_asked():
    """`access_log off;` for every scenario; the logged one names a file, nginx's default combined format."""
    values = dict.fromkeys(("dir", "nofile", "port", "tls", "backend_host", "backend_port", "sink_port", "ws_port"), 1)
    off = NGINX_PROXY.format(access_log="access_log off;", **values)
    on = NGINX_PROXY.format(access_log="access_log /tmp/x/nginx-access.log;", **values)
    assert "access_log off;" in off and "access_log /tmp" not in off
    assert "access_log /tmp/x/nginx-access.log;" in on and "access_log off" not in on and "log_format" not in on


def test_metric_sums_a_prometheus_figure_over_its_labels():
    text = (
        "# HELP edge_access_log_dropped_total Access-log lines dropped\n"
        "# TYPE edge_access_log_dropped_total counter\n"
        "edge_access_log_dropped_total 3.0\n"
        'edge_requests_total{status="200"} 10.0\n'
        'edge_requests_total{status="502"} 2.0\n'
    )
    assert metric(text, "edge_access_log_dropped_total") == 3.0
    assert metric(text, "edge_requests_total") == 12.0
    assert metric(text, "edge_nothing_total") is None


def test_log_lines_are_counted_in_a_file_and_a_missing_file_has_none(tmp_path):
    path = tmp_path / "access.log"
    path.write_bytes(b'{"status":200}\n' * 2_500_000)  # past one read of a MiB
    assert count_lines(path) == 2_500_000
    assert count_lines(tmp_path / "missing.log") == 0
