"""Issue 15, item 4, measured: what one client address, a pile of unfinished heads, and clients that
leave while their sandbox thinks can take from a real `edge serve` process.

The probe that found the problem, and what each scenario here repeats:

  1. Descriptor exhaustion. edge under a soft and hard RLIMIT_NOFILE of 512; 600 idle TCP connections
     from 127.0.0.1, kept open. Counted: how many the edge holds and how many it closes at once (EOF or
     reset within ~1 s), its open descriptors (/proc/PID/fd), whether a client from 127.0.0.9 is still
     served (GET to a small http.server on 127.0.0.2) and how fast, and
     edge_http_connections_rejected_total from the admin /metrics. A second run spreads the 600 over 20
     addresses, so the cap in all binds instead of the one per address.
  2. Partial heads. 2,000 connections each with ~100 bytes of an unfinished request head, and 500
     with ~60 KB: the edge's VmRSS growth per connection (a fresh edge for each, warmed up first).
  3. Abandoned requests, to a sandbox port that accepts, reads and never answers (127.0.0.3):
     (a) 300 clients each send a request and close at once: the edge's descriptors sampled every
         100 ms for 5 s after the last one left: the peak, and how long until it is back within 5 of
         where it started;
     (b) the sandbox at --max-connections 2: two clients send requests and leave; how long until a
         third request is not answered 429 (polled every 50 ms, up to 10 s).

Every scenario runs `--runs` times (3) on a fresh edge; the table gives the median and the min-max.
`--rev REV` measures a commit instead of the working tree (git archive into a temporary folder, as
bench/run.py --edge-src does), `--before REV` adds a column for another commit (the one before the
fix, say). Everything is loopback, bounded in count and time, and stopped when the script ends.

    .venv/bin/python bench/conn_limits.py [--runs 3] [--rev REV] [--before REV] [--out FILE]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import re
import resource
import selectors
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.peers import free_port, median, raise_nofile, tree, tree_rss_kib  # noqa: E402

DOMAIN = "sandbox.localhost"
BACKEND = "127.0.0.2"
HOLD = "127.0.0.3"
NORMAL_CLIENT = "127.0.0.9"
NOFILE = 512
_ADMIN = re.compile(r"^edge: admin listening on \S+:(\d+)$", re.M)
_REJECTED = re.compile(r'^edge_http_connections_rejected_total\{reason="(\w+)"\} ([0-9.e+]+)$', re.M)
_STATUS_499 = re.compile(r'"status":\s*499\b')


def log(msg: str) -> None:
    print(f"conn_limits: {msg}", file=sys.stderr, flush=True)


# --- the edge under test ----------------------------------------------------------------------------


@dataclass
class Edge:
    proc: subprocess.Popen
    port: int
    admin_port: int
    state: Path
    log_path: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def fds(self) -> int:
        """Descriptors of the supervisor and its workers (the workers hold the connections)."""
        return sum(len(os.listdir(f"/proc/{p}/fd")) for p in tree(self.pid))

    def rss_kib(self) -> int:
        return tree_rss_kib(self.pid)

    def host(self, port: int, sandbox: str) -> str:
        return f"{port}-{sandbox}.{DOMAIN}"

    def metrics(self) -> str | None:
        """The admin /metrics page, or None when the edge did not answer within 5 s."""
        token = (self.state / "admin-token").read_text().strip()
        try:
            with socket.create_connection(("127.0.0.1", self.admin_port), timeout=5) as s:
                s.sendall(
                    f"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n"
                    "Connection: close\r\n\r\n".encode()
                )
                text = _read_all(s).decode(errors="replace")
        except OSError:  # an edge out of descriptors cannot accept the admin connection either
            return None
        return text if text.startswith("HTTP/1.1 200") else None

    def count_499(self) -> int:
        return len(_STATUS_499.findall(self.log_path.read_text(errors="replace")))


@contextlib.contextmanager
def edge(src: Path, sandboxes: list[list[str]], nofile: int | None = None) -> Iterator[Edge]:
    """`edge serve` from checkout `src` with the given `sandbox add` argument lists, in a temporary
    state folder; under RLIMIT_NOFILE = nofile (soft and hard) when given."""
    with tempfile.TemporaryDirectory(prefix="edge-conn-limits-") as d:
        state = Path(d)
        env = {k: v for k, v in os.environ.items() if not k.startswith("EDGE_")}
        env.update(PYTHONPATH=str(src), EDGE_STATE_DIR=str(state))
        for args in sandboxes:
            subprocess.run(
                [sys.executable, "-m", "edge", "sandbox", "add", *args],
                env=env,
                check=True,
                capture_output=True,
                cwd=src,
                timeout=30,
            )
        port = free_port()
        log_path = state / "edge.log"
        out = open(log_path, "wb")  # noqa: SIM115 (closed when the process has stopped)

        def limit() -> None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "edge",
                "serve",
                "--http",
                f"127.0.0.1:{port}",
                "--dns",
                "127.0.0.1:0",
                "--admin",
                "127.0.0.1:0",
                "--log-format",  # the "edge: ... listening on" lines below are text mode's
                "text",
            ],
            env=env,
            cwd=src,
            stdout=out,
            stderr=subprocess.STDOUT,
            preexec_fn=limit if nofile else None,
        )
        try:
            deadline = time.monotonic() + 20
            while True:
                text = log_path.read_text(errors="replace")
                if "edge is up" in text and _ADMIN.search(text):
                    break
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("edge did not come up:\n" + text)
                time.sleep(0.05)
            yield Edge(proc, port, int(_ADMIN.search(text).group(1)), state, log_path)
        finally:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            out.close()
            text = log_path.read_text(errors="replace")
            if "Traceback" in text:  # the edge before the fix logs one per failed accept (EMFILE)
                first = text[text.index("Traceback") :].splitlines()[0][-300:]
                log(f"edge logged {text.count('Traceback')} tracebacks; the first ends: {first}")


# --- clients and sandboxes --------------------------------------------------------------------------


def _read_all(s: socket.socket) -> bytes:
    out = b""
    while chunk := s.recv(65536):
        out += chunk
    return out


def connect(port: int, source: str, timeout: float = 2.0) -> socket.socket | None:
    s = socket.socket()
    s.bind((source, 0))
    s.settimeout(timeout)
    try:
        s.connect(("127.0.0.1", port))
    except OSError:
        s.close()
        return None
    return s


def get(e: Edge, host: str, source: str = NORMAL_CLIENT, timeout: float = 2.0) -> tuple[int | None, float]:
    """One GET on a new connection: (status or None when not served, seconds to the whole answer)."""
    t0 = time.perf_counter()
    s = connect(e.port, source, timeout)
    if s is None:
        return None, time.perf_counter() - t0
    try:
        s.sendall(f"GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        answer = _read_all(s)
    except OSError:
        return None, time.perf_counter() - t0
    finally:
        s.close()
    m = re.match(rb"HTTP/1\.[01] (\d{3}) ", answer)
    return (int(m.group(1)) if m else None), time.perf_counter() - t0


def closed_by_peer(s: socket.socket) -> bool:
    """True when the edge has closed `s` (EOF or reset); never blocks."""
    s.setblocking(False)
    try:
        return s.recv(1) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


@contextlib.contextmanager
def http_backend() -> Iterator[int]:
    """python -m http.server on 127.0.0.2, serving a 3-byte file. Yields its port."""
    with tempfile.TemporaryDirectory(prefix="edge-conn-backend-") as d:
        (Path(d) / "index.html").write_text("ok\n")
        port = free_port(BACKEND)
        proc = subprocess.Popen(
            [sys.executable, "-m", "http.server", str(port), "--bind", BACKEND, "--directory", d],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 10
            while True:
                try:
                    socket.create_connection((BACKEND, port), timeout=0.2).close()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)
            yield port
        finally:
            proc.terminate()
            proc.wait(timeout=10)


class HoldServer:
    """A sandbox port that accepts, reads and never answers. Counts the connections it got and the
    ones the other side (the edge) closed."""

    def __init__(self, host: str = HOLD) -> None:
        self.listener = socket.create_server((host, 0), backlog=1024)
        self.port = self.listener.getsockname()[1]
        self.accepted = 0
        self.with_data = 0
        self.closed_by_edge = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> HoldServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        sel = selectors.DefaultSelector()
        self.listener.setblocking(False)
        sel.register(self.listener, selectors.EVENT_READ)
        seen: set[socket.socket] = set()
        try:
            while not self._stop.is_set():
                for key, _ in sel.select(0.05):
                    sock = key.fileobj
                    if sock is self.listener:
                        with contextlib.suppress(BlockingIOError):
                            conn, _ = self.listener.accept()
                            conn.setblocking(False)
                            sel.register(conn, selectors.EVENT_READ)
                            self.accepted += 1
                        continue
                    try:
                        data = sock.recv(65536)
                    except BlockingIOError:
                        continue
                    except OSError:
                        data = b""
                    if data and sock not in seen:
                        seen.add(sock)
                        self.with_data += 1
                    if not data:
                        self.closed_by_edge += 1
                        sel.unregister(sock)
                        seen.discard(sock)
                        sock.close()
        finally:
            for key in list(sel.get_map().values()):
                key.fileobj.close()
            sel.close()

    def wait(self, cond: Callable[[], bool], seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        while not cond():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        return True


# --- the scenarios: each returns {figure: value} for one run -------------------------------------


def exhaustion(src: Path, backend_port: int, spread: bool) -> dict:
    """600 idle connections against an edge with 512 descriptors, from 127.0.0.1 or from 20 addresses."""
    sources = [f"127.0.1.{1 + i % 20}" for i in range(600)] if spread else ["127.0.0.1"] * 600
    with edge(src, [["s1", "--address", BACKEND]], nofile=NOFILE) as e:
        host = e.host(backend_port, "s1")
        before = [get(e, host) for _ in range(5)]
        fds_before = e.fds()
        opened = time.monotonic()
        socks = [connect(e.port, src_ip) for src_ip in sources]
        connected = [s for s in socks if s is not None]
        time.sleep(1.0)
        closed = [s for s in connected if closed_by_peer(s)]
        fds_held = e.fds()
        served = []
        for _ in range(5):
            status, seconds = get(e, host)
            if status is None:
                break
            served.append((status, seconds))
        page = e.metrics()
        rejected = {reason: int(float(n)) for reason, n in _REJECTED.findall(page or "")}
        row = {
            "connections that did not connect": len(socks) - len(connected),
            "open after 1 s (held, or queued unaccepted)": len(connected) - len(closed),
            "closed at once by edge": len(closed),
            "edge descriptors before": fds_before,
            "edge descriptors while held": fds_held,
            "admin /metrics answered": "no" if page is None else "yes",
            "rejected (metric), per_ip": rejected.get("per_ip", "n/a"),
            "rejected (metric), total": rejected.get("total", "n/a"),
            "client from 127.0.0.9 served": f"{sum(1 for st, _ in served if st == 200)}/5",
            "latency before, ms": 1000 * median([t for st, t in before if st == 200] or [float("nan")]),
            "latency while held, ms": 1000 * median([t for st, t in served if st == 200] or [float("nan")]),
        }
        if spread:
            # The cap in all is full: a new client waits until the held connections' head_timeout
            # (10 s) closes them. How long, from the first of the 600, bounded at 15 s.
            again = None
            while time.monotonic() - opened < 15:
                if get(e, host, timeout=1.0)[0] == 200:
                    again = time.monotonic() - opened
                    break
                time.sleep(0.25)
            row["client served again after, s"] = again if again is not None else ">15"
        for s in connected:
            s.close()
        return row


def partial_heads(src: Path, count: int, head_bytes: int) -> dict:
    """`count` connections each holding an unfinished head of about `head_bytes`; RSS per connection."""
    with edge(src, [["s2", "--address", BACKEND]]) as e:
        start = f"GET / HTTP/1.1\r\nHost: {e.host(8000, 's2')}\r\nX-Pad: ".encode()
        head = start + b"a" * max(0, head_bytes - len(start))
        sources = [f"127.0.2.{1 + i % 4}" for i in range(count)]  # under the per-address cap

        def flood(n: int) -> list[socket.socket]:
            out = []
            for src_ip in sources[:n]:
                s = connect(e.port, src_ip, timeout=5)
                if s is not None:
                    with contextlib.suppress(OSError):
                        s.sendall(head)
                    out.append(s)
            return out

        for s in flood(100):  # warm-up: Python's arenas, the accept path
            s.close()
        time.sleep(1.0)
        rss_before = e.rss_kib()
        socks = flood(count)
        time.sleep(1.5)
        rss_after = e.rss_kib()
        closed = sum(1 for s in socks if closed_by_peer(s))
        for s in socks:
            s.close()
        return {
            "head bytes": len(head),
            "connections open": len(socks) - closed,
            "RSS before, KiB": rss_before,
            "RSS after, KiB": rss_after,
            "RSS per connection, bytes": (rss_after - rss_before) * 1024 / max(1, len(socks) - closed),
        }


def abandoned(src: Path) -> dict:
    """300 clients send a request to a port that never answers and close at once."""
    with HoldServer() as hold, edge(src, [["s3", "--address", HOLD]]) as e:
        request = f"GET / HTTP/1.1\r\nHost: {e.host(hold.port, 's3')}\r\n\r\n".encode()
        time.sleep(0.5)
        baseline = min(e.fds() for _ in range(3))
        samples: list[tuple[float, int]] = []
        stop = threading.Event()

        def sample() -> None:
            while not stop.is_set():
                with contextlib.suppress(OSError):
                    samples.append((time.monotonic(), e.fds()))
                stop.wait(0.1)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        sent = 0
        for _ in range(300):
            s = connect(e.port, "127.0.0.1")
            if s is not None:
                with contextlib.suppress(OSError):
                    s.sendall(request)
                    sent += 1
                s.close()
        left = time.monotonic()
        time.sleep(5.0)
        stop.set()
        sampler.join()
        peak_at, peak = max(samples, key=lambda x: x[1])
        back = next((t - left for t, n in samples if t >= peak_at and n <= baseline + 5), None)
        return {
            "requests sent": sent,
            "sandbox connections opened": hold.accepted,
            "sandbox connections closed by edge within 5 s": hold.closed_by_edge,
            "edge descriptors before": baseline,
            "edge descriptors, peak": peak,
            "edge descriptors 5 s after": samples[-1][1],
            "back within 5 of before, s after the last client left": (max(0.0, back) if back is not None else ">5"),
            "logged 499": e.count_499(),
        }


def slot(src: Path) -> dict:
    """--max-connections 2, two clients leave while the sandbox thinks: when does a third get in?"""
    with HoldServer() as hold, edge(src, [["s4", "--address", HOLD, "--max-connections", "2"]]) as e:
        request = f"GET / HTTP/1.1\r\nHost: {e.host(hold.port, 's4')}\r\n\r\n".encode()
        clients = []
        for _ in range(2):
            s = connect(e.port, "127.0.0.1")
            s.sendall(request)
            clients.append(s)
        if not hold.wait(lambda: hold.with_data >= 2, 3):
            raise RuntimeError("the two requests did not reach the sandbox")
        control = answer_to(e, request, 2.0)
        for s in clients:
            s.close()
        left = time.monotonic()
        got_in = None
        last = control
        third = None
        while time.monotonic() - left < 10:
            t = time.monotonic()
            s = connect(e.port, "127.0.0.1")
            s.sendall(request)
            s.settimeout(0.3)
            try:
                head = s.recv(65536)
            except TimeoutError:
                head = None  # no answer: the request went through to the sandbox
            last = _status(head)
            if last != 429:
                got_in, third = t - left, s
                break
            s.close()
            time.sleep(0.05)
        reached = hold.wait(lambda: hold.with_data >= 3, 1.0) if third else False
        if third:
            third.close()
        return {
            "third request while both wait": control,
            "not 429 after, s": got_in if got_in is not None else ">10",
            "answer then": "none yet (forwarded)" if last is None else last,
            "sandbox got the third request": "yes" if reached else "no",
        }


def answer_to(e: Edge, request: bytes, seconds: float) -> int | None:
    s = connect(e.port, "127.0.0.1")
    s.sendall(request)
    s.settimeout(seconds)
    try:
        return _status(s.recv(65536))
    except TimeoutError:
        return None
    finally:
        s.close()


def _status(head: bytes | None) -> int | None:
    m = re.match(rb"HTTP/1\.[01] (\d{3}) ", head or b"")
    return int(m.group(1)) if m else None


# --- runs, medians, the table -----------------------------------------------------------------------


SCENARIOS = [
    (
        "1. 600 idle connections from 127.0.0.1, edge at 512 descriptors",
        lambda src, be: exhaustion(src, be, False),
    ),
    (
        "1b. 600 idle connections from 20 addresses, edge at 512 descriptors",
        lambda src, be: exhaustion(src, be, True),
    ),
    ("2. 2,000 unfinished heads of ~100 bytes", lambda src, be: partial_heads(src, 2000, 100)),
    ("2. 500 unfinished heads of ~60 KB", lambda src, be: partial_heads(src, 500, 60_000)),
    (
        "3a. 300 requests to a port that never answers, each client closing at once",
        lambda src, be: abandoned(src),
    ),
    ("3b. sandbox at --max-connections 2, both clients leave", lambda src, be: slot(src)),
]


def measure(src: Path, runs: int, backend_port: int, label: str) -> list[list[dict]]:
    out = []
    for name, run in SCENARIOS:
        rows = []
        for i in range(runs):
            log(f"{label}: {name}, run {i + 1}/{runs}")
            rows.append(run(src, backend_port))
        out.append(rows)
    return out


def summarise(values: list) -> str:
    nums = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool) and v == v]
    if len(nums) != len(values):  # text, bounds (">5") or missing: show every run
        return " / ".join(_fmt(v) for v in values) if len(set(map(str, values))) > 1 else _fmt(values[0])
    mid = median(nums)
    if min(nums) == max(nums):
        return _fmt(mid)
    return f"{_fmt(mid)} ({_fmt(min(nums))}-{_fmt(max(nums))})"


def _fmt(v: object) -> str:
    if isinstance(v, float):
        if v != v:
            return "-"
        return f"{v:,.0f}" if abs(v) >= 100 else f"{v:.2f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def table(after: list[list[dict]], label: str, before: list[list[dict]] | None, before_label: str) -> str:
    head = f"| scenario | figure | {label} |" + (f" {before_label} |" if before else "")
    rule = "|---|---|---:|" + ("---:|" if before else "")
    lines = [head, rule]
    for k, (name, _) in enumerate(SCENARIOS):
        for j, fig in enumerate(after[k][0]):
            cells = [name if j == 0 else "", fig, summarise([r[fig] for r in after[k]])]
            if before:
                cells.append(summarise([r.get(fig, "n/a") for r in before[k]]))
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


@contextlib.contextmanager
def checkout(rev: str | None) -> Iterator[tuple[Path, str]]:
    """The working tree, or commit `rev` exported into a temporary folder. Yields (path, label)."""
    if rev is None:
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "edge"], cwd=REPO, capture_output=True, text=True
        ).stdout.strip()
        yield REPO, _short("HEAD") + ("-dirty" if dirty else "")
        return
    with tempfile.TemporaryDirectory(prefix="edge-src-") as d:
        archive = subprocess.run(["git", "archive", rev], cwd=REPO, capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", d], input=archive, check=True)
        yield Path(d), _short(rev)


def _short(rev: str) -> str:
    return subprocess.run(
        ["git", "rev-parse", "--short", rev], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.strip()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--rev", help="measure this commit (git archive) instead of the working tree")
    ap.add_argument("--before", help="also measure this commit, in a second column (e.g. the one before the fix)")
    ap.add_argument("--out", default=str(REPO / "bench/results/conn_limits.md"), help="'-': stdout only")
    args = ap.parse_args()
    nofile = raise_nofile(65536)  # this process holds 600 client sockets and the sandbox's ends; edge inherits it
    began = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    with http_backend() as backend_port:
        with checkout(args.rev) as (src, label):
            label = f"edge {label}"
            after = measure(src, args.runs, backend_port, label)
        before = None
        before_label = ""
        if args.before:
            with checkout(args.before) as (src, before_label):
                before_label = f"edge {before_label} (before the fix)"
                before = measure(src, args.runs, backend_port, before_label)
    cpu = next(
        (
            ln.split(":", 1)[1].strip()
            for ln in Path("/proc/cpuinfo").read_text().splitlines()
            if ln.startswith("model name")
        ),
        "?",
    )
    text = "\n".join(
        [
            f"Connection limits (bench/conn_limits.py, {began}, {label}).",
            "",
            f"{os.cpu_count()} CPUs ({cpu}), Python {platform.python_version()}, loopback. {args.runs} runs per "
            "scenario, each on a fresh `edge serve` with default settings (head_timeout 10 s, reaper every 1 s); "
            "median (min-max), or every run when they differ in kind. Scenario 1 runs edge under "
            f"RLIMIT_NOFILE {NOFILE} (soft and hard), so its caps are {(NOFILE - 64) // 3} in all and "
            f"{(NOFILE - 64) // 3 // 4} per address; the others inherit {nofile:,} ({(nofile - 64) // 3:,} and "
            f"{(nofile - 64) // 3 // 4:,}; scenario 2 spreads its connections over 4 addresses to stay under "
            "the second).",
            "",
            table(after, label, before, before_label),
            "",
        ]
    )
    print(text)
    if args.out != "-":
        Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
