"""The end-to-end HTTP scenarios: edge beside nginx in front of the same backend.

Each scenario alternates the two proxies run by run (edge first on even runs, nginx first on odd
ones, so slow drift of the machine does not favour one side), and returns, per proxy and per figure,
the median, min and max of the runs, plus the ratio edge / nginx of the medians. Error counts
(non-2xx, socket errors, connections not served) are summed over runs, never hidden in a median.

`SCENARIOS`, at the end, is the whole suite: one `Scenario` entry per scenario says how to run it,
how many progress lines it prints and how bench/report.py shows its figures. bench/run.py (--only,
the step count) and bench/report.py read nothing else, so a new scenario is a function and an entry.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from bench import clients
from bench.peers import (
    BIG_BYTES,
    PROXY_CPU,
    Backend,
    Certificate,
    CoreWatch,
    certificate,
    edge_config_keys,
    edge_flags,
    proxy,
    spread,
    tree_rss_kib,
    wrk,
)

NAMES = ("edge", "nginx")
COUNTS = ("non2xx", "socket_errors", "not_served")
RATES = ("rps", "mbps", "mps", "cps")
CPU = (
    "proxy_cpu_pct",
    "irq_cpu_pct",
    "steal_cpu_pct",
    "others_cpu_pct",
    "load_core_busy_pct",
)  # spreads without a ratio: see bench.peers.CoreWatch


@dataclass
class Bench:
    args: argparse.Namespace
    be: Backend
    step: Callable[[str], None]  # prints one progress line
    #: The run's certificate for both proxies' HTTPS (bench/run.py makes one); None: each TLS scenario makes its own.
    tls: Certificate | None = None


def order(run: int, names: tuple[str, ...] = NAMES) -> tuple[str, ...]:
    return names if run % 2 == 0 else names[::-1]


def compare(runs: dict[str, list[dict]], figures: tuple[str, ...], names: tuple[str, str] = NAMES) -> dict:
    """Per proxy: each figure's spread over runs and summed error counts; then the ratio of medians."""
    out: dict = {}
    for name, rs in runs.items():
        out[name] = {f: spread([r[f] for r in rs]) for f in (*figures, *CPU) if rs and all(f in r for r in rs)}
        for c in COUNTS:
            if any(c in r for r in rs):
                out[name][c] = sum(r.get(c, 0) for r in rs)
    a, b = names
    out["ratio_of"] = [a, b]
    out["ratio"] = {
        f: out[a][f]["median"] / out[b][f]["median"]
        for f in figures
        if f in out[a] and f in out[b] and out[b][f]["median"]
    }
    return out


@contextmanager
def both(b: Bench, tls: Certificate | None = None):
    """A fresh edge and a fresh nginx, both running (also on HTTPS with `tls`); a scenario loads one at a time."""
    with ExitStack() as stack:
        yield {
            name: stack.enter_context(proxy(name, b.be, b.args.workers if name == "edge" else None, tls=tls))
            for name in NAMES
        }


def watched(p, fn, *args) -> dict:
    """fn(*args), plus how busy the proxy core was meanwhile (by the proxy, by anything else)."""
    w = CoreWatch(p.pid)
    r = {**fn(*args), **w.stop()}
    # The same rate per second of proxy CPU: what one fully busy core would carry. It stays
    # comparable when the proxy did not get (or did not need) the whole core, see bench/README.md.
    for rate in RATES:
        if rate in r and r.get("proxy_cpu_pct"):
            r[f"{rate}_per_cpu"] = r[rate] * 100 / r["proxy_cpu_pct"]
    return r


def noise(*rs: dict) -> str:
    """A warning for a progress line when other processes took a noticeable share of the proxy core."""
    worst = max((r.get("others_cpu_pct", 0) + r.get("steal_cpu_pct", 0) for r in rs), default=0)
    return f"  [!] others took {worst:.0f}% of the proxy core" if worst >= 10 else ""


def _wrk(b: Bench, p, connections: int, seconds: float) -> dict:
    return watched(p, wrk, f"http://127.0.0.1:{p.port}/", p.host(b.be), connections, seconds)


def small(b: Bench) -> dict:
    """Small requests: `wrk -t1 -c<connections> -d<seconds>s`, 23-byte answers from the backend nginx."""
    a = b.args
    runs: dict[str, list[dict]] = {n: [] for n in NAMES}
    with both(b) as px:
        for p in px.values():
            _wrk(b, p, a.connections, 1)  # warm-up: imports, pools, caches
        for i in range(a.runs):
            for name in order(i):
                r = _wrk(b, px[name], a.connections, a.seconds)
                runs[name].append(r)
                b.step(
                    f"small run {i + 1}/{a.runs} {name:5}  {r['rps']:9,.0f} req/s  p50 {r.get('p50', 0):.2f} ms"
                    f"  p99 {r.get('p99', 0):.2f} ms  non-2xx {r['non2xx']}  socket errors {r['socket_errors']}"
                    + noise(r)
                )
    return {
        "setup": {"connections": a.connections, "seconds": a.seconds, "tool": "wrk -t1"},
        **compare(runs, ("rps", "rps_per_cpu", "p50", "p90", "p99")),
    }


# --- access logs --------------------------------------------------------------------------------------

#: `logged` measures small requests through four proxies started together: edge and nginx without
#: access logs, and edge and nginx each writing its access log to a file in its default format.
LOG_MODES = ("without logs", "with logs")
#: Issue 11's bar: edge / nginx with logs at least this share of edge / nginx without them.
LOG_TARGET = 0.9
#: What each proxy's /metrics calls the lines it dropped (nginx has no such count: it never drops).
DROPPED = "edge_access_log_dropped_total"


def count_lines(path: Path) -> int:
    """Newlines in a file, read a MiB at a time (a log of a few hundred MB stays out of memory)."""
    n = 0
    try:
        with open(path, "rb") as fh:
            while chunk := fh.read(1 << 20):
                n += chunk.count(b"\n")
    except FileNotFoundError:
        return 0
    return n


def logged(b: Bench) -> dict:
    """Small requests as in `small`, each proxy with and without its access log, all in one run.

    With logs, nginx has `access_log <file>;` (its default `combined` format, one write per request)
    and edge `--access-log <file>` and otherwise its defaults (JSON lines, batched off the event loop).
    Both files are on local disk in a temporary folder of this run. Four proxies start fresh together
    and are warmed up; then each run takes them in turn, alternating which proxy and which mode go
    first. Afterwards the lines in each file are counted against the requests wrk saw answered (warm-up
    included), and edge's dropped lines are read off its /metrics.
    """
    a = b.args
    runs: dict[str, dict[str, list[dict]]] = {m: {n: [] for n in NAMES} for m in LOG_MODES}
    answered = dict.fromkeys(NAMES, 0)  # requests wrk saw answered by the logging proxies
    dropped: dict[str, float | None] = dict.fromkeys(NAMES)
    with tempfile.TemporaryDirectory(prefix="edge-bench-logs-") as d:
        files = {n: Path(d) / f"{n}-access.log" for n in NAMES}
        with ExitStack() as stack:
            px = {
                (mode, n): stack.enter_context(
                    proxy(
                        n,
                        b.be,
                        a.workers if n == "edge" else None,
                        access_log=files[n] if mode == "with logs" else None,
                    )
                )
                for mode in LOG_MODES
                for n in NAMES
            }
            for (mode, n), p in px.items():
                r = _wrk(b, p, a.connections, 1)  # warm-up
                if mode == "with logs":
                    answered[n] += r["requests"]
            for i in range(a.runs):
                for name in order(i):
                    for mode in order(i, LOG_MODES):
                        r = _wrk(b, px[mode, name], a.connections, a.seconds)
                        runs[mode][name].append(r)
                        if mode == "with logs":
                            answered[name] += r["requests"]
                        b.step(
                            f"logged run {i + 1}/{a.runs} {name:5} {mode:12}  {r['rps']:9,.0f} req/s"
                            f"  p99 {r.get('p99', 0):.2f} ms  errors {r['non2xx'] + r['socket_errors']}" + noise(r)
                        )
            time.sleep(0.5)  # edge writes a batch at least every 100 ms
            for n in NAMES:
                admin = px["with logs", n].admin
                if admin is not None:
                    try:
                        dropped[n] = admin.metric(DROPPED)
                    except OSError:
                        pass
        # Every proxy has stopped: edge flushed what it still held, nginx closed its file.
        lines = {n: count_lines(files[n]) for n in NAMES}
        log_bytes = {n: files[n].stat().st_size if files[n].exists() else 0 for n in NAMES}
    setup = {
        "connections": a.connections,
        "seconds": a.seconds,
        "tool": "wrk -t1",
        "logs": {
            "nginx": "access_log <file>; (format combined, no buffer=)",
            "edge": "--access-log <file> (JSON lines, its default buffer and batching)",
        },
    }
    out = logged_result(runs, setup)
    out["log"] = {
        n: {
            "lines": lines[n],
            "requests": answered[n],
            "bytes": log_bytes[n],
            "dropped": "n/a" if dropped[n] is None else int(dropped[n]),
        }
        for n in NAMES
    }
    t, lg = out["target"], out["log"]
    b.step(
        f"logged: edge / nginx {t['ratio_without']:.3f} without logs, {t['ratio_with']:.3f} with; "
        f"kept {t['kept']:.2f} (target {LOG_TARGET}: {t['verdict']}); log lines / requests answered: "
        + ", ".join(f"{n} {lg[n]['lines']:,} / {lg[n]['requests']:,}" for n in NAMES)
        + f"; edge dropped {lg['edge']['dropped']}"
    )
    return out


def logged_result(runs: dict[str, dict[str, list[dict]]], setup: dict) -> dict:
    """Both comparisons, and issue 11's target: (edge / nginx with logs) / (edge / nginx without).

    Read both ways, as the TLS targets are: as measured, and per proxy CPU-second. `cost` and
    `cost_per_cpu` are what its log keeps of each proxy's own rate (with / without).
    """
    out = {"setup": setup, **{mode: compare(runs[mode], ("rps", "rps_per_cpu", "p50", "p99")) for mode in LOG_MODES}}
    without, with_ = out["without logs"], out["with logs"]

    def kept(fig: str) -> float:
        before = without["ratio"].get(fig, 0.0)
        return with_["ratio"].get(fig, 0.0) / before if before else 0.0

    def own(name: str, fig: str) -> float:
        before = without.get(name, {}).get(fig, {}).get("median")
        return with_[name][fig]["median"] / before if before and fig in with_.get(name, {}) else 0.0

    out["target"] = {
        "at_least": LOG_TARGET,
        "ratio_without": without["ratio"].get("rps", 0.0),
        "ratio_with": with_["ratio"].get("rps", 0.0),
        "kept": kept("rps"),
        "verdict": "met" if kept("rps") >= LOG_TARGET else "MISSED",
        "ratio_without_per_cpu": without["ratio"].get("rps_per_cpu", 0.0),
        "ratio_with_per_cpu": with_["ratio"].get("rps_per_cpu", 0.0),
        "kept_per_cpu": kept("rps_per_cpu"),
        "verdict_per_cpu": "met" if kept("rps_per_cpu") >= LOG_TARGET else "MISSED",
        "cost": {n: own(n, "rps") for n in NAMES},
        "cost_per_cpu": {n: own(n, "rps_per_cpu") for n in NAMES},
    }
    return out


def sweep(b: Bench) -> dict:
    """Throughput and latency against concurrency: wrk at each of --sweep connection counts."""
    a = b.args
    runs = {c: {n: [] for n in NAMES} for c in a.sweep}
    with both(b) as px:
        for p in px.values():
            _wrk(b, p, max(a.sweep), 1)
        for i in range(a.runs):
            for c in a.sweep:
                for name in order(i):
                    r = _wrk(b, px[name], c, a.sweep_seconds)
                    runs[c][name].append(r)
                    b.step(
                        f"sweep run {i + 1}/{a.runs} c={c:<4} {name:5}  {r['rps']:9,.0f} req/s"
                        f"  p99 {r.get('p99', 0):.2f} ms  errors {r['non2xx'] + r['socket_errors']}" + noise(r)
                    )
    return {
        "setup": {"connections": a.sweep, "seconds": a.sweep_seconds, "tool": "wrk -t1"},
        "levels": {str(c): compare(runs[c], ("rps", "rps_per_cpu", "p50", "p75", "p90", "p99")) for c in a.sweep},
    }


def bulk(b: Bench) -> dict:
    """100 MiB bodies down (nginx sendfile from the backend) and up (to bench/sink.py), one connection.

    Each run also measures the same transfers straight to the backend (no proxy): on two cores that
    is the ceiling, since the client and the backend share the load core.
    """
    a = b.args
    down: dict[str, list[dict]] = {n: [] for n in (*NAMES, "direct")}
    up: dict[str, list[dict]] = {n: [] for n in (*NAMES, "direct")}

    def one(name: str, port: int, host: str, sink_port: int, sink_host: str, ip: str = "127.0.0.1") -> None:
        p = px.get(name)
        if p is None:  # direct: no proxy to watch
            d = clients.download(port, host, "/big", a.bulk_repeat, ip)
            u = clients.upload(sink_port, sink_host, "/upload", BIG_BYTES, a.bulk_repeat, ip)
        else:
            d = watched(p, clients.download, port, host, "/big", a.bulk_repeat, ip)
            u = watched(p, clients.upload, sink_port, sink_host, "/upload", BIG_BYTES, a.bulk_repeat, ip)
        down[name].append(d)
        up[name].append(u)
        b.step(
            f"bulk run {i + 1}/{a.runs} {name:6} download {d['mbps']:7,.0f} MB/s  "
            f"upload {u['mbps']:7,.0f} MB/s  non-2xx {d['non2xx'] + u['non2xx']}"
            + ("  (no proxy: the ceiling)" if name == "direct" else noise(d, u))
        )

    with both(b) as px:
        for p in px.values():
            clients.download(p.port, p.host(b.be), "/big", 1)
            clients.upload(p.port, p.host(b.be, "sink"), "/upload", 1 << 20, 1)
        for i in range(a.runs):
            for name in order(i):
                p = px[name]
                one(name, p.port, p.host(b.be), p.port, p.host(b.be, "sink"))
            one("direct", b.be.port, "backend", b.be.sink_port, "backend", b.be.host)
    setup = {
        "body_bytes": BIG_BYTES,
        "bodies_per_run": a.bulk_repeat,
        "client": "bench/clients.py, one connection",
    }
    out = {}
    for key, runs in (("download", down), ("upload", up)):
        out[key] = {
            "setup": setup,
            **compare({n: runs[n] for n in NAMES}, ("mbps", "mbps_per_cpu")),
            "direct": {"mbps": spread([r["mbps"] for r in runs["direct"]])},
        }
    out["upload"]["setup"] = {**setup, "sink": "bench/sink.py answers with the count of bytes it read"}
    return out


def websocket(b: Bench) -> dict:
    """Echoed WebSocket messages per second through each proxy's tunnel, and straight to the backend."""
    a = b.args
    runs: dict[str, list[dict]] = {n: [] for n in (*NAMES, "direct")}

    def one(port: int, host: str, ip: str = "127.0.0.1") -> dict:
        return clients.ws_echo(port, host, "/ws", a.ws_seconds, a.ws_connections, a.ws_window, a.ws_size, ip)

    def through(p) -> dict:
        return watched(p, one, p.port, p.host(b.be, "ws"))

    with both(b) as px:
        for p in px.values():
            one(p.port, p.host(b.be, "ws"))
        for i in range(a.runs):
            for name in order(i):
                r = through(px[name])
                runs[name].append(r)
                b.step(f"websocket run {i + 1}/{a.runs} {name:6} {r['mps']:9,.0f} messages/s" + noise(r))
            r = one(b.be.ws_port, "backend", b.be.host)
            runs["direct"].append(r)
            b.step(f"websocket run {i + 1}/{a.runs} direct {r['mps']:9,.0f} messages/s (no proxy: the ceiling)")
    out = compare({n: runs[n] for n in NAMES}, ("mps", "mps_per_cpu"))
    out["direct"] = {"mps": spread([r["mps"] for r in runs["direct"]])}
    out["setup"] = {
        "connections": a.ws_connections,
        "in_flight_per_connection": a.ws_window,
        "payload_bytes": a.ws_size,
        "seconds": a.ws_seconds,
        "server": "tests/ws_echo.py (websockets)",
    }
    return out


def _has_caps(b: Bench) -> bool:
    """Does the edge measured know http.max_connections_per_ip (an older one refuses the key)?"""
    return "http.max_connections_per_ip" in edge_config_keys()


def idle(b: Bench) -> dict:
    """RSS growth of the proxy process over --idle-count idle keep-alive connections (one request each)."""
    a = b.args
    runs: dict[str, list[dict]] = {n: [] for n in NAMES}
    for i in range(a.runs):
        for name in order(i):
            # All --idle-count connections come from one address: lift edge's per-address cap (a
            # quarter of its descriptor-sized total by default) so they are all admitted, as in nginx.
            config = {"http": {"max_connections_per_ip": 1_000_000}} if name == "edge" and _has_caps(b) else None
            with proxy(name, b.be, a.workers if name == "edge" else None, config=config) as p:
                host = p.host(b.be)
                for s in clients.open_idle(p.port, host, 50, a.idle_seconds):  # warm-up, then closed
                    s.close()
                time.sleep(0.5)
                before = tree_rss_kib(p.pid)
                socks = clients.open_idle(p.port, host, a.idle_count, a.idle_seconds)
                try:
                    time.sleep(1.0)
                    after = tree_rss_kib(p.pid)
                    served = clients.still_served(socks, host)
                finally:
                    for s in socks:
                        s.close()
            sample = min(100, len(socks))
            r = {
                "bytes_per_connection": (after - before) * 1024 / max(1, len(socks)),
                "connections": len(socks),
                "rss_before_kib": before,
                "rss_after_kib": after,
                "not_served": sample - served,
            }
            runs[name].append(r)
            b.step(
                f"idle run {i + 1}/{a.runs} {name:5}  {r['bytes_per_connection']:8,.0f} B/connection over "
                f"{len(socks):,} connections (RSS {before:,} -> {after:,} KiB); "
                f"second request served on {served}/{sample}"
            )
    out = compare(runs, ("bytes_per_connection", "rss_before_kib", "rss_after_kib"))
    out["setup"] = {
        "connections": a.idle_count,
        "measure": "VmRSS after - before, divided by connections; nginx: its worker process",
    }
    return out


def workers(b: Bench) -> dict:
    """`edge serve --workers 1` on core 0 against `--workers 2` on both cores (shared with wrk)."""
    a = b.args
    if "--workers" not in edge_flags():
        b.step("workers: skipped, this edge has no `serve --workers`")
        return {"skipped": "this edge has no `serve --workers`"}
    shapes = (("1 worker", 1, PROXY_CPU), ("2 workers", 2, "0,1"))
    runs: dict[str, list[dict]] = {label: [] for label, _, _ in shapes}
    for i in range(a.runs):
        for label, n, cpus in shapes if i % 2 == 0 else shapes[::-1]:
            with proxy("edge", b.be, n, cpus) as p:
                _wrk(b, p, a.connections, 1)
                r = _wrk(b, p, a.connections, a.seconds)
            runs[label].append(r)
            b.step(f"workers run {i + 1}/{a.runs} {label:9}  {r['rps']:9,.0f} req/s  p99 {r.get('p99', 0):.2f} ms")
    out = compare(runs, ("rps", "rps_per_cpu", "p50", "p99"), names=("2 workers", "1 worker"))
    out["setup"] = {
        "connections": a.connections,
        "seconds": a.seconds,
        "cpus": {"1 worker": PROXY_CPU, "2 workers": "0,1 (wrk and the backend share core 1)"},
    }
    return out


def fastlane(b: Bench) -> dict:
    """Small requests through two `edge serve`s on core 0, `http.fast_lane` on and off, alternating.

    The figure edge/http/README.md quotes (the fast lane against the h11 lane). Both proxies start
    fresh, are warmed up, then take turns as edge and nginx do in `small`.
    """
    a = b.args
    if "http.fast_lane" not in edge_config_keys():
        b.step("fastlane: skipped, this edge has no http.fast_lane")
        return {"skipped": "this edge has no http.fast_lane"}
    lanes = {"fast lane": True, "h11 lane": False}
    runs: dict[str, list[dict]] = {lane: [] for lane in lanes}
    with ExitStack() as stack:
        px = {
            lane: stack.enter_context(proxy("edge", b.be, a.workers, config={"http": {"fast_lane": on}}))
            for lane, on in lanes.items()
        }
        for p in px.values():
            _wrk(b, p, a.connections, 1)  # warm-up
        for i in range(a.runs):
            for lane in order(i, tuple(lanes)):
                r = _wrk(b, px[lane], a.connections, a.seconds)
                runs[lane].append(r)
                b.step(
                    f"fastlane run {i + 1}/{a.runs} {lane:9}  {r['rps']:9,.0f} req/s  p99 {r.get('p99', 0):.2f} ms"
                    f"  errors {r['non2xx'] + r['socket_errors']}" + noise(r)
                )
    out = compare(runs, ("rps", "rps_per_cpu", "p50", "p99"), names=("fast lane", "h11 lane"))
    out["setup"] = {
        "connections": a.connections,
        "seconds": a.seconds,
        "tool": "wrk -t1",
        "config": {lane: f"http.fast_lane = {str(on).lower()}" for lane, on in lanes.items()},
    }
    return out


# --- TLS ----------------------------------------------------------------------------------------------

#: Each TLS scenario measures the same load over TLS and over plain HTTP on the same two proxies,
#: alternating proxy and transport run by run: the plain figures stand beside the TLS ones, same run.
MODES = ("tls", "plain")
#: The issue's bars: edge / nginx at least this much over TLS, on one core.
TLS_TARGETS = {"tls_handshake": 0.25, "tls_small": 0.2, "tls_bulk": 0.8}


@contextmanager
def tls_pair(b: Bench):
    """Both proxies with the run's certificate on their HTTPS port (a certificate of its own without one)."""
    with ExitStack() as stack:
        cert = b.tls or stack.enter_context(certificate())
        px = stack.enter_context(both(b, tls=cert))
        yield cert, px


def _no_https(b: Bench, name: str) -> dict | None:
    """{"skipped": why} when this edge has no HTTPS listener (an older --edge-src), else None."""
    if "https.listen" in edge_config_keys():
        return None
    b.step(f"{name}: skipped, this edge has no https.listen")
    return {"skipped": "this edge has no https.listen"}


def _tls_steps(a: argparse.Namespace) -> int:
    return 4 * a.runs if "https.listen" in edge_config_keys() else 1


def _tls_result(name: str, runs: dict[str, dict[str, list[dict]]], figures: tuple[str, ...], setup: dict) -> dict:
    """The two comparisons, and the issue's target read off the TLS one (plain and per CPU-second beside it)."""
    out = {"setup": setup, **{mode: compare(runs[mode], figures) for mode in MODES}}
    rate = figures[0]
    ratio = out["tls"]["ratio"].get(rate, 0.0)
    per_cpu = out["tls"]["ratio"].get(f"{rate}_per_cpu", 0.0)
    kept = {
        n: out["tls"][n][rate]["median"] / out["plain"][n][rate]["median"]
        for n in NAMES
        if rate in out["tls"].get(n, {}) and out["plain"].get(n, {}).get(rate, {}).get("median")
    }
    # "On one core" is read both ways: as measured, and per proxy CPU-second (what a fully busy core
    # would carry), which is the fair one when a proxy did not get or did not need the whole core.
    at_least = TLS_TARGETS[name]
    out["target"] = {
        "at_least": at_least,
        "ratio": ratio,
        "ratio_per_cpu": per_cpu,
        "verdict": "met" if ratio >= at_least else "MISSED",
        "verdict_per_cpu": "met" if per_cpu >= at_least else "MISSED",
        "plain_ratio": out["plain"]["ratio"].get(rate, 0.0),
        # each proxy's TLS figure as a share of its own plain one: what TLS costs it
        "kept": kept,
    }
    return out


def _tls_step(b: Bench, what: str, i: int, name: str, mode: str, figure: str, r: dict) -> None:
    errors = r.get("non2xx", 0) + r.get("socket_errors", 0)
    b.step(f"{what} run {i + 1}/{b.args.runs} {name:5} {mode:5} {figure}  errors {errors}" + noise(r))


def tls_handshake(b: Bench) -> dict:
    """New connections per second, each a full TLS handshake and one GET (and the same without TLS).

    bench/clients.py `new_connections`: --handshake-concurrency connections at a time from one
    non-blocking loop on the load core, never resuming a session; SNI and Host the sandbox name.
    """
    a = b.args
    if skipped := _no_https(b, "tls_handshake"):
        return skipped
    runs: dict[str, dict[str, list[dict]]] = {m: {n: [] for n in NAMES} for m in MODES}
    ctx = clients.tls_client()
    sni = b.be.edge_host(b.be.port)
    with tls_pair(b) as (cert, px):
        offered = {n: clients.tls_probe(p.tls_port, sni, str(cert.ca)) for n, p in px.items()}

        def one(p, mode: str, seconds: float) -> dict:
            tls = mode == "tls"
            port, host = (p.tls_port, sni) if tls else (p.port, p.host(b.be))
            return watched(
                p, clients.new_connections, port, host, "/", seconds, a.handshake_concurrency, ctx if tls else None, sni
            )

        for p in px.values():
            for mode in MODES:
                one(p, mode, 1)  # warm-up
        for i in range(a.runs):
            for name in order(i):
                for mode in order(i, MODES):
                    r = one(px[name], mode, a.seconds)
                    runs[mode][name].append(r)
                    _tls_step(b, "tls_handshake", i, name, mode, f"{r['cps']:8,.0f} connections/s", r)
    setup = {
        "seconds": a.seconds,
        "in_flight": a.handshake_concurrency,
        "client": "bench/clients.py new_connections: connect, full handshake, GET / (connection: close), close",
        "offered": offered,
    }
    return _tls_result("tls_handshake", runs, ("cps", "cps_per_cpu"), setup)


def tls_small(b: Bench) -> dict:
    """Small requests over keep-alive TLS: wrk https, as `small` (and the same over plain HTTP)."""
    a = b.args
    if skipped := _no_https(b, "tls_small"):
        return skipped
    runs: dict[str, dict[str, list[dict]]] = {m: {n: [] for n in NAMES} for m in MODES}
    with tls_pair(b) as (_, px):

        def one(p, mode: str, seconds: float) -> dict:
            # wrk sends its URL's host as SNI: `localhost`, which the certificate carries (peers.CERT_NAMES)
            url = f"https://localhost:{p.tls_port}/" if mode == "tls" else f"http://127.0.0.1:{p.port}/"
            return watched(p, wrk, url, p.host(b.be), a.connections, seconds)

        for p in px.values():
            for mode in MODES:
                one(p, mode, 1)
        for i in range(a.runs):
            for name in order(i):
                for mode in order(i, MODES):
                    r = one(px[name], mode, a.seconds)
                    runs[mode][name].append(r)
                    figure = f"{r['rps']:9,.0f} req/s  p99 {r.get('p99', 0):.2f} ms"
                    _tls_step(b, "tls_small", i, name, mode, figure, r)
    setup = {"connections": a.connections, "seconds": a.seconds, "tool": "wrk -t1"}
    return _tls_result("tls_small", runs, ("rps", "rps_per_cpu", "p50", "p99"), setup)


def tls_bulk(b: Bench) -> dict:
    """100 MiB downloads over TLS with curl, --bulk-repeat per run on one connection (and over plain HTTP)."""
    a = b.args
    if skipped := _no_https(b, "tls_bulk"):
        return skipped
    if not shutil.which("curl"):
        b.step("tls_bulk: skipped, no curl (apt-get install curl)")
        return {"skipped": "no curl (apt-get install curl)"}
    runs: dict[str, dict[str, list[dict]]] = {m: {n: [] for n in NAMES} for m in MODES}
    name_ = b.be.edge_host(b.be.port)
    with tls_pair(b) as (cert, px):

        def one(p, mode: str, repeat: int) -> dict:
            tls = mode == "tls"
            port = p.tls_port if tls else p.port
            url = f"{'https' if tls else 'http'}://{name_}:{port}/big"
            return watched(p, clients.curl_download, url, f"{name_}:{port}:127.0.0.1", repeat, str(cert.ca))

        for p in px.values():
            for mode in MODES:
                one(p, mode, 1)
        for i in range(a.runs):
            for name in order(i):
                for mode in order(i, MODES):
                    r = one(px[name], mode, a.bulk_repeat)
                    runs[mode][name].append(r)
                    _tls_step(b, "tls_bulk", i, name, mode, f"{r['mbps']:7,.0f} MB/s", r)
    setup = {
        "body_bytes": BIG_BYTES,
        "bodies_per_run": a.bulk_repeat,
        "client": "curl, one connection, --cacert the run's CA",
    }
    return _tls_result("tls_bulk", runs, ("mbps", "mbps_per_cpu"), setup)


#: The start of each TLS scenario's note: the issue's target, edge / nginx over TLS, per proxy CPU-second,
#: plain in the same run, and what share of its plain figure each proxy keeps over TLS.
TLS_TARGET_NOTE = (
    "target edge >= {target[at_least]}x nginx: measured {target[ratio]:.2f}x ({target[verdict]}), "
    "per proxy CPU-second {target[ratio_per_cpu]:.2f}x ({target[verdict_per_cpu]}); "
    "plain, same run {target[plain_ratio]:.2f}x; "
    "TLS / plain: edge {target[kept][edge]:.2f}, nginx {target[kept][nginx]:.2f}"
)


# --- the registry -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    """A line of the main edge / nginx table: figure `fig` of the comparison at `at` in the result."""

    label: str
    unit: str
    fig: str
    at: tuple[str, ...] = ()


@dataclass(frozen=True)
class Scenario:
    """One scenario of the suite, as bench/run.py runs it and bench/report.py shows it.

    `run` returns what http.json keeps under `name` ({"skipped": why} when this edge cannot run it);
    `steps` is how many progress lines it prints. The report takes the rest:
      rows   its lines in the main edge / nginx table; the first row at each `at` is also its line in
             the CPU table
      note   one line under the main table: str.format_map over the result, plus {errors}, the
             summed error counts of each comparison in `rows`
      table  "levels": a comparison per connection count (result["levels"]), a table and the plots;
             "variants": two set-ups of edge against each other, `title` above, their ratio below
    """

    name: str
    run: Callable[[Bench], dict]
    steps: Callable[[argparse.Namespace], int]
    rows: tuple[Row, ...] = ()
    note: str = ""
    table: Literal["", "levels", "variants"] = ""
    title: str = ""


SCENARIOS: tuple[Scenario, ...] = (
    Scenario(
        "small",
        small,
        lambda a: 2 * a.runs,
        rows=(
            Row("small requests", "req/s", "rps"),
            Row("small requests per proxy CPU-second", "req/CPU-s", "rps_per_cpu"),
            Row("small requests, latency p50", "ms", "p50"),
            Row("small requests, latency p99", "ms", "p99"),
        ),
        note="small requests: wrk -t1 -c{setup[connections]} -d{setup[seconds]:g}s; errors {errors}",
    ),
    Scenario(
        "logged",
        logged,
        lambda a: 4 * a.runs + 1,
        rows=(
            Row("small requests, no access logs", "req/s", "rps", ("without logs",)),
            Row("small requests, no access logs, per proxy CPU-second", "req/CPU-s", "rps_per_cpu", ("without logs",)),
            Row("small requests, access logs to a file", "req/s", "rps", ("with logs",)),
            Row(
                "small requests, access logs to a file, per proxy CPU-second",
                "req/CPU-s",
                "rps_per_cpu",
                ("with logs",),
            ),
            Row("small requests, access logs to a file, latency p99", "ms", "p99", ("with logs",)),
        ),
        note="access logs (nginx `access_log <file>;`, combined; edge `--access-log <file>`, JSON lines): "
        "target (edge / nginx with logs) >= {target[at_least]} x (edge / nginx without): "
        "{target[ratio_with]:.3f} / {target[ratio_without]:.3f} = {target[kept]:.2f} ({target[verdict]}), "
        "per proxy CPU-second {target[ratio_with_per_cpu]:.3f} / {target[ratio_without_per_cpu]:.3f} = "
        "{target[kept_per_cpu]:.2f} ({target[verdict_per_cpu]}); with / without logs, each its own: edge "
        "{target[cost][edge]:.2f} (per CPU-second {target[cost_per_cpu][edge]:.2f}), nginx {target[cost][nginx]:.2f} "
        "({target[cost_per_cpu][nginx]:.2f}); log lines / requests answered: edge "
        "{log[edge][lines]:,} / {log[edge][requests]:,} (dropped, its /metrics: {log[edge][dropped]}), nginx "
        "{log[nginx][lines]:,} / {log[nginx][requests]:,}; wrk -t1 -c{setup[connections]} -d{setup[seconds]:g}s; "
        "errors {errors}",
    ),
    Scenario(
        "sweep",
        sweep,
        lambda a: 2 * a.runs * len(a.sweep),
        table="levels",
        title="Throughput and latency against concurrency (wrk -t1, {setup[seconds]:g} s per point):",
    ),
    Scenario(
        "bulk",
        bulk,
        lambda a: 3 * a.runs,
        rows=(
            Row("100 MiB download", "MB/s", "mbps", ("download",)),
            Row("100 MiB download per proxy CPU-second", "MB/CPU-s", "mbps_per_cpu", ("download",)),
            Row("100 MiB upload", "MB/s", "mbps", ("upload",)),
            Row("100 MiB upload per proxy CPU-second", "MB/CPU-s", "mbps_per_cpu", ("upload",)),
        ),
        note="bulk: {download[setup][bodies_per_run]} bodies of 100 MiB per run on one connection; straight "
        "to the backend (no proxy, the ceiling on this machine): download "
        "{download[direct][mbps][median]:,.0f} MB/s, upload {upload[direct][mbps][median]:,.0f} MB/s; "
        "errors {errors}",
    ),
    Scenario(
        "websocket",
        websocket,
        lambda a: 3 * a.runs,
        rows=(
            Row("WebSocket echo", "messages/s", "mps"),
            Row("WebSocket echo per proxy CPU-second", "messages/CPU-s", "mps_per_cpu"),
        ),
        note="WebSocket: {setup[connections]} connections x {setup[in_flight_per_connection]} messages in "
        "flight, {setup[payload_bytes]}-byte payloads; straight to the echo server (no proxy, the ceiling "
        "on this machine): {direct[mps][median]:,.0f} messages/s",
    ),
    Scenario(
        "idle",
        idle,
        lambda a: 2 * a.runs,
        rows=(Row("memory per idle keep-alive connection", "bytes", "bytes_per_connection"),),
        note="idle: {setup[connections]:,} connections; RSS before -> after (medians, KiB): edge "
        "{edge[rss_before_kib][median]:,.0f} -> {edge[rss_after_kib][median]:,.0f}, nginx worker "
        "{nginx[rss_before_kib][median]:,.0f} -> {nginx[rss_after_kib][median]:,.0f}; second request on "
        "100 of them: {errors}",
    ),
    Scenario(
        "workers",
        workers,
        lambda a: 2 * a.runs if "--workers" in edge_flags() else 1,
        table="variants",
        title="`edge serve --workers`: small requests (wrk -t1 -c{setup[connections]}), 1 worker on core 0 "
        "against 2 workers on cores 0-1, which they share with wrk and the backend:",
    ),
    Scenario(
        "fastlane",
        fastlane,
        lambda a: 2 * a.runs if "http.fast_lane" in edge_config_keys() else 1,
        table="variants",
        title="The fast lane against the h11 lane: small requests (wrk -t1 -c{setup[connections]}) through "
        "two `edge serve` on core 0, `http.fast_lane = true` and `= false`, alternating runs:",
    ),
    Scenario(
        "tls_handshake",
        tls_handshake,
        _tls_steps,
        rows=(
            Row("TLS: new connections (full handshake + GET)", "conn/s", "cps", ("tls",)),
            Row("TLS: new connections per proxy CPU-second", "conn/CPU-s", "cps_per_cpu", ("tls",)),
            Row("plain: new connections (same run)", "conn/s", "cps", ("plain",)),
            Row("plain: new connections per proxy CPU-second", "conn/CPU-s", "cps_per_cpu", ("plain",)),
        ),
        note=f"TLS new connections: {TLS_TARGET_NOTE}; {{setup[in_flight]}} in flight, each a full handshake "
        "(the client never resumes) and one GET; errors {errors}",
    ),
    Scenario(
        "tls_small",
        tls_small,
        _tls_steps,
        rows=(
            Row("TLS: small requests, keep-alive", "req/s", "rps", ("tls",)),
            Row("TLS: small requests per proxy CPU-second", "req/CPU-s", "rps_per_cpu", ("tls",)),
            Row("TLS: small requests, latency p50", "ms", "p50", ("tls",)),
            Row("TLS: small requests, latency p99", "ms", "p99", ("tls",)),
            Row("plain: small requests (same run)", "req/s", "rps", ("plain",)),
            Row("plain: small requests per proxy CPU-second", "req/CPU-s", "rps_per_cpu", ("plain",)),
        ),
        note=f"TLS small requests: {TLS_TARGET_NOTE}; wrk -t1 -c{{setup[connections]}} "
        "-d{setup[seconds]:g}s; errors {errors}",
    ),
    Scenario(
        "tls_bulk",
        tls_bulk,
        lambda a: _tls_steps(a) if shutil.which("curl") else 1,
        rows=(
            Row("TLS: 100 MiB download", "MB/s", "mbps", ("tls",)),
            Row("TLS: 100 MiB download per proxy CPU-second", "MB/CPU-s", "mbps_per_cpu", ("tls",)),
            Row("plain: 100 MiB download, curl (same run)", "MB/s", "mbps", ("plain",)),
            Row("plain: 100 MiB download per proxy CPU-second", "MB/CPU-s", "mbps_per_cpu", ("plain",)),
        ),
        note=f"TLS download: {TLS_TARGET_NOTE}; curl, {{setup[bodies_per_run]}} bodies of 100 MiB per run on "
        "one connection; errors {errors}",
    ),
)
BY_NAME = {s.name: s for s in SCENARIOS}
