#!/usr/bin/env python3
"""The adversarial suite's long half (issue 12): slowhttptest, a million fuzzed DNS packets, a soak.

    .venv/bin/python bench/adversarial.py                  # everything: ~4 min of attacks, ~3 min of DNS,
                                                           #   a 30-minute soak
    .venv/bin/python bench/adversarial.py --quick          # every part, short (~2 minutes)
    .venv/bin/python bench/adversarial.py --only slow,dns  # some parts; --minutes 10 for a shorter soak

Each part starts its own `edge serve` (HTTP, DNS and admin in one process, as users run it) pinned to
CPU 0, with two sandboxes, each a bench/sandboxd.py on CPU 1 with every client: `bench` on 127.0.0.2
(the probe's and the soak's) and `target` on 127.0.0.3, the one slowhttptest attacks, which runs
under nice 19 beside slowhttptest (as bench/dns_flood.py's flooders do): the attacked sandbox's own
work is not edge's, and the probe, its backend and edge should not queue behind either on two cores.
Everything is loopback, every load is bounded in count and time, every process is stopped at the end.
The quick half (sandbox faults, descriptor exhaustion) is tests/e2e/test_adversarial.py.

1. slow  slowhttptest (Debian's; `apt-get install slowhttptest`) in its three modes, `--connections`
         (1,000) each, opened at `--connect-rate` per second from 127.0.0.1 through edge (`-d`, edge as
         its proxy: the absolute-form target routes like a Host) to sandbox `target`, while a probe on
         127.0.0.9 sends `--probe-rate` sequential keep-alive GETs per second through edge to sandbox
         `bench`, each timed from when it was due (no coordinated omission). Before each attack the
         probe measures the unloaded figure for `--baseline` seconds; the loaded one covers the attack
         from its first connection until slowhttptest ends. `--rounds` (3) rounds of the attacks in
         turn. edge runs with head_timeout `--head-timeout` (10 s, as deployed) and body_idle_timeout,
         send_timeout and keepalive_timeout `--deadline` (10 s; deployed 300, 60 and 60 s). Attacks:
           slowloris       -H: a head that never ends, a field every deadline/2 s: head_timeout
                           answers 408 and closes;
           slow body       -B: POST / with Content-Length 8192, a few bytes every 1.5 deadlines:
                           body_idle_timeout answers 408;
           slow body, held -B, a few bytes every deadline/2 s: no deadline cuts a body that keeps moving
                           (nginx's client_body_timeout is the same kind of deadline); held until
                           slowhttptest stops, and what counts is that the probe does not notice them;
           slow read       -X: GET 128 KiB with a receive window of 1-512 bytes, 32 bytes read a second:
                           the kernel's socket buffers take the whole answer, edge's exchange is done,
                           and keepalive_timeout closes the idle connection;
           slow read, past the buffers: the same with 16 MiB answers, `--big-read-connections` (100) of
                           them: edge's writes stop making progress and send_timeout closes. Each such
                           reader parks ~4 MB of kernel socket buffers on loopback (the 128 KiB case
                           ~0.3 MB): 1,000 of them would pass this machine's tcp_mem.
         Figures: probe p50/p99 unloaded and loaded and the ratio of p99s (the issue's bar: within 2x),
         what slowhttptest saw (connections open at most, closed by the server and when), edge's side
         (client connections held at most and when all were released, from /proc/net/tcp; its
         descriptors before, at most and after from /proc; 4xx answers from the admin API before and
         after the attack, never during: the admin API runs on edge's core), how busy edge's core was
         with edge and with other processes (this machine may be shared), and edge's long scheduler
         rounds (bench/rounds.py: rounds and garbage collections over 1 ms of edge's own CPU time, what
         a request arriving meanwhile waits behind; unlike the probe's wall-clock figures, other
         processes on the core do not inflate them). `--attacks` runs some attacks only. edge's figures
         are its worker's (`edge serve` is a supervisor with one worker).
2. dns   `--dns-packets` (1,000,000) hostile packets (tests/dns/fuzz.py, through bench/dns_bench.py's
         fuzz_run: paced at `--dns-rate` per second so that the kernel drops none, replies counted
         against what the pure functions say) at edge serve's DNS, then 10 queries a resolver relies on
         over UDP and TCP (dnspython); the process must be alive, answer all 10 correctly, have logged
         no traceback. Rate limiting stays on with its rate above the load, as bench/dns_bench.py. The
         kernel's UDP receive-buffer drops (/proc/net/snmp, machine-wide) are counted beside: a packet
         dropped there never reached edge.
3. soak  `--minutes` (30) of mixed traffic through one edge: small GETs on keep-alive connections
         (~200/s), a new connection per GET (~20/s), 4 server-sent-event streams at a time, 2 WebSocket
         echo sessions, 4 MiB uploads and 4 MiB downloads one after another; every answer checked.
         edge's RSS and open descriptors are sampled every `--sample` (10) s: first, last, max, and the
         least-squares slope after the first fifth of the run (warm-up), per minute and over the run.

Results: bench/results/adversarial.json and adversarial.md (`--quick`: bench/results/quick/).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench import dns_bench, rounds  # noqa: E402
from bench.peers import LOAD_CPU, PROXY_CPU, CoreWatch, _edge_env, _stop, children, toml  # noqa: E402
from tests.proc import listening  # noqa: E402

RESULTS = REPO / "bench" / "results"
DOMAIN = "sandbox.localhost"
#: The sandboxes: `bench` (the probe's and the soak's, a normal process) and `target` (what slowhttptest
#: attacks, under nice 19 beside the attacker: its work is the attacked sandbox's, not edge's).
SANDBOXES = {"bench": "127.0.0.2", "target": "127.0.0.3"}
PROBE_SOURCE = "127.0.0.9"
MiB = 1 << 20
#: A request the probe waits for longer than this counts as failed (and as this long).
PROBE_TIMEOUT = 5.0


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# --- the processes ------------------------------------------------------------------------------------


@contextmanager
def sandboxd(host: str, nice: int = 0) -> Iterator[int]:
    """bench/sandboxd.py on `host`, pinned to the load core; yields its port."""
    proc = subprocess.Popen(
        [
            "taskset",
            "-c",
            LOAD_CPU,
            "nice",
            "-n",
            str(nice),
            sys.executable,
            "bench/sandboxd.py",
            "--hosts",
            host,
            "--ports",
            "0",
        ],  # fmt: skip
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        line = proc.stdout.readline()
        m = re.search(r"port (\d+)", line)
        if not m:
            raise RuntimeError(f"sandboxd printed {line!r}")
        yield int(m.group(1))
    finally:
        _stop(proc)


@dataclass
class Edge:
    proc: subprocess.Popen
    state: Path
    log: Path
    ports: dict[str, int]
    backends: dict[str, int]  # sandbox -> its port
    rounds_log: Path  # edge's scheduler rounds longer than bench/rounds.py's LONG_MS of CPU

    def rounds(self, t0: float, t1: float) -> dict:
        """edge's long scheduler rounds in [t0, t1) (time.monotonic()), in CPU ms: bench/rounds.py."""
        return rounds.long_rounds(str(self.rounds_log), t0, t1)

    @property
    def pid(self) -> int:
        """The process that holds the connections: `edge serve` is a supervisor that starts one worker
        (the default --workers 1); an edge without a supervisor holds them itself."""
        kids = children(self.proc.pid)
        return kids[0] if kids else self.proc.pid

    @property
    def host(self) -> str:
        """The Host of sandbox `bench`."""
        return f"{self.backends['bench']}-bench.{DOMAIN}"

    @property
    def target_host(self) -> str:
        """The Host of sandbox `target`, the one slowhttptest attacks."""
        return f"{self.backends['target']}-target.{DOMAIN}"

    def rss_kib(self) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return 0

    def fds(self) -> int:
        return len(os.listdir(f"/proc/{self.pid}/fd"))

    def client_connections(self) -> int:
        """Client connections edge holds open (ESTABLISHED or CLOSE_WAIT on its HTTP port), from
        /proc/net/tcp: asking the admin API would cost edge's core the time the probe measures."""
        port = f":{self.ports['http']:04X}"
        count = 0
        with open("/proc/net/tcp") as f:
            next(f)
            for line in f:
                _, local, _, state = line.split(None, 4)[:4]
                count += local.endswith(port) and state in ("01", "08")
        return count

    def metrics(self) -> dict[str, float]:
        """The admin /metrics page as {'name{labels}': value}; {} when the admin API does not answer."""
        token = (self.state / "admin-token").read_text().strip()
        try:
            with socket.create_connection(("127.0.0.1", self.ports["admin"]), timeout=5) as s:
                s.sendall(
                    f"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n"
                    "Connection: close\r\n\r\n".encode()
                )
                data = b""
                while chunk := s.recv(65536):
                    data += chunk
        except OSError:
            return {}
        out = {}
        for line in data.partition(b"\r\n\r\n")[2].decode(errors="replace").splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                try:
                    out[name] = float(value)
                except ValueError:
                    pass
        return out

    def log_problems(self) -> dict[str, int]:
        text = self.log.read_text(errors="replace")
        return {"tracebacks": text.count("Traceback"), "errors": text.count('"level":"error"')}


@contextmanager
def edge_serve(backends: dict[str, int], config: dict) -> Iterator[Edge]:
    """`edge serve` pinned to the proxy core, with the SANDBOXES and `config` as its file."""
    with tempfile.TemporaryDirectory(prefix="edge-adversarial-") as d:
        state = Path(d)
        env = _edge_env({"EDGE_STATE_DIR": d})
        for name, address in SANDBOXES.items():
            subprocess.run(
                [sys.executable, "-m", "edge", "sandbox", "add", name, "--address", address, "--no-wait"],
                env=env,
                check=True,
                capture_output=True,
                cwd=REPO,
                timeout=60,
            )
        (state / "edge.toml").write_text(toml(config))
        log = state / "edge.out"
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                ["taskset", "-c", PROXY_CPU, sys.executable, "-m", "edge", "serve", "--http", "127.0.0.1:0",
                 "--dns", "127.0.0.1:0", "--admin", "127.0.0.1:0", "--no-access-log",
                 "--config", str(state / "edge.toml")],
                # bench/rounds.py logs edge's long scheduler rounds, in the supervisor and its worker
                env={**env, "PYTHONPATH": f"{REPO / 'bench' / 'roundhook'}:{env['PYTHONPATH']}",
                     "BENCH_ROUNDS_LOG": str(state / "rounds.log")},
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=REPO,
            )  # fmt: skip
        try:
            deadline = time.monotonic() + 30
            while "edge is up" not in log.read_text(errors="replace"):
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("edge did not come up:\n" + log.read_text(errors="replace"))
                time.sleep(0.05)
            ports = {}
            for line in log.read_text(errors="replace").splitlines():
                if found := listening(line):
                    ports[found[0]] = int(found[1].rsplit(":", 1)[1])
            yield Edge(proc, state, log, ports, backends, state / "rounds.log")
        finally:
            _stop(proc)


# --- the latency probe ----------------------------------------------------------------------------------


class Probe:
    """Sequential keep-alive GETs through edge from PROBE_SOURCE, `rate` per second, in a thread.

    Each is timed from when it was due, so a stall shows as the latency of every request it delayed
    (no coordinated omission). `window(t0, t1)` gives the latencies of those due in [t0, t1)."""

    def __init__(self, edge: Edge, rate: float) -> None:
        self.edge = edge
        self.gap = 1.0 / rate
        self.samples: list[tuple[float, float, bool]] = []  # (due, seconds, ok)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Probe:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=PROBE_TIMEOUT + 2)

    def _connect(self) -> socket.socket:
        s = socket.socket()
        s.bind((PROBE_SOURCE, 0))
        s.settimeout(PROBE_TIMEOUT)
        s.connect(("127.0.0.1", self.edge.ports["http"]))
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return s

    def _run(self) -> None:
        request = f"GET / HTTP/1.1\r\nHost: {self.edge.host}\r\n\r\n".encode()
        sock: socket.socket | None = None
        due = time.monotonic()
        while not self._stop.is_set():
            wait = due - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            ok = False
            try:
                if sock is None:
                    sock = self._connect()
                sock.sendall(request)
                buf = b""
                while b"\r\n\r\n" not in buf or not buf.endswith(b"hello from the sandbox\n"):
                    chunk = sock.recv(65536)
                    if not chunk:
                        raise ConnectionError("closed")
                    buf += chunk
                    if time.monotonic() - due > PROBE_TIMEOUT:
                        raise TimeoutError
                ok = buf.startswith(b"HTTP/1.1 200")
            except OSError:
                if sock is not None:
                    sock.close()
                sock = None
            took = min(time.monotonic() - due, PROBE_TIMEOUT)
            self.samples.append((due, took, ok))
            due += self.gap
            if due < time.monotonic() - PROBE_TIMEOUT:  # hopelessly behind (a stall): skip, counted as it was
                due = time.monotonic()
        if sock is not None:
            sock.close()

    def worst_seconds(self, t0: float, t1: float, count: int = 3) -> list[tuple[int, float]]:
        """The `count` seconds of [t0, t1) whose requests waited longest: (second from t0, worst ms)."""
        worst: dict[int, float] = {}
        for due, s, _ in list(self.samples):
            if t0 <= due < t1:
                k = int(due - t0)
                worst[k] = max(worst.get(k, 0.0), s * 1000)
        return sorted(((k, round(v, 1)) for k, v in worst.items()), key=lambda kv: -kv[1])[:count]

    def window(self, t0: float, t1: float) -> dict:
        got = [(s, ok) for due, s, ok in list(self.samples) if t0 <= due < t1]
        lat = sorted(s * 1000 for s, _ in got)
        if not lat:
            return {"requests": 0}
        return {
            "requests": len(lat),
            "failed": sum(1 for _, ok in got if not ok),
            "p50_ms": round(pct(lat, 50), 3),
            "p99_ms": round(pct(lat, 99), 3),
            "max_ms": round(lat[-1], 3),
        }


def pct(sorted_values: list[float], p: float) -> float:
    k = min(len(sorted_values) - 1, max(0, round(p / 100 * len(sorted_values) + 0.5) - 1))
    return sorted_values[k]


# --- 1. slowhttptest ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Attack:
    name: str
    flags: tuple[str, ...]
    path: str
    connections: int
    deadline: str  # the config key expected to close the connections, or "" when none should
    note: str


def attacks(a: argparse.Namespace) -> list[Attack]:
    n, interval = a.connections, max(1, round(a.deadline / 2))
    return [
        Attack("slowloris", ("-H", "-i", str(interval), "-x", "24"), "/", n, "head_timeout",
               f"a request head that never ends, one more field every {interval} s"),
        Attack("slow body", ("-B", "-i", str(round(a.deadline * 1.5)), "-s", "8192", "-x", "24"), "/", n,
               "body_idle_timeout", f"POST, Content-Length 8192, a few bytes every {round(a.deadline * 1.5)} s"),
        Attack("slow body, held", ("-B", "-i", str(interval), "-s", "8192", "-x", "24"), "/", n, "",
               f"POST, Content-Length 8192, a few bytes every {interval} s: a body that keeps moving, no deadline "
               "applies"),
        Attack("slow read", (*SLOW_READ, "-k", "1"), f"/bytes?n={128 * 1024}", n, "keepalive_timeout",
               "GET 128 KiB, window 1-512 bytes, 32 bytes read a second: the kernel's socket buffers take the "
               "whole answer, so for edge the exchange is done and the connection idle"),
        Attack("slow read, past the buffers", (*SLOW_READ, "-k", "1"), f"/bytes?n={16 * MiB}",
               a.big_read_connections, "send_timeout",
               "GET 16 MiB, window 1-512 bytes, 32 bytes read a second: edge's writes stop making progress"),
    ]  # fmt: skip


SLOW_READ = ("-X", "-w", "1", "-y", "512", "-n", "1", "-z", "32")


def slowhttptest(a: argparse.Namespace, edge: Edge, probe: Probe, attack: Attack, workdir: Path) -> dict:
    """One attack: the unloaded probe figure, then the attack with the probe running, then its figures."""
    t0 = time.monotonic()
    watch = CoreWatch(edge.pid)
    time.sleep(a.baseline)
    unloaded = {**probe.window(t0, time.monotonic()), **_core(watch), **edge.rounds(t0, time.monotonic())}
    before = {"fds": edge.fds(), "metrics": edge.metrics()}
    idle_connections = edge.client_connections()  # the probe's
    prefix = workdir / re.sub(r"\W+", "-", attack.name)
    cmd = ["taskset", "-c", LOAD_CPU, "nice", "-n", "19", "slowhttptest", *attack.flags, "-c", str(attack.connections),
           "-r", str(a.connect_rate), "-l", str(a.attack_seconds), "-p", "3",
           "-d", f"127.0.0.1:{edge.ports['http']}", "-u", f"http://{edge.target_host}{attack.path}",
           "-g", "-o", str(prefix)]  # fmt: skip
    started = time.monotonic()
    watch = CoreWatch(edge.pid)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=workdir)
    timeline: list[tuple[float, float, int]] = []  # (seconds, edge's active connections, its descriptors)
    stop_by = started + a.attack_seconds + 60
    while time.monotonic() < stop_by:
        timeline.append((time.monotonic() - started, edge.client_connections(), edge.fds()))
        if proc.poll() is not None:  # after slowhttptest, until edge holds nothing of it (3 s at most)
            stop_by = min(stop_by, time.monotonic() + 3)
            if timeline[-1][1] <= idle_connections:
                break
        time.sleep(0.5)
    if proc.poll() is None:
        proc.kill()
    out = re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", proc.communicate()[0])
    ended = time.monotonic()
    loaded = {
        **probe.window(started, ended),
        **_core(watch),
        "worst_seconds": probe.worst_seconds(started, ended),
        **edge.rounds(started, ended),
    }
    time.sleep(1.0)
    after = {"fds": edge.fds(), "metrics": edge.metrics()}
    rows = _csv(prefix.with_suffix(".csv"))
    status = re.search(r"Exit status:\s*(.*)", out)
    status_text = status.group(1).strip() if status else out[-300:]
    ended_at = re.search(r"Test ended on (\d+)", out)
    most = max((r.get("Connected", 0) for r in rows), default=0)
    # slowhttptest stops when the server has closed every connection, before it writes that last row
    if status_text.startswith("No open connections left"):
        closed, all_closed_at = attack.connections, int(ended_at.group(1)) if ended_at else None
    else:
        closed, all_closed_at = (rows[-1].get("Closed", 0) if rows else 0), None
    peak = max((c for _, c, _ in timeline), default=0)
    peak_at = next((t for t, c, _ in timeline if c == peak), 0.0)
    # edge's side: when its count of open client connections was back to the probe's alone
    released = next((t for t, c, _ in timeline if t > peak_at and c <= idle_connections), None)

    def delta(key: str) -> float:
        return after["metrics"].get(key, 0) - before["metrics"].get(key, 0)

    result = {
        "attack": attack.name,
        "what": attack.note,
        "deadline": attack.deadline,
        "command": " ".join(cmd[cmd.index("slowhttptest") :]),
        "unloaded": unloaded,
        "loaded": loaded,
        "p99_ratio": round(loaded["p99_ms"] / unloaded["p99_ms"], 2) if unloaded.get("p99_ms") else None,
        "connections": attack.connections,
        "connected_at_most": most,
        "closed_by_server": closed,
        "all_closed_after_s": all_closed_at,
        "slowhttptest_exit": status_text,
        "edge_4xx": delta('edge_http_requests_total{class="4xx"}'),
        "edge_open_connections_max": peak - idle_connections,
        "edge_released_after_s": round(released, 1) if released is not None else None,
        "edge_fds": {"before": before["fds"], "max": max((f for *_, f in timeline), default=0),
                     "after": after["fds"]},
        # edge's CPU beyond what it spent unloaded (the probe's traffic), over the attack: robust to a
        # shared machine, since it counts edge's own time only
        "attack_cpu_s": round(max(0.0, loaded["edge_cpu_pct"] - unloaded["edge_cpu_pct"]) / 100 * (ended - started), 2),
        "seconds": round(ended - started, 1),
    }  # fmt: skip
    say(
        f"  {attack.name:28} p99 {unloaded.get('p99_ms')} -> {loaded.get('p99_ms')} ms (x{result['p99_ratio']}), "
        f"connected {most}, closed by edge {closed}{f' by {all_closed_at} s' if all_closed_at is not None else ''}, "
        f"edge: 4xx {result['edge_4xx']:.0f}, held {result['edge_open_connections_max']:.0f}, released after "
        f"{result['edge_released_after_s']} s, fds {result['edge_fds']}, probe failed {loaded.get('failed')}, "
        f"edge core: edge {unloaded['edge_cpu_pct']:.0f}% -> {loaded['edge_cpu_pct']:.0f}%, others "
        f"{unloaded['others_cpu_pct']:.0f}% -> {loaded['others_cpu_pct']:.0f}%, edge rounds over 2 / 5 ms of CPU "
        f"{loaded['rounds_over_2ms']} / {loaded['rounds_over_5ms']}, longest {loaded['longest_round_ms']} ms"
    )
    return result


def _core(watch: CoreWatch) -> dict:
    """edge's share of its core, and other processes' (this machine may be shared), in %."""
    got = watch.stop()
    return {"edge_cpu_pct": round(got.get("proxy_cpu_pct", 0), 1),
            "others_cpu_pct": round(got.get("others_cpu_pct", 0), 1)}  # fmt: skip


def _csv(path: Path) -> list[dict[str, int]]:
    if not path.exists():
        return []
    with open(path, newline="") as f:
        return [{k: int(v) for k, v in row.items() if v and v.strip().isdigit()} for row in csv.DictReader(f)]


def part_slow(a: argparse.Namespace, backends: dict[str, int]) -> dict:
    if not shutil.which("slowhttptest"):
        sys.exit("bench/adversarial.py: slowhttptest missing (apt-get install slowhttptest, or make bench-deps)")
    http = {"head_timeout": a.head_timeout, "body_idle_timeout": a.deadline, "send_timeout": a.deadline,
            "keepalive_timeout": a.deadline}  # fmt: skip
    runs: dict[str, list[dict]] = {}
    with edge_serve(backends, {"http": http}) as edge, Probe(edge, a.probe_rate) as probe:
        with tempfile.TemporaryDirectory(prefix="slowhttptest-") as d:
            time.sleep(1.0)  # warm-up: imports, the pooled sandbox connection
            for i in range(a.rounds):
                say(f" round {i + 1}/{a.rounds}")
                for attack in attacks(a):
                    if a.attacks and attack.name.replace(",", "") not in a.attacks:
                        continue
                    runs.setdefault(attack.name, []).append(slowhttptest(a, edge, probe, attack, Path(d)))
        problems = edge.log_problems()
        alive = edge.proc.poll() is None
    return {
        "config": {"http": http},
        "deployed": {"head_timeout": 10.0, "body_idle_timeout": 300.0, "send_timeout": 60.0, "keepalive_timeout": 60.0},
        "rounds": a.rounds,
        "attacks": runs,
        "edge_alive": alive,
        "edge_log": problems,
    }


# --- 2. a million fuzzed DNS packets ----------------------------------------------------------------------


def part_dns(a: argparse.Namespace, backends: dict[str, int]) -> dict:
    config = {"dns": {"rrl_rate": 1_000_000_000, "rrl_exempt": []}}
    with edge_serve(backends, config) as edge:
        port = edge.ports["dns"]
        before_checks = dns_bench.correctness_checks(port)
        rss0, fds0 = edge.rss_kib(), edge.fds()
        say(f"  {a.dns_packets:,} packets at {a.dns_rate:,.0f}/s ...")
        drops = _udp_drops()
        fuzz = dns_bench.fuzz_run(port, a.dns_packets, a.dns_rate)
        drops = _udp_drops() - drops
        alive = edge.proc.poll() is None
        checks = dns_bench.correctness_checks(port) if alive else {}
        result = {
            "packets": fuzz["packets"],
            "seconds": fuzz["seconds"],
            "packets_per_s": round(fuzz["packets"] / fuzz["seconds"]),
            "replies": fuzz["replies"],
            "replies_expected": fuzz["replies_expected"],
            "udp_receive_buffer_drops": drops,
            "alive": alive,
            "checks_before": sum(before_checks.values()),
            "checks_after": sum(checks.values()),
            "checks_total": len(before_checks),
            "failed_checks": [k for k, ok in checks.items() if not ok],
            "rss_kib": {"before": rss0, "after": edge.rss_kib() if alive else None},
            "fds": {"before": fds0, "after": edge.fds() if alive else None},
            "edge_log": edge.log_problems(),
            "malformed_warnings": edge.log.read_text(errors="replace").count("malformed DNS packet"),
        }
    say(
        f"  {result['packets']:,} packets in {result['seconds']} s ({result['packets_per_s']:,}/s), replies "
        f"{result['replies']:,} of {result['replies_expected']:,} expected, alive {alive}, checks "
        f"{result['checks_after']}/{result['checks_total']}, tracebacks {result['edge_log']['tracebacks']}"
    )
    return result


def _udp_drops() -> int:
    """UDP datagrams the kernel dropped for want of receive buffer, machine-wide, since boot."""
    lines = [ln.split() for ln in Path("/proc/net/snmp").read_text().splitlines() if ln.startswith("Udp:")]
    return int(dict(zip(lines[0], lines[1], strict=True))["RcvbufErrors"])


# --- 3. the soak ------------------------------------------------------------------------------------------


@dataclass
class Tally:
    ok: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)

    def bad(self, why: str) -> None:
        self.failed += 1
        if len(self.errors) < 5:
            self.errors.append(why)


class Soak:
    """Mixed traffic through `edge` until `stop` is set, one thread per kind (see the module docstring)."""

    def __init__(self, edge: Edge) -> None:
        self.edge = edge
        self.stop = threading.Event()
        self.tally: dict[str, Tally] = {}
        self.threads: list[threading.Thread] = []

    def start(self) -> None:
        kinds: list[tuple[str, Callable[[Tally], None], int]] = [
            ("keep-alive GET", self._keepalive, 2),
            ("new connection GET", self._fresh, 1),
            ("server-sent events", self._sse, 4),
            ("WebSocket echo", self._websocket, 2),
            ("upload 4 MiB", self._upload, 1),
            ("download 4 MiB", self._download, 1),
        ]
        for name, fn, count in kinds:
            tally = self.tally.setdefault(name, Tally())
            for _ in range(count):
                t = threading.Thread(target=self._loop, args=(fn, tally), daemon=True)
                t.start()
                self.threads.append(t)

    def finish(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=40)

    def _loop(self, fn: Callable[[Tally], None], tally: Tally) -> None:
        while not self.stop.is_set():
            try:
                fn(tally)
            except (OSError, ValueError, RuntimeError) as exc:
                tally.bad(f"{type(exc).__name__}: {exc}")
                self.stop.wait(0.5)

    def _connect(self) -> socket.socket:
        s = socket.create_connection(("127.0.0.1", self.edge.ports["http"]), timeout=30)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return s

    def _request(self, s: socket.socket, reader, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
        length = f"Content-Length: {len(body)}\r\n" if method == "POST" else ""
        s.sendall(f"{method} {path} HTTP/1.1\r\nHost: {self.edge.host}\r\n{length}\r\n".encode())
        if body:
            s.sendall(body)
        status, fields = reader.head()
        _, data = reader.body(fields, keep=True)
        return status, data

    def _keepalive(self, tally: Tally) -> None:
        """100 GETs a second on one connection; a new connection every 1,000."""
        from bench.clients import Reader

        with self._connect() as s:
            r = Reader(s)
            for _ in range(1000):
                if self.stop.is_set():
                    return
                status, data = self._request(s, r, "GET", "/")
                if status == 200 and data == b"hello from the sandbox\n":
                    tally.ok += 1
                else:
                    tally.bad(f"status {status}")
                self.stop.wait(0.01)

    def _fresh(self, tally: Tally) -> None:
        from bench.clients import Reader

        with self._connect() as s:
            s.sendall(f"GET / HTTP/1.1\r\nHost: {self.edge.host}\r\nConnection: close\r\n\r\n".encode())
            r = Reader(s)
            status, fields = r.head()
            _, data = r.body(fields, keep=True)
            if status == 200 and data == b"hello from the sandbox\n":
                tally.ok += 1
            else:
                tally.bad(f"status {status}")
        self.stop.wait(0.05)

    def _sse(self, tally: Tally) -> None:
        """20 events 0.25 s apart (5 s), each checked, on a new connection."""
        from bench.clients import Reader

        with self._connect() as s:
            status, data = self._request(s, Reader(s), "GET", "/sse?n=20&gap=0.25")
            expected = b"".join(b"id: %d\ndata: event %d\n\n" % (i, i) for i in range(20))
            if status == 200 and data == expected:
                tally.ok += 1
            else:
                tally.bad(f"status {status}, {len(data)} bytes")

    def _websocket(self, tally: Tally) -> None:
        """A session of 30 s: a 64-byte message every 20 ms, each echo checked; then a clean close."""
        from bench.clients import ws_open

        s = ws_open(self.edge.ports["http"], self.edge.host, "/ws")
        try:
            s.settimeout(10)
            end = time.monotonic() + 30
            n = 0
            while time.monotonic() < end and not self.stop.is_set():
                payload = b"%08d" % n + b"m" * 56
                s.sendall(_ws_frame(0x2, payload))
                got = _ws_read(s)
                if got == payload:
                    tally.ok += 1
                else:
                    tally.bad(f"echo {got[:16]!r} for {payload[:16]!r}")
                    return
                n += 1
                self.stop.wait(0.02)
            s.sendall(_ws_frame(0x8, b"\x03\xe8"))
        finally:
            s.close()

    def _upload(self, tally: Tally) -> None:
        from bench.clients import Reader

        body = b"u" * (4 * MiB)
        with self._connect() as s:
            r = Reader(s)
            for _ in range(10):
                if self.stop.is_set():
                    return
                status, data = self._request(s, r, "POST", "/upload", body)
                if status == 200 and int(data) == len(body):
                    tally.ok += 1
                else:
                    tally.bad(f"status {status}, {data[:20]!r}")
                self.stop.wait(0.5)

    def _download(self, tally: Tally) -> None:
        from bench.clients import Reader

        with self._connect() as s:
            r = Reader(s)
            for _ in range(10):
                if self.stop.is_set():
                    return
                s.sendall(f"GET /bytes?n={4 * MiB} HTTP/1.1\r\nHost: {self.edge.host}\r\n\r\n".encode())
                status, fields = r.head()
                n, _ = r.body(fields)
                if status == 200 and n == 4 * MiB:
                    tally.ok += 1
                else:
                    tally.bad(f"status {status}, {n} bytes")
                self.stop.wait(0.5)


def _ws_frame(opcode: int, payload: bytes, mask: bytes = b"\x1f\x2e\x3d\x4c") -> bytes:
    """One masked client frame, payload under 126 bytes."""
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bytes((0x80 | opcode, 0x80 | len(payload))) + mask + masked


def _ws_read(s: socket.socket) -> bytes:
    """One unmasked server frame's payload (under 126 bytes)."""
    head = _exactly(s, 2)
    return _exactly(s, head[1] & 0x7F)


def _exactly(s: socket.socket, n: int) -> bytes:
    out = b""
    while len(out) < n:
        chunk = s.recv(n - len(out))
        if not chunk:
            raise ConnectionError("closed mid-frame")
        out += chunk
    return out


def slope_per_minute(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, value), per minute."""
    if len(points) < 2:
        return 0.0
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    var = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in points) / var * 60 if var else 0.0


def part_soak(a: argparse.Namespace, backends: dict[str, int]) -> dict:
    samples: list[dict] = []
    with edge_serve(backends, {}) as edge:
        soak = Soak(edge)
        t0 = time.monotonic()
        soak.start()
        end = t0 + a.minutes * 60
        next_sample = t0
        while True:
            now = time.monotonic()
            if now >= next_sample:
                m = edge.metrics()
                samples.append({
                    "t": round(now - t0, 1), "rss_kib": edge.rss_kib(), "fds": edge.fds(),
                    "active_connections": m.get("edge_http_active_connections"),
                    "active_tunnels": m.get("edge_http_active_tunnels"),
                })  # fmt: skip
                s = samples[-1]
                say(f"  soak {s['t']:7.0f} s  RSS {s['rss_kib']:,} KiB  fds {s['fds']}  "
                    f"connections {s['active_connections']}  tunnels {s['active_tunnels']}")  # fmt: skip
                next_sample += a.sample
            if now >= end:
                break
            time.sleep(min(next_sample, end) - now)
        soak.finish()
        alive = edge.proc.poll() is None
        after = {"rss_kib": edge.rss_kib(), "fds": edge.fds()}
        problems = edge.log_problems()
        requests = edge.metrics()
    warm = a.minutes * 60 / 5
    steady = [s for s in samples if s["t"] >= warm]

    def figure(key: str) -> dict:
        values = [s[key] for s in samples]
        return {
            "first": values[0],
            "last": values[-1],
            "max": max(values),
            "min": min(values),
            "slope_per_min": round(slope_per_minute([(s["t"], s[key]) for s in steady]), 2),
            "first_after_warmup": steady[0][key] if steady else None,
        }

    return {
        "minutes": a.minutes,
        "sample_s": a.sample,
        "warmup_s": warm,
        "rss_kib": figure("rss_kib"),
        "fds": figure("fds"),
        "after_traffic": after,
        "traffic": {k: {"ok": t.ok, "failed": t.failed, "errors": t.errors} for k, t in soak.tally.items()},
        "edge_requests": {k: v for k, v in requests.items() if k.startswith("edge_http_requests_total")},
        "edge_alive": alive,
        "edge_log": problems,
        "samples": samples,
    }


# --- the report -------------------------------------------------------------------------------------------


def markdown(doc: dict) -> str:
    lines = [
        "# Adversarial suite (issue 12)",
        "",
        f"From bench/adversarial.py. {doc['machine']}. edge on CPU {PROXY_CPU}; slowhttptest, the probe, the "
        f"clients and bench/sandboxd.py on CPU {LOAD_CPU}.",
        "",
    ]

    def ran(part: dict) -> str:
        r = part.get("run", {})
        command = " ".join(["bench/adversarial.py", r.get("argv", "")]).strip()
        return (f"Run: `{command}`, {r.get('time')}, commit {r.get('commit')}; load average before / after: "
                f"{r.get('load_before')} / {r.get('load_after')}.")  # fmt: skip

    slow = doc.get("slow")
    if slow:
        cfg, dep = slow["config"]["http"], slow["deployed"]
        lines += [
            "## slowhttptest",
            "",
            ran(slow),
            "",
            f"edge with head_timeout {cfg['head_timeout']:g} s (deployed {dep['head_timeout']:g} s), "
            f"body_idle_timeout {cfg['body_idle_timeout']:g} s (deployed {dep['body_idle_timeout']:g} s), "
            f"send_timeout {cfg['send_timeout']:g} s (deployed {dep['send_timeout']:g} s) and keepalive_timeout "
            f"{cfg['keepalive_timeout']:g} s (deployed {dep['keepalive_timeout']:g} s), shorter to keep the run "
            "bounded; default connection caps. The probe: sequential keep-alive GETs from 127.0.0.9 through edge, "
            "timed from when each was due; unloaded over the seconds just before each attack, loaded over the "
            f"whole attack. {slow['rounds']} round{'s' if slow['rounds'] != 1 else ''}, the attacks in turn; "
            'medians over rounds (the ratio: median, min-max). "closed by edge" is what slowhttptest saw; a slow '
            "reader cannot see a close queued behind the data it has not read, so edge's side is given too (its "
            "client connections, from /proc/net/tcp).",
            "",
            "| attack | connections | probe p50 ms, unloaded / loaded | probe p99 ms, unloaded / loaded | p99 "
            "ratio | probe failed | closed by edge (slowhttptest) | edge held at most | edge released all after "
            "| edge 4xx | edge descriptors before / max / after | edge's core: edge %, others %, unloaded / "
            "loaded | edge CPU for the attack, ms per connection | edge's rounds over 2 / 5 ms of CPU, loaded; "
            "the longest round, and the longest garbage collection in it, ms |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for name, runs in slow["attacks"].items():

            def m(*keys: str, runs: list[dict] = runs) -> float | None:
                """The median over rounds of the figure at `keys` (None where a round has none)."""
                values = []
                for run in runs:
                    v = run
                    for k in keys:
                        v = v.get(k) if isinstance(v, dict) else None
                    if v is not None:
                        values.append(v)
                return statistics.median(values) if values else None

            ratios = [r["p99_ratio"] for r in runs if r["p99_ratio"] is not None]
            when, released = m("all_closed_after_s"), m("edge_released_after_s")
            closed = f"{min(r['closed_by_server'] for r in runs):,}" + (f" by {when:g} s" if when is not None else "")
            cells = [
                name,
                f"{runs[0]['connections']:,}",
                f"{m('unloaded', 'p50_ms'):.2f} / {m('loaded', 'p50_ms'):.2f}",
                f"{m('unloaded', 'p99_ms'):.2f} / {m('loaded', 'p99_ms'):.2f}",
                f"{statistics.median(ratios):.2f} ({min(ratios):.2f}-{max(ratios):.2f})",
                str(sum(r["loaded"]["failed"] for r in runs)),
                closed,
                f"{m('edge_open_connections_max'):,.0f}",
                f"{released:g} s" if released is not None else "no",
                f"{m('edge_4xx'):,.0f}",
                f"{m('edge_fds', 'before'):.0f} / {m('edge_fds', 'max'):.0f} / {m('edge_fds', 'after'):.0f}",
                f"{m('unloaded', 'edge_cpu_pct'):.0f} / {m('loaded', 'edge_cpu_pct'):.0f}, "
                f"{m('unloaded', 'others_cpu_pct'):.0f} / {m('loaded', 'others_cpu_pct'):.0f}",
                f"{m('attack_cpu_s') * 1000 / runs[0]['connections']:.2f}",
                f"{m('loaded', 'rounds_over_2ms'):.0f} / {m('loaded', 'rounds_over_5ms'):.0f}; "
                f"{m('loaded', 'longest_round_ms'):.1f}, {m('loaded', 'longest_gc_ms') or 0:.1f}"
                if m("loaded", "longest_round_ms") is not None
                else "-",
            ]
            lines.append("| " + " | ".join(cells) + " |")
        lines += [""]
        for name, runs in slow["attacks"].items():
            exits = sorted({r["slowhttptest_exit"] for r in runs})
            command = re.sub(r"-d \S+", "-d 127.0.0.1:<edge>", runs[0]["command"])
            command = re.sub(r"http://\d+-", "http://<port>-", re.sub(r" -o \S+", " -o <prefix>", command))
            lines.append(f"- {name}: {runs[0]['what']}. `{command}`; it ended with: {'; '.join(exits)}.")
        lines += [
            "- Where the loaded p99 comes from, the seconds of each attack (counted from its start) whose probe "
            "requests waited longest, worst ms, per round: "
            + "; ".join(
                f"{name}: "
                + " / ".join(", ".join(f"{k} s {v:g}" for k, v in r["loaded"].get("worst_seconds", [])) for r in runs)
                for name, runs in slow["attacks"].items()
            )
            + ".",
            f"- edge alive after every attack: {slow['edge_alive']}; tracebacks logged: "
            f"{slow['edge_log']['tracebacks']}; error lines: {slow['edge_log']['errors']}.",
            "",
        ]
    d = doc.get("dns")
    if d:
        lines += [
            f"## {d['packets']:,} fuzzed DNS packets",
            "",
            ran(d),
            "",
            "| packets | seconds | packets/s | replies / expected | kernel UDP buffer drops | alive | correct answers "
            "after (UDP + TCP) | RSS KiB before / after | descriptors before / after | tracebacks |",
            "|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|",
            f"| {d['packets']:,} | {d['seconds']} | {d['packets_per_s']:,} | {d['replies']:,} / "
            f"{d['replies_expected']:,} | {d['udp_receive_buffer_drops']:,} | {'yes' if d['alive'] else 'NO'} | "
            f"{d['checks_after']} / {d['checks_total']} "
            f"| {d['rss_kib']['before']:,} / {d['rss_kib']['after'] or 0:,} | {d['fds']['before']} / "
            f"{d['fds']['after']} | {d['edge_log']['tracebacks']} |",
            "",
        ]
        if d["failed_checks"]:
            lines += [f"Failed checks: {', '.join(d['failed_checks'])}.", ""]
    s = doc.get("soak")
    if s:
        lines += [
            f"## Soak: {s['minutes']:g} minute{'s' if s['minutes'] != 1 else ''} of mixed traffic",
            "",
            ran(s),
            "",
            f"Sampled every {s['sample_s']:g} s; slope by least squares over the samples after the first "
            f"{s['warmup_s']:.0f} s (warm-up).",
            "",
            "| figure | first | first after warm-up | last | min | max | slope per minute | over the run |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for key, label in (("rss_kib", "RSS, KiB"), ("fds", "open descriptors")):
            f = s[key]
            over = f["slope_per_min"] * (s["minutes"] * 60 - s["warmup_s"]) / 60
            lines.append(
                f"| {label} | {f['first']:,} | {f['first_after_warmup']:,} | {f['last']:,} | {f['min']:,} | "
                f"{f['max']:,} | {f['slope_per_min']:+,.2f} | {over:+,.0f} |"
            )
        lines += [
            "",
            "| traffic | answers checked ok | failed |",
            "|---|---:|---:|",
            *(f"| {k} | {t['ok']:,} | {t['failed']} |" for k, t in s["traffic"].items()),
            "",
            f"After the traffic stopped: RSS {s['after_traffic']['rss_kib']:,} KiB, {s['after_traffic']['fds']} "
            f"descriptors. edge alive: {s['edge_alive']}; tracebacks logged: {s['edge_log']['tracebacks']}.",
            "",
        ]
        errors = {k: t["errors"] for k, t in s["traffic"].items() if t["errors"]}
        if errors:
            lines += [f"First errors: `{json.dumps(errors)}`", ""]
    return "\n".join(lines)


def _commit() -> str:
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout
        dirty = subprocess.run(["git", "status", "--porcelain", "edge"], cwd=REPO, capture_output=True, text=True)
        return rev.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except OSError:
        return "?"


def _machine() -> str:
    model = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")), "?")
    return f"{os.cpu_count()} CPUs ({model}), Python {platform.python_version()}, {_slowhttptest_version()}"


def _slowhttptest_version() -> str:
    if not shutil.which("slowhttptest"):
        return "no slowhttptest"
    out = subprocess.run(["slowhttptest", "-h"], capture_output=True, text=True).stdout
    m = re.search(r"version ([\d.]+)", out)
    return f"slowhttptest {m.group(1)}" if m else "slowhttptest"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true",
                    help="100 connections, 8 s attacks, 20,000 DNS packets, a 1-minute soak")  # fmt: skip
    ap.add_argument("--only", default="slow,dns,soak", help="parts to run: slow, dns, soak (comma-separated)")
    ap.add_argument("--connections", type=int, default=1000, help="slowhttptest -c, per attack")
    ap.add_argument("--connect-rate", type=int, default=500, help="slowhttptest -r: connections opened per second")
    ap.add_argument("--attack-seconds", type=int, default=30, help="slowhttptest -l: each attack's length")
    ap.add_argument("--baseline", type=float, default=10.0, help="seconds of unloaded probe before each attack")
    ap.add_argument("--head-timeout", type=float, default=10.0, help="http.head_timeout (deployed: 10 s)")
    ap.add_argument("--deadline", type=float, default=10.0,
                    help="http.body_idle_timeout, send_timeout and keepalive_timeout, seconds")  # fmt: skip
    ap.add_argument(
        "--big-read-connections",
        type=int,
        default=100,
        help="connections of the slow read past the buffers (each parks ~4 MB of kernel buffers)",
    )
    ap.add_argument("--rounds", type=int, default=3, help="each attack this many times, alternating")
    ap.add_argument(
        "--attacks",
        type=lambda v: [x.strip() for x in v.split(",") if x.strip()],
        default=[],
        help="only these attacks, by name without commas (comma-separated: 'slowloris,slow body held')",
    )
    ap.add_argument("--probe-rate", type=float, default=200.0, help="probe GETs per second")
    ap.add_argument("--dns-packets", type=int, default=1_000_000)
    ap.add_argument("--dns-rate", type=float, default=8000.0, help="fuzzed packets per second")
    ap.add_argument("--minutes", type=float, default=30.0, help="soak length")
    ap.add_argument("--sample", type=float, default=10.0, help="seconds between soak samples")
    ap.add_argument("--out", type=Path, default=None, help="folder for adversarial.json and .md")
    ap.add_argument("--merge", action="store_true",
                    help="keep the other parts' results from the adversarial.json already there")  # fmt: skip
    ap.add_argument("--render", action="store_true", help="only write adversarial.md again from adversarial.json")
    a = ap.parse_args(argv)
    if a.quick:
        a.connections, a.attack_seconds, a.baseline = min(a.connections, 100), min(a.attack_seconds, 8), 3.0
        a.rounds = 1
        a.head_timeout, a.deadline, a.big_read_connections = 3.0, 3.0, min(a.big_read_connections, 20)
        a.dns_packets, a.minutes = min(a.dns_packets, 20_000), min(a.minutes, 1.0)
    out_dir = a.out or (RESULTS / "quick" if a.quick else RESULTS)
    parts = [p.strip() for p in a.only.split(",") if p.strip()]
    unknown = set(parts) - {"slow", "dns", "soak"}
    if unknown:
        ap.error(f"unknown parts: {', '.join(sorted(unknown))}")
    names = {attack.name.replace(",", "") for attack in attacks(a)}
    if set(a.attacks) - names:
        ap.error(f"unknown attacks: {', '.join(sorted(set(a.attacks) - names))} (known: {', '.join(sorted(names))})")
    os.sched_setaffinity(0, {int(LOAD_CPU)})  # this process is the clients: the load core
    previous = out_dir / "adversarial.json"
    if a.render:
        (out_dir / "adversarial.md").write_text(markdown(json.loads(previous.read_text())))
        return 0
    doc: dict = json.loads(previous.read_text()) if a.merge and previous.exists() else {}
    doc["machine"] = _machine()
    with sandboxd(SANDBOXES["bench"]) as bench_port, sandboxd(SANDBOXES["target"], nice=19) as target_port:
        for part, fn in (("slow", part_slow), ("dns", part_dns), ("soak", part_soak)):
            if part in parts:
                say(f"{part}:")
                meta = {
                    "argv": " ".join(argv if argv is not None else sys.argv[1:]),
                    "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    "commit": _commit(),
                    "load_before": ", ".join(f"{x:.2f}" for x in os.getloadavg()),
                }
                doc[part] = fn(a, {"bench": bench_port, "target": target_port})
                doc[part]["run"] = {**meta, "load_after": ", ".join(f"{x:.2f}" for x in os.getloadavg())}
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "adversarial.json").write_text(json.dumps(doc, indent=1) + "\n")
    (out_dir / "adversarial.md").write_text(markdown(doc))
    say(f"wrote {out_dir / 'adversarial.md'} and adversarial.json")
    return 0 if verdict(doc) else 1


def verdict(doc: dict) -> bool:
    """The issue's bars, as far as a script can hold them: said on stderr, and the exit status."""
    ok = True
    for name, runs in doc.get("slow", {}).get("attacks", {}).items():
        ratios = sorted(r["p99_ratio"] for r in runs if r["p99_ratio"] is not None)
        if not ratios or statistics.median(ratios) > 2:
            say(f"bar: {name}: probe p99 {ratios}x unloaded (bar: within 2x)")
            ok = False
        for r in runs:
            if r["deadline"] and r["edge_released_after_s"] is None:
                say(f"bar: {name}: edge did not release the attack's connections ({r['deadline']})")
                ok = False
    d = doc.get("dns")
    if d and not (d["alive"] and d["checks_after"] == d["checks_total"] and d["replies"] == d["replies_expected"]):
        say("bar: DNS fuzz: edge died, answered wrongly, or the replies differ from the expected count")
        ok = False
    s = doc.get("soak")
    if s and (not s["edge_alive"] or any(t["failed"] for t in s["traffic"].values())):
        say("bar: soak: edge died or some traffic failed")
        ok = False
    return ok


if __name__ == "__main__":
    sys.exit(main())
