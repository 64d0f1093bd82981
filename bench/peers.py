"""Processes the HTTP benchmarks run side by side: nginx (as backend and as the peer proxy) and edge.

Everything binds loopback only, runs in a temporary folder, and is stopped when the `with` ends.
The proxy under test is pinned to core 0; the load generator and the backend to core 1, so that the
figure measures one core of proxy (see bench/README.md).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

PROXY_CPU = "0"
LOAD_CPU = "1"
REPO = Path(__file__).resolve().parent.parent


def need(*tools: str) -> None:
    missing = [t for t in tools if not shutil.which(t) and not Path(f"/usr/sbin/{t}").exists()]
    if missing:
        sys.exit(f"bench: missing {', '.join(missing)}; run `make bench` (it installs them from Debian)")


def free_port(host: str = "127.0.0.1") -> int:
    s = socket.socket()
    s.bind((host, 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_port(host: str, port: int, seconds: float = 15) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            socket.create_connection((host, port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {host}:{port}")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


NGINX_BACKEND = """
worker_processes 1;
daemon off;
pid {dir}/backend.pid;
error_log {dir}/backend.err warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    keepalive_requests 1000000;
    server {{
        listen {host}:{port} reuseport;
        location / {{ return 200 "hello from the sandbox\\n"; }}
        location /big {{ alias {dir}/big.bin; }}
        location /upload {{ client_max_body_size 0; client_body_buffer_size 1m; proxy_pass http://127.0.0.1:{sink}; }}
    }}
    server {{
        listen 127.0.0.1:{sink};
        location / {{ return 200 "stored\\n"; }}
    }}
}}
"""

NGINX_PROXY = """
worker_processes 1;
daemon off;
pid {dir}/proxy.pid;
error_log {dir}/proxy.err warn;
events {{ worker_connections 16384; }}
http {{
    access_log off;
    keepalive_requests 1000000;
    upstream sandbox {{ server {backend_host}:{backend_port}; keepalive 64; }}
    server {{
        listen 127.0.0.1:{port} reuseport;
        client_max_body_size 0;
        location / {{
            proxy_pass http://sandbox;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $http_host;
            proxy_set_header X-Forwarded-For $remote_addr;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_set_header X-Forwarded-Host $http_host;
        }}
    }}
}}
"""


@contextmanager
def nginx(template: str, cpu: str, **values):
    """Run nginx in the foreground with a generated config; yields the temp folder."""
    need("nginx")
    with tempfile.TemporaryDirectory(prefix="edge-bench-") as d:
        conf = Path(d) / "nginx.conf"
        conf.write_text(template.format(dir=d, **values))
        if "big_bytes" in values:
            with open(Path(d) / "big.bin", "wb") as fh:
                fh.truncate(values["big_bytes"])
        proc = subprocess.Popen(["taskset", "-c", cpu, "nginx", "-p", d, "-c", str(conf), "-e", f"{d}/startup.err"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            yield Path(d), proc
        finally:
            _stop(proc)


@contextmanager
def edge(backend_host: str, sandbox: str = "bench", extra: tuple[str, ...] = ()):
    """Run `edge serve` pinned to the proxy core, with one sandbox at backend_host. Yields (port, proc)."""
    with tempfile.TemporaryDirectory(prefix="edge-bench-") as d:
        env = {k: v for k, v in os.environ.items() if not k.startswith("EDGE_")}
        env["EDGE_STATE_DIR"] = d
        subprocess.run([sys.executable, "-m", "edge", "sandbox", "add", sandbox, "--address", backend_host],
                       env=env, check=True, capture_output=True)
        port = free_port()
        proc = subprocess.Popen(
            ["taskset", "-c", PROXY_CPU, sys.executable, "-m", "edge", "serve", "--http", f"127.0.0.1:{port}",
             "--dns", "127.0.0.1:0", "--no-access-log", *extra],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=REPO,
        )
        try:
            wait_port("127.0.0.1", port)
            yield port, proc
        finally:
            _stop(proc)


_WRK_RPS = re.compile(r"Requests/sec:\s+([\d.]+)")
_WRK_LAT = re.compile(r"^\s+(50|90|99)%\s+([\d.]+)(us|ms|s)\s*$", re.M)
_UNIT = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def wrk(url: str, host: str, connections: int, seconds: int, threads: int = 1) -> dict:
    """Run wrk on the load core. Returns req/s and latency percentiles in ms; non-2xx counted."""
    need("wrk")
    out = subprocess.run(
        ["taskset", "-c", LOAD_CPU, "wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency",
         "-H", f"Host: {host}", url],
        capture_output=True, text=True, timeout=seconds + 30,
    ).stdout
    m = _WRK_RPS.search(out)
    if not m:
        raise RuntimeError(f"wrk printed no rate:\n{out}")
    lat = {f"p{p}": float(v) * _UNIT[u] for p, v, u in _WRK_LAT.findall(out)}
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    return {
        "rps": float(m.group(1)),
        **lat,
        "non2xx": int(bad.group(1)) if bad else 0,
        "socket_errors": sum(int(x) for x in errors.groups()) if errors else 0,
    }


def median(values: list[float]) -> float:
    s = sorted(values)
    n = len(s)
    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2
