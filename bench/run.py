"""The whole benchmark suite in one go: edge beside nginx in front of the same backend, then DNS.

    .venv/bin/python bench/run.py              the full suite (`make bench` runs this; ~10 minutes)
    .venv/bin/python bench/run.py --quick      every scenario, short and once (~2 minutes)
    .venv/bin/python bench/run.py --only small,bulk --runs 1 --seconds 3
    .venv/bin/python bench/run.py --workers 2  pass `--workers 2` to every edge (when edge has it)

Order: micro-benchmarks of the pure stages (bench/micro.py), then the HTTP scenarios in the order of
their registry (bench/scenarios.py SCENARIOS: small, logged, sweep, bulk, websocket, idle, workers,
fastlane, tls_handshake, tls_small, tls_bulk), then the DNS comparison (bench/dns_bench.py, its own
results).
This process pins itself to the load core; the proxies are pinned to core 0. One line per step on
stderr: step count, elapsed time, the figure just measured. One certificate is made per run for the
TLS scenarios (bench.peers.certificate) and removed at the end.

Writes bench/results/http.json, bench/results/http.md and the PNG plots (bench/report.py); a --quick
pass writes them to bench/results/quick/ instead (not committed) and leaves the DNS figures alone.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench import micro, peers, report, scenarios  # noqa: E402
from bench.peers import LOAD_CPU, PROXY_CPU, backend, certificate, need, raise_nofile  # noqa: E402

RESULTS = REPO / "bench" / "results"


class Progress:
    """`[ 7/52  1:23] what happened` on stderr, one line per finished step."""

    def __init__(self, total: int) -> None:
        self.total, self.done, self.t0 = total, 0, time.monotonic()

    def step(self, text: str) -> None:
        self.done += 1
        m, s = divmod(int(time.monotonic() - self.t0), 60)
        width = len(str(self.total))
        print(f"[{self.done:>{width}}/{self.total} {m:2}:{s:02}] {text}", file=sys.stderr, flush=True)


def steps(a: argparse.Namespace) -> int:
    return (a.micro > 0) + sum(scenarios.BY_NAME[s].steps(a) for s in a.only) + (not a.no_dns)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="short runs, once each: a smoke test of the harness")
    ap.add_argument(
        "--only",
        default=",".join(scenarios.BY_NAME),
        help=f"comma-separated scenarios (default all: {','.join(scenarios.BY_NAME)})",
    )
    ap.add_argument("--runs", type=int, default=3, help="alternating runs per proxy (default 3)")
    ap.add_argument(
        "--seconds",
        type=float,
        default=10,
        help="duration of small requests, logged, workers, fastlane, tls_handshake, tls_small (default 10)",
    )
    ap.add_argument(
        "--connections",
        type=int,
        default=50,
        help="wrk connections for small requests, logged, workers, fastlane, tls_small (default 50)",
    )
    ap.add_argument("--sweep", default="1,4,16,64,256", help="connection counts for the concurrency sweep")
    ap.add_argument("--sweep-seconds", type=float, default=4, help="wrk duration per sweep point (default 4)")
    ap.add_argument("--bulk-repeat", type=int, default=3, help="100 MiB bodies per bulk run (default 3)")
    ap.add_argument("--ws-seconds", type=float, default=5, help="WebSocket echo duration (default 5)")
    ap.add_argument("--ws-connections", type=int, default=4)
    ap.add_argument("--ws-window", type=int, default=16, help="messages in flight per WebSocket connection")
    ap.add_argument("--ws-size", type=int, default=64, help="WebSocket payload bytes (under 126)")
    ap.add_argument(
        "--handshake-concurrency",
        type=int,
        default=16,
        help="connections in flight for tls_handshake, each a new connection (default 16)",
    )
    ap.add_argument("--idle-count", type=int, default=5000, help="idle keep-alive connections (default 5000)")
    ap.add_argument("--idle-seconds", type=float, default=60, help="deadline for opening them (default 60)")
    ap.add_argument("--workers", type=int, help="pass `serve --workers N` to edge (needs an edge that has it)")
    ap.add_argument("--edge-src", type=Path, help="run edge from this checkout instead of this one")
    ap.add_argument("--edge-label", help="what the report calls the edge measured (default: git describe)")
    ap.add_argument("--micro", type=int, default=20000, help="micro-benchmark calls per repeat (0: skip)")
    ap.add_argument("--no-dns", action="store_true", help="skip bench/dns_bench.py")
    ap.add_argument("--no-plots", action="store_true")
    ap.add_argument(
        "--results",
        type=Path,
        help="folder for http.json, http.md, PNGs (default bench/results; "
        "with --quick bench/results/quick, so a smoke test never replaces the published figures)",
    )
    a = ap.parse_args(argv)
    if a.quick:  # shorter defaults; a flag given explicitly still wins
        quick = {
            "runs": 1,
            "seconds": 2,
            "sweep_seconds": 1,
            "bulk_repeat": 1,
            "ws_seconds": 1,
            "idle_count": 1000,
            "micro": 2000,
        }
        for key, value in quick.items():
            if getattr(a, key) == ap.get_default(key):
                setattr(a, key, value)
    if a.results is None:
        a.results = RESULTS / "quick" if a.quick else RESULTS
    a.only = [s for s in a.only.split(",") if s]
    unknown = set(a.only) - set(scenarios.BY_NAME)
    if unknown:
        ap.error(f"unknown scenarios: {', '.join(sorted(unknown))}")
    a.sweep = [int(c) for c in a.sweep.split(",")]
    if not 0 < a.ws_size < 126:
        ap.error("--ws-size must be 1 to 125")
    return a


def dns(a: argparse.Namespace) -> dict | None:
    """Run the DNS helper's script (it writes its own dns.json and dns.md); return its JSON."""
    script = REPO / "bench" / "dns_bench.py"
    if not script.exists():
        return None
    usage = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True).stdout
    cmd = [sys.executable, str(script)]
    folder = RESULTS
    if a.quick:
        # A smoke test must not replace the published DNS figures: its own --quick and --results when
        # it has them; otherwise short runs, and the published files put back afterwards.
        if "--results" in usage:
            folder = a.results
            cmd += ["--results", str(folder)]
        cmd += ["--quick"] if "--quick" in usage else ["--runs", "1", "--seconds", "2", "--names", "10000"]
        cmd += ["--fuzz", "5000"]
    published = {p: p.read_bytes() for p in (RESULTS / "dns.json", RESULTS / "dns.md") if p.exists()}
    started = time.time()
    try:
        rc = subprocess.run(cmd, cwd=REPO, timeout=900).returncode
        path = folder / "dns.json"
        if not path.exists() or path.stat().st_mtime < started:
            return {"error": f"bench/dns_bench.py exited {rc} and wrote no results"}
        result = json.loads(path.read_text())
    finally:
        if a.quick and folder == RESULTS:
            for p, data in published.items():
                p.write_bytes(data)
    if rc != 0:  # it exits 1 when a figure misses its target; the figures still stand
        result["error"] = f"bench/dns_bench.py exited {rc} (see {folder / 'dns.md'})"
    return result


def meta(a: argparse.Namespace) -> dict:
    def version(cmd: list[str], strict: bool = False) -> str:
        try:
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
            if strict and p.returncode != 0:
                return "?"
            return (p.stdout + p.stderr).strip().splitlines()[0]
        except (OSError, IndexError, subprocess.TimeoutExpired):
            return "?"

    commit = a.edge_label or version(["git", "-C", str(peers.EDGE_SRC), "describe", "--always", "--dirty"], strict=True)
    return {
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "commit": commit,
        "cpus": os.cpu_count(),
        "cpu_model": next(
            (
                ln.split(":", 1)[1].strip()
                for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")
            ),
            "?",
        ),
        "python": platform.python_version(),
        "nginx": version(["nginx", "-v"]),
        "wrk": version(["wrk", "-v"]),
        "proxy_cpu": PROXY_CPU,
        "load_cpu": LOAD_CPU,
        "edge_src": str(peers.EDGE_SRC),
        "load_average_before": os.getloadavg(),
        "args": {k: v for k, v in vars(a).items()},
    }


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    if a.edge_src:
        peers.EDGE_SRC = a.edge_src.resolve()
        sys.path.insert(0, str(peers.EDGE_SRC))  # the micro-benchmarks time that checkout's stages too
    need("nginx", "wrk", "taskset")
    os.sched_setaffinity(0, {int(LOAD_CPU)})
    raise_nofile()
    progress = Progress(steps(a))
    out: dict = {"meta": meta(a), "scenarios": {}}
    if a.micro:
        out["micro"] = micro.measure(a.micro, 7)
        ns = out["micro"]["ns"]
        progress.step("micro " + "  ".join(f"{k} {v:,.0f}" for k, v in ns.items()) + " ns/request")
    if a.only:
        with backend() as be, certificate() as cert:  # one certificate per run, for both proxies' HTTPS
            bench = scenarios.Bench(a, be, progress.step, cert)
            for name in a.only:
                try:
                    out["scenarios"][name] = scenarios.BY_NAME[name].run(bench)
                except Exception as exc:  # one broken scenario must not lose the others' figures
                    out["scenarios"][name] = {"error": repr(exc)}
                    progress.step(f"{name}: FAILED {exc!r}")
                if peers.LOGS:  # what the proxies logged at warning or worse while it ran
                    out["scenarios"][name]["logs"] = list(peers.LOGS)
                    for entry in peers.LOGS:
                        print(
                            f"  {entry['proxy']} logged {entry['lines']} warnings/errors; last: {entry['last'][-1]}",
                            file=sys.stderr,
                        )
                    peers.LOGS.clear()
    out["meta"]["load_average_after"] = os.getloadavg()
    a.results.mkdir(parents=True, exist_ok=True)
    (a.results / "http.json").write_text(json.dumps(out, indent=2, default=str) + "\n")
    plots = [] if a.no_plots else report.plots(out, a.results)
    (a.results / "http.md").write_text(report.markdown(out, plots))
    written = [a.results / "http.json", a.results / "http.md", *plots]
    print("wrote " + ", ".join(str(p) for p in written), file=sys.stderr)
    if not a.no_dns:
        d = dns(a)
        progress.step("dns: " + ("skipped, no bench/dns_bench.py" if d is None else d.get("error", "done")))
    print(report.markdown(out, plots, brief=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
