"""The benchmark harness's pure helpers: wrk output parsing, run statistics, the scenario registry,
the Markdown report.

No benchmark runs here and nothing is timed; these only keep the harness's arithmetic honest.
"""

import tomllib

import pytest

from bench import run
from bench.peers import median, parse_wrk, spread, toml
from bench.report import markdown
from bench.scenarios import BY_NAME, SCENARIOS, Row, Scenario, compare, order

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
