#!/usr/bin/env python3
"""DNS benchmark: edge against dnsmasq with dnsperf, then a fuzz run against edge.

    .venv/bin/python bench/dns_bench.py [--runs 3] [--seconds 10] [--fuzz 100000] [--quick]

1. Micro: the pure stages in memory (fast path, dnslib path, rate limiter), microseconds per query.
2. Load: dnsperf sends the same file of distinct sandbox names (`3000-<random>.sandbox.localhost A`)
   to `edge dns` and to dnsmasq (`address=/sandbox.localhost/127.0.0.1`), alternating, `--runs` times
   each; servers pinned to CPU 0, dnsperf to CPU 1 (taskset). edge runs with rate limiting on but
   its rate set above the load, so the limiter's bookkeeping is paid and nothing is dropped by it.
   Reports medians, min-max, the ratio of medians, and lost queries.
3. Fuzz: `--fuzz` hostile packets (tests/dns/fuzz.py: parser traps, mutated queries, random bytes) at
   edge over UDP, then checks the process is alive and answers correctly over UDP and TCP.

Results: bench/results/dns.json and bench/results/dns.md. Needs dnsperf and dnsmasq
(`apt-get install dnsperf dnsmasq-base`, or `make bench`).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import timeit
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import dns.message  # noqa: E402
import dns.query  # noqa: E402

from tests.dns import fuzz  # noqa: E402

RESULTS = REPO / "bench" / "results"
DOMAIN = "sandbox.localhost"


def free_port() -> int:
    """A port free for both UDP and TCP on 127.0.0.1."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.bind(("127.0.0.1", 0))
            port = u.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
                try:
                    t.bind(("127.0.0.1", port))
                    return port
                except OSError:
                    continue


def pin(cpu: int | None) -> list[str]:
    return ["taskset", "-c", str(cpu)] if cpu is not None else []


def wait_answering(port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    query = dns.message.make_query(f"3000-warmup.{DOMAIN}", "A")
    while time.monotonic() < deadline:
        try:
            reply = dns.query.udp(query, "127.0.0.1", port=port, timeout=0.5)
            if reply.answer:
                return
        except Exception:
            time.sleep(0.1)
    raise RuntimeError(f"nothing answers on port {port}")


# --- 1. micro -----------------------------------------------------------------------------------------


def micro() -> dict:
    from edge.dns.answer import answer
    from edge.dns.fastpath import FastPath
    from edge.dns.rrl import RateLimiter
    from edge.dns.zone import Zones
    from edge.dns.zonefile import load_file

    zones = Zones([load_file(REPO / "zones" / f"{DOMAIN}.zone")])
    fast = FastPath.build(zones)
    wire = dns.message.make_query(f"3000-abcdef.{DOMAIN}", "A", use_edns=0).to_wire()
    limiter = RateLimiter(10**9)
    key = ((b"*", b"sandbox", b"localhost"), 1)

    def per_call(fn, n):
        return round(min(timeit.repeat(fn, number=n, repeat=5)) / n * 1e6, 3)

    return {
        "fastpath_us": per_call(lambda: fast.answer(wire), 100_000),
        "dnslib_path_us": per_call(lambda: answer(wire, zones), 5_000),
        "rrl_check_us": per_call(lambda: limiter.check("127.0.0.1", key, 1.0), 100_000),
        "udp_send_recv_us": udp_round_trip_us(),
    }


def udp_round_trip_us() -> float:
    """One sendto + one recvfrom on loopback from Python: the floor of a Python UDP server's cost."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as c:
        s.bind(("127.0.0.1", 0))
        addr = s.getsockname()
        data = b"x" * 60

        def rt():
            c.sendto(data, addr)
            s.recvfrom(4096)

        return round(min(timeit.repeat(rt, number=20_000, repeat=5)) / 20_000 * 1e6, 3)


# --- 2. load ------------------------------------------------------------------------------------------

_FIELDS = {
    "sent": r"Queries sent:\s+(\d+)",
    "completed": r"Queries completed:\s+(\d+)",
    "lost": r"Queries lost:\s+(\d+)",
    "qps": r"Queries per second:\s+([\d.]+)",
    "latency_avg_s": r"Average Latency \(s\):\s+([\d.]+)",
}


def dnsperf(port: int, queries: Path, seconds: float, clients: int, outstanding: int, cpu: int | None) -> dict:
    cmd = pin(cpu) + ["dnsperf", "-s", "127.0.0.1", "-p", str(port), "-d", str(queries), "-l", str(seconds),
                      "-c", str(clients), "-q", str(outstanding)]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60).stdout
    result = {}
    for name, pattern in _FIELDS.items():
        m = re.search(pattern, out)
        if not m:
            raise RuntimeError(f"dnsperf output without {name!r}:\n{out}")
        result[name] = float(m.group(1)) if "." in m.group(1) else int(m.group(1))
    m = re.search(r"Response codes:\s+(.*)", out)
    result["rcodes"] = m.group(1).strip() if m else ""
    return result


def summary(runs: list[dict]) -> dict:
    qps = [r["qps"] for r in runs]
    return {
        "qps_median": round(statistics.median(qps)),
        "qps_min": round(min(qps)),
        "qps_max": round(max(qps)),
        "lost_total": sum(r["lost"] for r in runs),
        "sent_total": sum(r["sent"] for r in runs),
    }


# --- 3. fuzz ------------------------------------------------------------------------------------------


def expected_replies(packets: list[bytes]) -> int:
    """How many of `packets` edge should answer (the rest get no reply by design: no header, or QR=1)."""
    from edge.dns.answer import answer
    from edge.dns.fastpath import FastPath
    from edge.dns.zone import Zones
    from edge.dns.zonefile import load_file

    zones = Zones([load_file(REPO / "zones" / f"{DOMAIN}.zone")])
    fast = FastPath.build(zones)
    return sum(1 for p in packets if (fast.answer(p) or answer(p, zones))[0] is not None)


def fuzz_run(port: int, count: int, rate: float) -> dict:
    """Send `count` hostile packets at `rate` per second, reading replies as they come.

    The rate is paced below what the dnslib path sustains, so that the kernel does not drop packets
    before edge reads them: then every packet is parsed, and the replies can be counted exactly
    against what the pure functions say they should be."""
    packets = list(fuzz.packets(count, seed=2026))
    expected = expected_replies(packets)
    replies = 0
    started = time.monotonic()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        s.setblocking(False)
        for i, packet in enumerate(packets):
            while True:
                try:
                    s.sendto(packet, ("127.0.0.1", port))
                    break
                except BlockingIOError:
                    time.sleep(0.0005)
            if i % 32 == 0:
                ahead = started + i / rate - time.monotonic()
                if ahead > 0:
                    time.sleep(ahead)
            try:
                while True:
                    s.recv(65535)
                    replies += 1
            except BlockingIOError:
                pass
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline and replies < expected:
            try:
                s.recv(65535)
                replies += 1
            except BlockingIOError:
                time.sleep(0.01)
    return {
        "packets": len(packets),
        "seconds": round(time.monotonic() - started, 2),
        "replies": replies,
        "replies_expected": expected,
    }


def correctness_checks(port: int) -> dict[str, bool]:
    """After the fuzz: the answers a resolver relies on, over UDP and TCP."""
    checks = {}
    cases = [
        ("wildcard A", f"3000-AfTer.{DOMAIN}", "A", 0, "127.0.0.1"),
        ("wildcard AAAA", f"3000-after.{DOMAIN}", "AAAA", 0, "::1"),
        ("explicit ns1", f"ns1.{DOMAIN}", "A", 0, "127.0.0.1"),
        ("NXDOMAIN below ns1", f"x.ns1.{DOMAIN}", "A", 3, None),
        ("REFUSED out of zone", "example.com", "A", 5, None),
    ]
    for transport, send in (("udp", dns.query.udp), ("tcp", dns.query.tcp)):
        for label, name, rdtype, rcode, expected in cases:
            try:
                query = dns.message.make_query(name, rdtype, use_edns=0)
                reply = send(query, "127.0.0.1", port=port, timeout=3)
                got = reply.answer[0][0].to_text() if reply.answer else None
                ok = reply.rcode() == rcode and got == expected and reply.id == query.id
                if expected:
                    ok = ok and reply.answer[0].name.to_text() == name + "."
            except Exception:
                ok = False
            checks[f"{transport} {label}"] = ok
    return checks


def start_edge(port: int, config: Path, log, cpu: int | None, state: Path) -> subprocess.Popen:
    cmd = pin(cpu) + [sys.executable, "-m", "edge", "dns", "--config", str(config), "--dns", f"127.0.0.1:{port}",
                      "--log-format", "text"]  # fmt: skip
    env = {**os.environ, "EDGE_STATE_DIR": str(state)}
    return subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env=env)


def start_dnsmasq(binary: str, port: int, cpu: int | None) -> subprocess.Popen:
    """dnsmasq in the foreground on a loopback port, answering every name under DOMAIN with 127.0.0.1."""
    cmd = pin(cpu) + [binary, "--keep-in-foreground", "--conf-file=/dev/null", f"--port={port}",
                      "--listen-address=127.0.0.1", "--bind-interfaces", "--no-resolv", "--no-hosts",
                      f"--address=/{DOMAIN}/127.0.0.1", "--user=" + (os.environ.get("USER") or "root"),
                      "--log-facility=/dev/null", "--cache-size=0"]  # fmt: skip
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


# --- main ---------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=10.0, help="dnsperf run length")
    parser.add_argument("--names", type=int, default=100_000, help="distinct names in the query file")
    parser.add_argument("--clients", type=int, default=4, help="dnsperf -c")
    parser.add_argument("--outstanding", type=int, default=100, help="dnsperf -q")
    parser.add_argument("--fuzz", type=int, default=100_000, help="hostile packets (0: skip)")
    parser.add_argument("--fuzz-rate", type=float, default=8000.0, help="hostile packets per second")
    parser.add_argument("--quick", action="store_true", help="3 s runs and 20,000 names (the fuzz stays whole)")
    parser.add_argument(
        "--defaults",
        action="store_true",
        help="edge with its default DNS settings (RRL on at its default rate, loopback exempt)",
    )
    parser.add_argument("--results", type=Path, default=RESULTS, help="folder for dns.json and dns.md")
    args = parser.parse_args(argv)
    if args.quick:
        args.seconds, args.names = min(args.seconds, 3.0), min(args.names, 20_000)

    missing = [
        tool for tool in ("dnsperf", "dnsmasq") if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists()
    ]
    if missing:
        print(f"dns_bench: {' and '.join(missing)} not found. Run `make bench` (it installs them) or\n"
              "    apt-get install dnsperf dnsmasq-base", file=sys.stderr)  # fmt: skip
        return 2
    dnsmasq_bin = shutil.which("dnsmasq") or "/usr/sbin/dnsmasq"
    cpus = os.cpu_count() or 1
    pinned = shutil.which("taskset") is not None and cpus >= 2
    server_cpu, client_cpu = (0, 1) if pinned else (None, None)
    if not pinned:
        print("dns_bench: not pinning (needs taskset and 2 CPUs); figures will be noisier", file=sys.stderr)

    tmp = Path(tempfile.mkdtemp(prefix="dns-bench-"))
    rng = random.Random(1)
    queries = tmp / "queries.txt"
    queries.write_text("".join(f"3000-{rng.getrandbits(48):012x}.{DOMAIN} A\n" for _ in range(args.names)))
    config = tmp / "edge.toml"
    # Rate limiting stays on (its bookkeeping is paid per query) with a rate above the load, and no
    # client exempt; --defaults measures edge as shipped instead (loopback exempt, as a local resolver).
    config.write_text("" if args.defaults else "[dns]\nrrl_rate = 1000000000\nrrl_exempt = []\n")

    print("micro-benchmarks (in memory)...", flush=True)
    micro_results = micro()
    print(f"  {micro_results}")

    edge_port, dnsmasq_port = free_port(), free_port()
    edge_log = open(tmp / "edge.log", "w")  # noqa: SIM115
    procs: list[subprocess.Popen] = []
    try:
        edge = start_edge(edge_port, config, edge_log, server_cpu, tmp)
        procs.append(edge)
        procs.append(start_dnsmasq(dnsmasq_bin, dnsmasq_port, server_cpu))
        wait_answering(edge_port)
        wait_answering(dnsmasq_port)
        targets = {"edge": edge_port, "dnsmasq": dnsmasq_port}
        runs: dict[str, list[dict]] = {"edge": [], "dnsmasq": []}
        for i in range(args.runs):
            order = ["edge", "dnsmasq"] if i % 2 == 0 else ["dnsmasq", "edge"]
            for name in order:
                result = dnsperf(targets[name], queries, args.seconds, args.clients, args.outstanding, client_cpu)
                runs[name].append(result)
                print(f"  run {i + 1} {name:8} {result['qps']:>10.0f} q/s  lost {result['lost']}  {result['rcodes']}",
                      flush=True)  # fmt: skip
        edge_sum, dnsmasq_sum = summary(runs["edge"]), summary(runs["dnsmasq"])
        ratio = round(edge_sum["qps_median"] / dnsmasq_sum["qps_median"], 3)
        print(f"edge median {edge_sum['qps_median']} q/s, dnsmasq median {dnsmasq_sum['qps_median']} q/s, "
              f"ratio {ratio}, edge lost {edge_sum['lost_total']}", flush=True)  # fmt: skip

        fuzz_result = None
        if args.fuzz:
            print(f"fuzz: {args.fuzz} hostile packets at edge...", flush=True)
            fuzz_result = fuzz_run(edge_port, args.fuzz, args.fuzz_rate)
            fuzz_result["alive"] = edge.poll() is None
            fuzz_result["checks"] = correctness_checks(edge_port)
            fuzz_result["all_correct"] = (
                fuzz_result["alive"]
                and all(fuzz_result["checks"].values())
                and fuzz_result["replies"] == fuzz_result["replies_expected"]
            )
            edge_log.flush()
            log_text = (tmp / "edge.log").read_text()
            fuzz_result["malformed_warnings_logged"] = log_text.count("malformed DNS packet")
            fuzz_result["tracebacks_logged"] = log_text.count("Traceback")
            print(f"  {fuzz_result}", flush=True)
    finally:
        for proc in procs:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
        edge_log.close()
        shutil.rmtree(tmp, ignore_errors=True)

    report = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {
            "cpus": cpus,
            "cpu_model": _cpu_model(),
            "python": platform.python_version(),
            "dnsperf": _version(["dnsperf", "-h"], r"Version ([\d.]+)"),
            "dnsmasq": _version([dnsmasq_bin, "--version"], r"version ([\d.]+)"),
            "pinned": {"servers": server_cpu, "dnsperf": client_cpu},
        },
        "params": {
            k: getattr(args, k) for k in ("runs", "seconds", "names", "clients", "outstanding", "fuzz", "fuzz_rate")
        },
        "micro": micro_results,
        "runs": runs,
        "edge": edge_sum,
        "dnsmasq": dnsmasq_sum,
        "ratio_edge_to_dnsmasq": ratio,
        "fuzz": fuzz_result,
    }
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / "dns.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.results / "dns.md").write_text(markdown(report))
    print(f"wrote {args.results / 'dns.json'} and {args.results / 'dns.md'}")
    ok = edge_sum["lost_total"] == 0 and ratio >= 0.5 and (fuzz_result is None or fuzz_result["all_correct"])
    return 0 if ok else 1


def markdown(r: dict) -> str:
    e, d, m, p = r["edge"], r["dnsmasq"], r["machine"], r["params"]
    lines = [
        f"# DNS benchmark ({r['date']})",
        "",
        f"{m['cpus']} CPUs ({m['cpu_model']}), Python {m['python']}, dnsperf {m['dnsperf']}, dnsmasq {m['dnsmasq']}; "
        f"servers on CPU {m['pinned']['servers']}, dnsperf on CPU {m['pinned']['dnsperf']}. "
        f"{p['runs']} alternating runs of {p['seconds']:g} s, dnsperf -c {p['clients']} -q {p['outstanding']}, "
        f"{p['names']} distinct names (`3000-<random>.sandbox.localhost A`).",
        "",
        "| server | median q/s | min-max q/s | lost / sent |",
        "|---|---:|---:|---:|",
        f"| edge | {e['qps_median']:,} | {e['qps_min']:,}-{e['qps_max']:,} | {e['lost_total']} / {e['sent_total']:,} |",
        f"| dnsmasq | {d['qps_median']:,} | {d['qps_min']:,}-{d['qps_max']:,} | "
        f"{d['lost_total']} / {d['sent_total']:,} |",
        "",
        f"Ratio of medians, edge / dnsmasq: **{r['ratio_edge_to_dnsmasq']}** (target >= 0.5).",
        "",
        "Per run (q/s): "
        + "; ".join(
            f"run {i + 1}: edge {a['qps']:,.0f}, dnsmasq {b['qps']:,.0f}"
            for i, (a, b) in enumerate(zip(r["runs"]["edge"], r["runs"]["dnsmasq"], strict=True))
        ),
        "",
        "In memory, per query (us): " + ", ".join(f"{k} {v}" for k, v in r["micro"].items()),
    ]
    f = r.get("fuzz")
    if f:
        failed = [k for k, ok in f["checks"].items() if not ok]
        lines += [
            "",
            f"Fuzz: {f['packets']:,} hostile packets in {f['seconds']} s, {f['replies']:,} replies "
            f"({f['replies_expected']:,} expected: the others have no header or QR=1); process alive: "
            f"{f['alive']}; correct answers afterwards over UDP and TCP: "
            f"{'all ' + str(len(f['checks'])) if not failed else 'FAILED ' + ', '.join(failed)}; "
            f"malformed-packet warnings logged: {f['malformed_warnings_logged']} (rate-limited), "
            f"tracebacks: {f['tracebacks_logged']}.",
        ]
    return "\n".join(lines) + "\n"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _version(cmd: list[str], pattern: str) -> str:
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
        m = re.search(pattern, done.stdout + done.stderr)
        return m.group(1) if m else "unknown"
    except OSError:
        return "unknown"


if __name__ == "__main__":
    sys.exit(main())
