"""What one bench/load.py process can produce on one core: its ceiling, measured against nginx and dnsmasq.

    .venv/bin/python -m bench.loadlib.ceiling [--seconds 10] [--runs 3] [--out bench/results/load]

nginx (one worker, `return 200` with the 23-byte answer, as bench/peers.py's backend) and dnsmasq run
pinned to CPU 0; bench/load.py runs with `--procs 1` pinned to CPU 1, so the figure is what one
generator core does when the server is never the limit. Measured:

  1. closed loop, keep-alive small requests, 50 connections: answered/s and the generator's CPU %
  2. closed loop, a new connection per request (newconn), 50 connections
  3. open loop, small requests at rising rates: the highest rate it sends on time (every request
     answered, the scheduler's lag p99 under 2 ms)
  4. DNS alone (--qps at rising rates, 1 HTTP request/s beside it) against dnsmasq, same rule
  5. wrk -t1 -c50 on the same core against the same nginx: what a C generator does there

Writes ceiling.json and ceiling.md to --out; bench/README.md ("load.py") quotes them.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from bench import peers  # noqa: E402
from bench.dns_bench import start_dnsmasq, wait_answering  # noqa: E402

LOAD = REPO / "bench" / "load.py"
CPUS = {"server": "0", "load": "1"}  # --no-pin: both "0,1"


def load(args: list[str], folder: Path) -> dict:
    out = folder / "r"
    cmd = ["taskset", "-c", CPUS["load"], sys.executable, str(LOAD), *args, "--quiet", "--no-plots", "--out", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if not (out / "load.json").exists():
        raise RuntimeError(f"load.py failed: {done.stdout}{done.stderr}")
    return json.loads((out / "load.json").read_text())


def closed(ids: Path, edge: str, mix: str, seconds: float, folder: Path) -> dict:
    doc = load(["--edge", edge, "--sandboxes", str(ids), "--mix", mix, "--connections", "50",
                "--duration", str(seconds)], folder)  # fmt: skip
    return {
        "answered_per_s": doc["throughput"]["steady_answered_per_s"],
        "errors": doc["error_total"],
        "p50_ms": doc["latency_ms"]["p50"],
        "p99_ms": doc["latency_ms"]["p99"],
        "generator_cpu_percent": doc["generator"]["cpu_percent"].get("0"),
    }


def open_loop(args: list[str], rate_flag: str, rates: list[int], seconds: float, folder: Path, dns: bool) -> list:
    rows = []
    for rate in rates:
        doc = load([*args, rate_flag, str(rate), "--duration", str(seconds)], folder)
        block = doc["dns"] if dns else doc
        lag = doc["latency_only_ms"].get("lag", {})
        kept_up = block["error_total"] == 0 and block["answered"] == block["sent"] and (lag.get("p99") or 0) < 2.0
        rows.append(
            {
                "rate": rate,
                "sent": block["sent"],
                "answered_per_s": block["answered"] / seconds,
                "errors": block["errors"],
                "p99_ms": (block["latency_ms"] or {}).get("p99"),
                "lag_p99_ms": lag.get("p99"),
                "generator_cpu_percent": doc["generator"]["cpu_percent"].get("0"),
                "kept_up": kept_up,
            }
        )
        print(f"ceiling: {'dns' if dns else 'http'} at {rate:,}/s: {rows[-1]}", file=sys.stderr, flush=True)
        if not kept_up and len(rows) >= 2 and not rows[-2]["kept_up"]:
            break
    return rows


def wrk(url: str, seconds: float) -> float:
    out = subprocess.run(["taskset", "-c", CPUS["load"], "wrk", "-t1", "-c50", f"-d{seconds:g}s", url],
                         capture_output=True, text=True, timeout=seconds + 30).stdout  # fmt: skip
    return peers.parse_wrk(out)["rps"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--rates", default="5000,10000,15000,20000,25000,30000")
    ap.add_argument("--qps", default="10000,20000,30000,40000,50000")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "load")
    ap.add_argument(
        "--no-pin", action="store_true", help="let the kernel place everything (a machine shared with pinned loads)"
    )
    a = ap.parse_args(argv)
    if a.no_pin:
        CPUS.update(server="0,1", load="0,1")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # so nginx and dnsmasq are stopped on the way out
    peers.need("nginx", "wrk", "taskset")
    peers.raise_nofile()
    result: dict = {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "machine": f"{os.cpu_count()} CPUs, Python {sys.version.split()[0]}",
        "load_average_before": list(os.getloadavg()),
        "seconds": a.seconds,
        "runs": a.runs,
        "pinned": not a.no_pin,
    }
    with tempfile.TemporaryDirectory(prefix="edge-ceiling-") as tmp:
        folder = Path(tmp)
        ids = folder / "ids.txt"
        ids.write_text("ceiling:3000\n")
        port = peers.free_port(peers.BACKEND_HOST)
        with peers.nginx(peers.NGINX_BACKEND, CPUS["server"], host=peers.BACKEND_HOST, port=port):
            peers.wait_port(peers.BACKEND_HOST, port)
            edge = f"http://{peers.BACKEND_HOST}:{port}"
            for name, mix in (("keepalive", "small"), ("newconn", "newconn")):
                runs = [closed(ids, edge, mix, a.seconds, folder) for _ in range(a.runs)]
                result[f"closed_{name}"] = {
                    "runs": runs,
                    "median_answered_per_s": statistics.median(r["answered_per_s"] for r in runs),
                    "median_generator_cpu_percent": statistics.median(r["generator_cpu_percent"] or 0 for r in runs),
                }
                print(f"ceiling: closed loop {name}: {result[f'closed_{name}']['median_answered_per_s']:,.0f}/s",
                      file=sys.stderr, flush=True)  # fmt: skip
            rates = [int(r) for r in a.rates.split(",")]
            result["open_small"] = open_loop(["--edge", edge, "--sandboxes", str(ids), "--connections", "64"], "--rate",
                                             rates, min(a.seconds, 5), folder, dns=False)  # fmt: skip
            result["wrk_rps"] = statistics.median(wrk(edge + "/", a.seconds) for _ in range(a.runs))
        dport = peers.free_port()
        dnsmasq = start_dnsmasq("dnsmasq" if not Path("/usr/sbin/dnsmasq").exists() else "/usr/sbin/dnsmasq", dport,
                                None if a.no_pin else int(CPUS["server"]))  # fmt: skip
        try:
            wait_answering(dport)
            qps = [int(q) for q in a.qps.split(",")]
            result["open_dns"] = open_loop(
                ["--edge", edge, "--sandboxes", str(ids), "--rate", "1", "--dns", f"127.0.0.1:{dport}"], "--qps",
                qps, min(a.seconds, 5), folder, dns=True,
            )  # fmt: skip
        finally:
            dnsmasq.terminate()
            dnsmasq.wait(timeout=10)
    result["load_average_after"] = list(os.getloadavg())
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "ceiling.json").write_text(json.dumps(result, indent=1) + "\n")
    (a.out / "ceiling.md").write_text(markdown(result))
    print(markdown(result))
    return 0


def markdown(r: dict) -> str:
    def best(rows: list[dict]) -> str:
        ok = [x["rate"] for x in rows if x["kept_up"]]
        return f"{max(ok):,}" if ok else "below the lowest rate tried"

    def per_cpu(block: dict) -> str:
        cpu = block["median_generator_cpu_percent"]
        return f"{block['median_answered_per_s'] / (cpu / 100):,.0f}" if cpu else "-"

    ck, cn = r["closed_keepalive"], r["closed_newconn"]
    lines = [
        f"# bench/load.py: one process's ceiling ({r['date']})",
        "",
        f"{r['machine']}; "
        + (
            "the servers on CPU 0, bench/load.py (`--procs 1`) on CPU 1"
            if r.get("pinned", True)
            else "nothing pinned (`--no-pin`), bench/load.py with `--procs 1`"
        )
        + ". Load average "
        f"before/after: {', '.join(f'{x:.2f}' for x in r['load_average_before'])} / "
        f"{', '.join(f'{x:.2f}' for x in r['load_average_after'])}. Closed loop: median of {r['runs']} runs of "
        f"{r['seconds']:g} s.",
        "",
        "| what | per second | generator CPU % | per generator CPU-second |",
        "|---|---:|---:|---:|",
        f"| small requests, keep-alive, closed loop, 50 connections (nginx) | {ck['median_answered_per_s']:,.0f} | "
        f"{ck['median_generator_cpu_percent']:.0f} | {per_cpu(ck)} |",
        f"| small requests, a new connection each, closed loop, 50 connections (nginx) | "
        f"{cn['median_answered_per_s']:,.0f} | {cn['median_generator_cpu_percent']:.0f} | {per_cpu(cn)} |",
        f"| open loop, highest rate sent on time (small, nginx) | {best(r['open_small'])} | | |",
        f"| open loop, highest DNS rate sent on time (dnsmasq) | {best(r['open_dns'])} | | |",
        f"| wrk -t1 -c50 on the same core (nginx), for comparison | {r['wrk_rps']:,.0f} | | |",
        "",
        "Per generator CPU-second: the rate divided by the share of a core the generator used, what one fully "
        "busy core would carry (an upper bound when the core was shared: fewer wake-ups per request under load).",
        "",
        "Open loop, each rate for a few seconds (on time: every request answered, scheduler lag p99 < 2 ms):",
        "",
        "| kind | rate | answered/s | p99 ms | lag p99 ms | generator CPU % | on time |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for kind, rows in (("http", r["open_small"]), ("dns", r["open_dns"])):
        for x in rows:
            lines.append(
                f"| {kind} | {x['rate']:,} | {x['answered_per_s']:,.0f} | {x['p99_ms'] or 0:.2f} | "
                f"{x['lag_p99_ms'] or 0:.2f} | {x['generator_cpu_percent'] or 0:.0f} | "
                f"{'yes' if x['kept_up'] else 'no'} |"
            )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
