#!/usr/bin/env python3
"""HTTP latency while the DNS server is flooded with its costliest messages (issue 15, item 1).

    .venv/bin/python bench/dns_flood.py [--runs 3] [--seconds 10] [--rate 1000] [--connections 4]
                                        [--tcp-rate 0] [--requests 2000] [--rrl-rate 50]
                                        [--phases unloaded,udp,...]
                                        [--json FILE] [--edge-src DIR]

`edge serve` (HTTP and DNS in one process, as users run it) is started pinned to CPU 0 with one
sandbox in front of bench/sink.py (a keep-alive HTTP/1.1 server answering "0\\n") on 127.0.0.2. An
HTTP client on CPU 1 sends `--requests` sequential keep-alive GETs to `<port>-bench.sandbox.localhost`
through edge, evenly spaced over `--seconds`, and times each. Three phases per run:

  unloaded  nothing else;
  udp       `--rate` packets/s of the costliest UDP queries (tests/dns/fuzz.py `worst(4096)`: 4 KB,
            hundreds of questions or of answer/authority/additional records with pointer names), in
            turn, from 64 source addresses in 64 different /24s of 127.0.0.0/8 (so that the rate
            limiter, keyed by /24, does not do the work: each source stays under its budget);
  tcp       `--connections` TCP connections, each sending the costliest 64 KB messages
            (`worst(65535)`) back to back as fast as edge reads them (or `--tcp-rate` messages/s in
            all), pipelined, replies drained;
  tcp-control  the same TCP flood, at a server on edge's core that reads and discards (not edge): what
            the traffic alone (~2 GB/s of loopback on two cores) does to the HTTP client's latency.

The flooders run as separate processes on CPU 1 under `nice 19`, so that the HTTP client and the
backend, which sleep most of the time, are not queued behind them on the load core. Every load is
bounded by `--seconds` and every address is loopback. The table gives, per phase, the median over
runs of p50 and p99 latency, the p99 ratio to the unloaded p99 of the same run, the flood's messages
sent and DNS replies received, and edge's CPU use. The issue's bar: loaded p99 within 2x of unloaded.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench import peers  # noqa: E402
from bench.peers import (  # noqa: E402
    BACKEND_HOST,
    LOAD_CPU,
    PROXY_CPU,
    SANDBOX,
    _cpu_ticks,
    _edge_env,
    _stop,
    need,
    python_server,
)
from tests.dns import fuzz  # noqa: E402

DOMAIN = "sandbox.localhost"
SOURCES = [f"127.0.{k}.1" for k in range(1, 65)]
PHASES = ("unloaded", "udp", "tcp", "tcp-control")
#: Seconds an HTTP request may take before the client gives up on it (and counts it as this long).
TIMEOUT = 5.0


# --- edge -----------------------------------------------------------------------------------------


@contextmanager
def edge(backend_host: str, backend_port: int, rrl_rate: int | None):
    """`edge serve` pinned to PROXY_CPU; yields (http_port, dns_port, pid)."""
    with tempfile.TemporaryDirectory(prefix="edge-flood-") as d:
        env = _edge_env({"EDGE_STATE_DIR": d})
        subprocess.run(
            [sys.executable, "-m", "edge", "sandbox", "add", SANDBOX, "--address", backend_host],
            env=env,
            check=True,
            capture_output=True,
            cwd=peers.EDGE_SRC,
            timeout=60,
        )
        args = [
            "serve",
            "--http",
            "127.0.0.1:0",
            "--dns",
            "127.0.0.1:0",
            "--admin",
            "127.0.0.1:0",
            "--no-access-log",
            "--log-format",
            "text",
        ]  # the listening lines read below are text mode's
        if rrl_rate is not None:
            config = Path(d) / "edge.toml"
            config.write_text(f"[dns]\nrrl_rate = {rrl_rate}\n")
            args += ["--config", str(config)]
        out = Path(d) / "edge.out"
        with open(out, "wb") as sink:
            proc = subprocess.Popen(
                ["taskset", "-c", PROXY_CPU, sys.executable, "-m", "edge", *args],
                env=env,
                stdout=sink,
                stderr=subprocess.STDOUT,
                cwd=peers.EDGE_SRC,
            )
        try:
            ports = _wait_listening(out, proc)
            yield ports["http"], ports["dns"], proc.pid
        finally:
            _stop(proc)
            bad = [
                line
                for line in out.read_text(errors="replace").splitlines()
                if "Traceback" in line or '"level":"error"' in line
            ]
            if bad:
                print("edge logged errors:\n  " + "\n  ".join(bad[:10]), file=sys.stderr)


def _wait_listening(out: Path, proc: subprocess.Popen, seconds: float = 20) -> dict[str, int]:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        text = out.read_text(errors="replace")
        if "edge is up" in text:
            ports = {}
            for line in text.splitlines():
                if line.startswith("edge: ") and " listening on " in line:
                    kind = line.split()[1]
                    ports[kind] = int(line.rsplit(":", 1)[1])
            return ports
        if proc.poll() is not None:
            raise RuntimeError("edge exited:\n" + text)
        time.sleep(0.05)
    raise RuntimeError("edge did not come up:\n" + out.read_text(errors="replace"))


# --- the HTTP client --------------------------------------------------------------------------------


def http_latencies(port: int, backend_port: int, count: int, seconds: float) -> tuple[list[float], int]:
    """Up to `count` sequential GETs through edge on `port` to the sandbox's `backend_port`, on one
    keep-alive connection, due evenly spaced over `seconds` (none is due after that); each one's
    latency in seconds from when it was due to its answer, and how many failed. A request unanswered
    after TIMEOUT counts as TIMEOUT and the client reconnects: an edge frozen by the flood (the code
    before the fix) still gets a figure. The whole run lasts `seconds` + 2 * TIMEOUT at most."""
    request = (f"GET / HTTP/1.1\r\nHost: {backend_port}-{SANDBOX}.{DOMAIN}:{port}\r\n\r\n").encode()
    out: list[float] = []
    failed = 0
    s = None
    gap = seconds / count
    start = time.perf_counter()
    try:
        for i in range(count):
            due = start + i * gap
            if due > start + seconds:
                break
            if time.perf_counter() > start + seconds + 2 * TIMEOUT:  # hopeless: count the rest, stop
                late = [time.perf_counter() - (start + j * gap) for j in range(i, count) if j * gap <= seconds]
                out += late
                failed += len(late)
                break
            wait = due - time.perf_counter()
            if wait > 0:
                time.sleep(wait)
            if s is None:
                s = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            try:
                s.sendall(request)
                _read_response(s)
            except (TimeoutError, ConnectionError):
                failed += 1
                s.close()
                s = None
            # From when it was due, not from when it could be sent: a request held up behind a slow
            # one waited too (no coordinated omission).
            out.append(time.perf_counter() - due)
    finally:
        if s is not None:
            s.close()
    return out, failed


def _read_response(s: socket.socket) -> None:
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = s.recv(65536)
        if not chunk:
            raise ConnectionError("edge closed the connection")
        buf += chunk
    head, _, body = buf.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200"):
        raise RuntimeError(f"unexpected answer: {head[:80]!r}")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(body) < length:
        chunk = s.recv(65536)
        if not chunk:
            raise ConnectionError("edge closed the connection mid-body")
        body += chunk


# --- the flooders (run as child processes: `dns_flood.py --role udp|tcp ...`) -----------------------


def flood_udp(port: int, rate: int, seconds: float) -> dict:
    """`rate` packets/s of the worst UDP queries, in turn, spread over SOURCES, for `seconds`."""
    packets = list(fuzz.worst(4096).values())
    socks = []
    for host in SOURCES:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind((host, 0))
        s.setblocking(False)
        socks.append(s)
    sent = received = 0
    start = time.monotonic()
    end = start + seconds
    while (now := time.monotonic()) < end:
        due = int((now - start) * rate) + 1
        while sent < due:
            try:
                socks[sent % len(socks)].sendto(packets[sent % len(packets)], ("127.0.0.1", port))
            except BlockingIOError:
                pass
            sent += 1
        for s in socks:
            try:
                while True:
                    s.recv(65535)
                    received += 1
            except BlockingIOError:
                pass
        time.sleep(0.005)
    for s in socks:
        s.close()
    return {"sent": sent, "received": received}


def flood_tcp(port: int, connections: int, seconds: float, rate: int = 0) -> dict:
    """`connections` connections, each sending the worst 64 KB messages for `seconds`: back to back,
    or `rate` messages/s in all when it is not 0."""
    messages = [len(m).to_bytes(2, "big") + m for m in fuzz.worst(65535).values()]
    totals = {"sent": 0, "received": 0, "closed_by_edge": 0}
    lock = threading.Lock()
    end = time.monotonic() + seconds

    def one() -> None:
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        done = threading.Event()
        got = [0]

        def drain() -> None:
            buf = b""
            s.settimeout(0.5)
            while not (done.is_set() and time.monotonic() > end + 2):
                try:
                    chunk = s.recv(1 << 20)
                except TimeoutError:
                    if done.is_set():
                        return
                    continue
                except OSError:
                    return
                if not chunk:
                    return
                buf += chunk
                while len(buf) >= 2 and len(buf) >= 2 + int.from_bytes(buf[:2], "big"):
                    buf = buf[2 + int.from_bytes(buf[:2], "big") :]
                    got[0] += 1

        reader = threading.Thread(target=drain)
        reader.start()
        sent, closed = 0, 0
        began = time.monotonic()
        try:
            while (now := time.monotonic()) < end:
                if rate and sent >= (now - began) * rate / connections:
                    time.sleep(0.002)
                    continue
                s.sendall(messages[sent % len(messages)])
                sent += 1
        except OSError:
            closed = 1
        done.set()
        reader.join(timeout=5)
        s.close()
        with lock:
            totals["sent"] += sent
            totals["received"] += got[0]
            totals["closed_by_edge"] += closed

    threads = [threading.Thread(target=one) for _ in range(connections)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=seconds + 15)
    return totals


def discard(seconds: float) -> None:
    """The control's target: print a port, then read and drop whatever arrives, for `seconds`."""
    listener = socket.create_server(("127.0.0.1", 0))
    print(listener.getsockname()[1], flush=True)
    listener.settimeout(1.0)
    end = time.monotonic() + seconds

    def drop(conn: socket.socket) -> None:
        conn.settimeout(1.0)
        with conn:
            while time.monotonic() < end:
                try:
                    if not conn.recv(1 << 16):
                        return
                except TimeoutError:
                    continue
                except OSError:
                    return

    while time.monotonic() < end:
        try:
            conn, _ = listener.accept()
        except TimeoutError:
            continue
        threading.Thread(target=drop, args=(conn,), daemon=True).start()


@contextmanager
def flooder(role: str, dns_port: int, args: argparse.Namespace):
    """Run a flooder process on the load core under nice 19; yields a dict filled with its counts."""
    cmd = [
        "taskset",
        "-c",
        LOAD_CPU,
        "nice",
        "-n",
        "19",
        sys.executable,
        __file__,
        "--role",
        role,
        "--dns-port",
        str(dns_port),
        "--seconds",
        str(args.seconds + 1),
        "--rate",
        str(args.rate),
        "--connections",
        str(args.connections),
        "--tcp-rate",
        str(args.tcp_rate),
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, cwd=REPO)
    result: dict = {}
    try:
        time.sleep(0.5)  # under way before the client starts timing
        yield result
        out, _ = proc.communicate(timeout=args.seconds + 30)
        result.update(json.loads(out.strip().splitlines()[-1]))
    finally:
        _stop(proc)


@contextmanager
def discard_server(seconds: float):
    """The control's discard server, on PROXY_CPU (edge's core, where edge would read); yields its port."""
    cmd = ["taskset", "-c", PROXY_CPU, sys.executable, __file__, "--role", "discard", "--seconds", str(seconds)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, cwd=REPO)
    try:
        yield int(proc.stdout.readline())
    finally:
        _stop(proc)


# --- the run -----------------------------------------------------------------------------------------


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def measure(args: argparse.Namespace) -> dict:
    need("taskset")
    runs: list[dict] = []
    with python_server(["bench/sink.py", BACKEND_HOST]) as (backend_port, _):
        with edge(BACKEND_HOST, backend_port, args.rrl_rate) as (http_port, dns_port, pid):
            http_latencies(http_port, backend_port, 200, 0.5)  # warm up: pooled upstream connection, caches
            for run in range(args.runs):
                figures = {}
                for phase in args.phases:
                    cpu0 = _cpu_ticks(pid)
                    t0 = time.monotonic()
                    if phase == "unloaded":
                        (lat, failed), flood = http_latencies(http_port, backend_port, args.requests, args.seconds), {}
                    elif phase == "tcp-control":
                        with discard_server(args.seconds + 5) as port, flooder("tcp", port, args) as flood:
                            lat, failed = http_latencies(http_port, backend_port, args.requests, args.seconds)
                    else:
                        with flooder(phase, dns_port, args) as flood:
                            lat, failed = http_latencies(http_port, backend_port, args.requests, args.seconds)
                    ticks = _cpu_ticks(pid) - cpu0
                    cpu = 100 * ticks / os.sysconf("SC_CLK_TCK") / (time.monotonic() - t0)
                    figures[phase] = {
                        "p50_ms": 1e3 * pct(lat, 0.5),
                        "p99_ms": 1e3 * pct(lat, 0.99),
                        "max_ms": 1e3 * max(lat),
                        "requests": len(lat),
                        "failed": failed,
                        "edge_cpu_pct": cpu,
                        **flood,
                    }
                    print(
                        f"run {run + 1} {phase:11s} {len(lat)} requests ({failed} failed)  "
                        f"p50 {figures[phase]['p50_ms']:.3f} ms  p99 {figures[phase]['p99_ms']:.3f} ms  "
                        f"max {figures[phase]['max_ms']:.1f} ms  edge CPU {cpu:.0f}%  {flood}",
                        file=sys.stderr,
                    )
                base = figures["unloaded"]["p99_ms"]
                for phase in args.phases:
                    figures[phase]["p99_ratio"] = figures[phase]["p99_ms"] / base
                runs.append(figures)
    return {"args": vars(args), "runs": runs}


def table(result: dict) -> str:
    runs = result["runs"]
    a = result["args"]
    lines = [
        f"HTTP latency through `edge serve` while its DNS is flooded ({len(runs)} runs, {a['requests']} "
        f"requests over {a['seconds']} s per phase; udp: {a['rate']}/s; tcp: {a['connections']} connections, "
        f"{str(a['tcp_rate']) + ' messages/s' if a['tcp_rate'] else 'back to back'}; "
        f"rrl_rate {a['rrl_rate'] if a['rrl_rate'] is not None else 'default'}). Medians over runs, min-max of "
        "the p99 ratio.",
        "",
        "| phase | requests (failed) | p50 ms | p99 ms | p99 / unloaded p99 | (min-max) | flood sent "
        "| DNS replies | edge CPU |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for phase in a["phases"]:
        rows = [r[phase] for r in runs]

        def med(key: str, rows: list[dict] = rows) -> float:
            return statistics.median(r.get(key, 0) for r in rows)

        ratios = [r["p99_ratio"] for r in rows]
        lines.append(
            f"| {phase} | {med('requests'):.0f} ({med('failed'):.0f}) | {med('p50_ms'):.3f} | {med('p99_ms'):.3f} | "
            f"{med('p99_ratio'):.2f} | {min(ratios):.2f}-{max(ratios):.2f} | {med('sent'):,.0f} | "
            f"{med('received'):,.0f} | {med('edge_cpu_pct'):.0f}% |"
        )
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--rate", type=int, default=1000, help="UDP packets per second")
    p.add_argument("--connections", type=int, default=4, help="TCP flood connections")
    p.add_argument("--tcp-rate", type=int, default=0, help="TCP messages per second in all (0: back to back)")
    p.add_argument("--requests", type=int, default=2000, help="HTTP requests per phase")
    p.add_argument("--rrl-rate", type=int, default=None, help="dns.rrl_rate for edge (default: edge's)")
    p.add_argument("--phases", default=",".join(PHASES), help=f"comma-separated, from {','.join(PHASES)}")
    p.add_argument("--json", help="also write every figure to this file")
    p.add_argument("--edge-src", help="run edge from this checkout (e.g. a `git archive` of a commit)")
    p.add_argument("--role", choices=("udp", "tcp", "discard"), help=argparse.SUPPRESS)
    p.add_argument("--dns-port", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    if (
        not 0 < args.seconds <= 120
        or not 0 < args.rate <= 100_000
        or not 0 < args.connections <= 64
        or not 0 <= args.tcp_rate <= 100_000
    ):
        sys.exit(
            "dns_flood: keep it bounded: --seconds 0-120, --rate 1-100000, --connections 1-64, --tcp-rate 0-100000"
        )
    if args.role == "udp":
        print(json.dumps(flood_udp(args.dns_port, args.rate, args.seconds)))
        return
    if args.role == "tcp":
        print(json.dumps(flood_tcp(args.dns_port, args.connections, args.seconds, args.tcp_rate)))
        return
    if args.role == "discard":
        discard(args.seconds)
        return
    args.phases = args.phases.split(",")
    if args.phases[0] != "unloaded" or not set(args.phases) <= set(PHASES):
        sys.exit(f"dns_flood: --phases starts with unloaded and names phases from {', '.join(PHASES)}")
    if args.edge_src:
        peers.EDGE_SRC = Path(args.edge_src).resolve()
    result = measure(args)
    print(table(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
