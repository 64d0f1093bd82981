"""Several edges, one Redis catalog (issue 13): how fast a write reaches every edge, and whether the
hot path notices which catalog it serves.

Two measurements, one run, one redis-server (Debian's, started here on a free loopback port, no
persistence):

1. **Propagation.** Three `edge serve` on 127.0.0.11, .12 and .13 share the Redis catalog. The
   bench writes a new sandbox (edge.catalog.ops.add_sandbox on the Redis store: what `edge sandbox
   add` and the admin API do), and from the moment the write returned it probes each edge with a
   GET for that sandbox (a new connection per probe) until the edge routes it (the backend answers,
   not edge's 502). `--writes` writes, one at a time: p50, p99 and max of the delay per edge and of
   the slowest of the three (the time until every edge serves it).
2. **Small requests/s.** The `small` scenario of bench/run.py (wrk, keep-alive GETs of a small
   answer from nginx) through one edge pinned to core 0 (wrk on core 1), on a SQLite catalog, on
   the Redis catalog, and on the Redis catalog while another client writes `--churn` changes a
   second to other sandboxes (every edge applies each one); the three in turn, `--runs` times,
   the order rotated each run. Median and min-max; the ratios to SQLite.

    .venv/bin/python bench/fleet.py                        # ~2 minutes; bench/results/fleet.{json,md}
    .venv/bin/python bench/fleet.py --writes 50 --runs 1 --seconds 3   # a quick look
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import peers  # noqa: E402
from edge.catalog import ops  # noqa: E402
from edge.catalog.model import Sandbox  # noqa: E402
from edge.catalog.redis import RedisStore  # noqa: E402
from tests.proc import EdgeProcess, edge_env  # noqa: E402
from tests.redis_server import RedisServer  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
ADDRESSES = ("127.0.0.11", "127.0.0.12", "127.0.0.13")


def percentile(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


def probe(address: str, port: int, host: str) -> int:
    """One GET on a new connection: the status code (0 when the connection failed)."""
    try:
        with socket.create_connection((address, port), timeout=2) as s:
            s.sendall(f"GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
            head = s.recv(64)
        return int(head.split(b" ", 2)[1])
    except (OSError, IndexError, ValueError):
        return 0


def propagation(redis: RedisServer, backend: peers.Backend, writes: int, folder: Path) -> dict:
    edges = []
    try:
        for i, address in enumerate(ADDRESSES):
            env = edge_env(folder / f"edge{i}", EDGE_ADMIN_TOKEN="bench")
            args = ["serve", "--catalog", redis.url, "--http", f"{address}:0", "--dns", f"{address}:0"]
            args += ["--admin", f"{address}:0", "--no-access-log", "--log-format", "text"]
            proc = EdgeProcess(args, env)
            threading.Thread(target=lambda p=proc: [None for _ in p.proc.stdout], daemon=True).start()
            edges.append((address, proc.port("http"), proc))
        store = RedisStore(redis.url)
        per_edge: dict[str, list[float]] = {a: [] for a in ADDRESSES}
        slowest: list[float] = []
        for n in range(writes):
            sandbox_id = f"prop{n}"
            host = f"{backend.port}-{sandbox_id}.{peers.DOMAIN}"
            ops.add_sandbox(store, sandbox_id, address=backend.host)
            written = time.perf_counter()
            waiting = {a: p for a, p, _ in edges}
            deadline = written + 5
            while waiting and time.perf_counter() < deadline:
                for address, port in list(waiting.items()):
                    if probe(address, port, host) == 200:
                        per_edge[address].append((time.perf_counter() - written) * 1000)
                        del waiting[address]
            if waiting:
                raise RuntimeError(f"{sandbox_id} not routed by {sorted(waiting)} within 5 s")
            slowest.append(max(per_edge[a][-1] for a in ADDRESSES))
            time.sleep(0.01)
        store.close()

        def stats(values: list[float]) -> dict:
            return {
                "p50": percentile(values, 50),
                "p99": percentile(values, 99),
                "max": max(values),
                "n": len(values),
            }

        return {
            "writes": writes,
            "every_edge_ms": stats(slowest),
            "per_edge_ms": {a: stats(v) for a, v in per_edge.items()},
        }
    finally:
        for _, _, proc in edges:
            proc.stop()


class Churn:
    """Writes `rate` changes a second to other sandboxes while it runs (a bounded background load)."""

    def __init__(self, url: str, rate: float) -> None:
        self.store = RedisStore(url)
        self.rate = rate
        self.done = threading.Event()
        self.writes = 0
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.done.is_set():
            self.store.put(Sandbox(f"churn{self.writes % 500}", "127.0.0.3"))
            self.writes += 1
            self.done.wait(1 / self.rate)

    def __enter__(self) -> Churn:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.done.set()
        self.thread.join(5)
        self.store.close()


def throughput(
    redis: RedisServer, backend: peers.Backend, runs: int, seconds: float, connections: int, churn: float
) -> dict:
    store = RedisStore(redis.url)
    store.put(Sandbox(peers.SANDBOX, backend.host))  # the bench sandbox, in the Redis catalog too
    store.close()
    lanes = {
        "sqlite": ({}, 0.0),
        "redis": ({"catalog": redis.url}, 0.0),
        "redis+churn": ({"catalog": redis.url}, churn),
    }
    found: dict[str, list[dict]] = {name: [] for name in lanes}
    order = list(lanes)
    for run in range(runs):
        for name in order[run % len(order) :] + order[: run % len(order)]:
            config, rate = lanes[name]
            with peers.proxy("edge", backend, config=config or None) as px:
                url = f"http://127.0.0.1:{px.port}/"
                host = px.host(backend)
                peers.wrk(url, host, connections, 1)  # warm-up
                if rate:
                    with Churn(redis.url, rate) as c:
                        result = peers.wrk(url, host, connections, seconds)
                    result["churn_writes"] = c.writes
                else:
                    result = peers.wrk(url, host, connections, seconds)
            found[name].append(result)
            print(
                f"fleet: run {run + 1} {name}: {result['rps']:.0f} req/s, p99 {result.get('p99', 0):.2f} ms",
                file=sys.stderr,
            )
    out = {}
    for name, results in found.items():
        out[name] = {
            "rps": peers.spread([r["rps"] for r in results]),
            "p99_ms": peers.spread([r.get("p99", 0.0) for r in results]),
            "errors": sum(r["non2xx"] + r["socket_errors"] for r in results),
            "churn_writes": sum(r.get("churn_writes", 0) for r in results),
        }
    return out


def render(doc: dict) -> str:
    p = doc["propagation"]
    t = doc["throughput"]
    lines = [
        "# Several edges, one Redis catalog",
        "",
        f"{doc['when']}, {doc['machine']}; redis-server {doc['redis']}. Method: bench/fleet.py's docstring.",
        "",
        f"## Propagation: a write to every edge ({p['writes']} writes, three edges, a new connection per probe)",
        "",
        "| | p50 | p99 | max |",
        "|---|---|---|---|",
    ]
    e = p["every_edge_ms"]
    lines.append(f"| all three serve it | {e['p50']:.2f} ms | {e['p99']:.2f} ms | {e['max']:.2f} ms |")
    for address, s in p["per_edge_ms"].items():
        lines.append(f"| edge {address} | {s['p50']:.2f} ms | {s['p99']:.2f} ms | {s['max']:.2f} ms |")
    lines += [
        "",
        f"## Small requests through one edge, by catalog ({doc['runs']} runs of {doc['seconds']:g} s, "
        f"{doc['connections']} connections, edge on core 0, wrk on core 1)",
        "",
        "| catalog | req/s median | min-max | vs SQLite | p99 median | errors |",
        "|---|---|---|---|---|---|",
    ]
    base = t["sqlite"]["rps"]["median"]
    for name, r in t.items():
        label = name if name != "redis+churn" else f"redis, {doc['churn']:g} writes/s meanwhile"
        lines.append(
            f"| {label} | {r['rps']['median']:.0f} | {r['rps']['min']:.0f}-{r['rps']['max']:.0f} |"
            f" {r['rps']['median'] / base:.2f} | {r['p99_ms']['median']:.2f} ms | {r['errors']} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--writes", type=int, default=200, help="sandboxes written one at a time (propagation)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5.0, help="per wrk measurement")
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--churn", type=float, default=50.0, help="writes a second during the churn lane")
    parser.add_argument("--results", type=Path, default=RESULTS)
    a = parser.parse_args(argv)
    peers.need("wrk", "nginx", "taskset", "redis-server")
    with tempfile.TemporaryDirectory(prefix="edge-fleet-") as d, peers.backend() as be:
        redis = RedisServer(Path(d) / "redis").start()
        try:
            version = RedisStore(redis.url).client.info("server")["redis_version"]
            print("fleet: propagation", file=sys.stderr)
            prop = propagation(redis, be, a.writes, Path(d))
            print("fleet: small requests, sqlite vs redis", file=sys.stderr)
            thr = throughput(redis, be, a.runs, a.seconds, a.connections, a.churn)
        finally:
            redis.kill()
    doc = {
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{os.cpu_count()} CPUs",
        "redis": version,
        "runs": a.runs,
        "seconds": a.seconds,
        "connections": a.connections,
        "churn": a.churn,
        "propagation": prop,
        "throughput": thr,
    }
    a.results.mkdir(parents=True, exist_ok=True)
    (a.results / "fleet.json").write_text(json.dumps(doc, indent=1) + "\n")
    (a.results / "fleet.md").write_text(render(doc))
    print(render(doc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
