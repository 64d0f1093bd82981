"""Small requests: wrk through edge and through nginx (one worker, upstream keepalive), same backend.

    python bench/http_small.py [--runs 3] [--seconds 10] [--connections 50]

Alternates edge and nginx, `--runs` times each, and prints medians, min-max and the ratio edge/nginx.
Writes bench/results/http_small.json.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.peers import LOAD_CPU, NGINX_BACKEND, NGINX_PROXY, PROXY_CPU, edge, free_port, median, nginx, wait_port, wrk  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--connections", type=int, default=50)
    args = ap.parse_args()

    backend_host, backend_port = "127.0.0.2", free_port("127.0.0.2")
    host = f"{backend_port}-bench.sandbox.localhost"
    runs: dict[str, list[dict]] = {"edge": [], "nginx": []}
    with nginx(NGINX_BACKEND, LOAD_CPU, host=backend_host, port=backend_port, sink=free_port()):
        wait_port(backend_host, backend_port)
        proxy_port = free_port()
        with nginx(NGINX_PROXY, PROXY_CPU, port=proxy_port, backend_host=backend_host, backend_port=backend_port), \
                edge(backend_host) as (edge_port, _):
            wait_port("127.0.0.1", proxy_port)
            for name, port in (("edge", edge_port), ("nginx", proxy_port)):  # warm-up
                wrk(f"http://127.0.0.1:{port}/", f"{host}:{port}", args.connections, 2)
            for i in range(args.runs):
                for name, port in (("edge", edge_port), ("nginx", proxy_port)):
                    r = wrk(f"http://127.0.0.1:{port}/", f"{host}:{port}", args.connections, args.seconds)
                    runs[name].append(r)
                    print(f"run {i + 1}/{args.runs} {name:5}: {r['rps']:9.0f} req/s  p50 {r.get('p50', 0):.2f} ms"
                          f"  p99 {r.get('p99', 0):.2f} ms  non-2xx {r['non2xx']}", flush=True)
    summary = {}
    for name, rs in runs.items():
        rps = [r["rps"] for r in rs]
        summary[name] = {"rps_median": median(rps), "rps_min": min(rps), "rps_max": max(rps),
                         "p50_median": median([r.get("p50", 0) for r in rs]),
                         "p99_median": median([r.get("p99", 0) for r in rs]), "runs": rs}
    ratio = summary["edge"]["rps_median"] / summary["nginx"]["rps_median"]
    summary["ratio_edge_to_nginx"] = ratio
    summary["setup"] = {"connections": args.connections, "seconds": args.seconds, "runs": args.runs,
                        "proxy_cpu": PROXY_CPU, "load_cpu": LOAD_CPU}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "http_small.json").write_text(json.dumps(summary, indent=2))
    for name in ("edge", "nginx"):
        s = summary[name]
        print(f"{name:5}: median {s['rps_median']:.0f} req/s (min {s['rps_min']:.0f}, max {s['rps_max']:.0f}), "
              f"p50 {s['p50_median']:.2f} ms, p99 {s['p99_median']:.2f} ms")
    print(f"edge / nginx = {ratio:.3f}")


if __name__ == "__main__":
    main()
