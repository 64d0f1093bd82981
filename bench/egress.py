"""bench: the egress path against a direct connection (issue 14).

    sudo .venv/bin/python bench/egress.py [--runs 3] [--seconds 5] [--concurrency 16]

Builds the namespaces of the egress tests (tests/egress_world.py: a sandbox, a host running edge's
egress listener behind the generated nftables ruleset, an internet), with one internet address,
192.0.2.11, excluded from the redirect: the kernel forwards the sandbox's connections there directly.
Every scenario runs both ways, alternating, `--runs` times; medians (min-max) are printed and written
to bench/results/egress.json.

  - bulk: curl in the sandbox downloads 100 MiB over HTTP, through edge (a name allowed by a domain
    entry: Host read, name resolved by edge, then splice(2) both ways) and directly;
  - connections per second: a client in the sandbox opens, uses and closes connections for
    `--seconds` with `--concurrency` at once, (a) to the TCP echo (decided by CIDR, nothing read
    before the dial) and (b) an HTTP GET with a Host (head read, cached name, dial, splice).

Everything runs on this machine: edge (this process), the internet's servers and the clients share
its cores, so the ratios say more than the absolute numbers.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

import trio

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.egress_world import egress_world, skip_reason  # noqa: E402

MIB = 1 << 20
BULK = 100 * MIB
THROUGH, DIRECT = "192.0.2.10", "192.0.2.11"

LOAD = """
import sys, trio
host, port, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
seconds, concurrency = float(sys.argv[4]), int(sys.argv[5])
done = 0
failed = 0
REQUEST = b"GET / HTTP/1.1\\r\\nHost: example.com\\r\\nConnection: close\\r\\n\\r\\n"
async def one_client(end):
    global done, failed
    while trio.current_time() < end:
        try:
            s = await trio.open_tcp_stream(host, port)
            async with s:
                if mode == "echo":
                    await s.send_all(b"ping")
                    got = b""
                    while len(got) < 4:
                        chunk = await s.receive_some(4)
                        if not chunk:
                            raise OSError("closed")
                        got += chunk
                else:
                    await s.send_all(REQUEST)
                    while await s.receive_some(65536):
                        pass
            done += 1
        except OSError:
            failed += 1
async def main():
    end = trio.current_time() + seconds
    async with trio.open_nursery() as n:
        for _ in range(concurrency):
            n.start_soon(one_client, end)
trio.run(main)
print(done / seconds, failed)
"""


async def bulk(world, address: str) -> float:
    done = await world.run(
        "curl",
        "-sS",
        "-o",
        "/dev/null",
        "-w",
        "%{speed_download}",
        f"http://{address}/bytes/{BULK}",
        "-H",
        "Host: example.com",
        timeout=120,
    )
    if done.returncode:
        raise RuntimeError(done.stderr.decode())
    return float(done.stdout) / MIB


async def rate(world, address: str, port: int, mode: str, seconds: float, concurrency: int) -> float:
    done = await world.run(
        sys.executable, "-c", LOAD, address, str(port), mode, str(seconds), str(concurrency), timeout=seconds + 60
    )
    if done.returncode:
        raise RuntimeError(done.stderr.decode())
    per_second, failed = done.stdout.split()
    if int(failed):
        print(f"  ({failed.decode()} connections failed)", file=sys.stderr)
    return float(per_second)


def summary(values: list[float]) -> dict:
    return {
        "median": round(statistics.median(values), 1),
        "min": round(min(values), 1),
        "max": round(max(values), 1),
        "runs": [round(v, 1) for v in values],
    }


async def main(args: argparse.Namespace) -> dict:
    results: dict[str, dict[str, list[float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        async with egress_world(Path(tmp), exclude=(f"{DIRECT}/32",)) as world, trio.open_nursery() as nursery:
            # Thousands of short connections a second from one address to one port: let the client
            # sides (the sandbox's, and edge's own towards the internet) reuse TIME_WAIT ports, as a
            # load generator would, in these namespaces only.
            for ns in (world.sandbox_ns, world.host_ns):
                world.lab.sh(
                    ns, "sysctl", "-q", "-w", "net.ipv4.tcp_tw_reuse=1", "net.ipv4.ip_local_port_range=1024 65000"
                )
            await world.start_edge(nursery)
            world.sandbox("box", internet_access=False, allow_out=["example.com", "203.0.113.0/24"])
            scenarios = {
                "bulk_100MiB_MiB_per_s": lambda a: bulk(world, a),
                "echo_connections_per_s": lambda a: rate(
                    world, a if a == DIRECT else "203.0.113.10", 7000, "echo", args.seconds, args.concurrency
                ),
                "http_connections_per_s": lambda a: rate(world, a, 80, "http", args.seconds, args.concurrency),
            }
            for name, run in scenarios.items():
                results[name] = {"egress": [], "direct": []}
                for i in range(args.runs):
                    for way, address in (
                        (("egress", THROUGH), ("direct", DIRECT))
                        if i % 2 == 0
                        else (("direct", DIRECT), ("egress", THROUGH))
                    ):
                        value = await run(address)
                        results[name][way].append(value)
                        print(f"{name} {way} run {i + 1}: {value:.1f}", flush=True)
            nursery.cancel_scope.cancel()
    report = {}
    for name, ways in results.items():
        egress, direct = summary(ways["egress"]), summary(ways["direct"])
        report[name] = {
            "egress": egress,
            "direct": direct,
            "egress_over_direct": round(egress["median"] / direct["median"], 2),
        }
    return report


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    reason = skip_reason()
    if reason:
        sys.exit(f"bench/egress.py: {reason}")
    report = trio.run(main, args)
    out = REPO / "bench" / "results" / "egress.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
