"""Processes the HTTP benchmarks run side by side: the backend, nginx as the peer proxy, and edge.

Everything binds loopback only, runs in a temporary folder, and is stopped when its `with` ends.
The proxy under test is pinned to core 0 (`PROXY_CPU`); the load generator and every backend process
to core 1 (`LOAD_CPU`), so a figure measures one core of proxy (see bench/README.md).

The backend (`backend()`), shared by both proxies:
  - nginx on 127.0.0.2: `/` a 23-byte answer, `/big` a 100 MiB file (sendfile);
  - bench/sink.py: reads a request body to its end, answers with the byte count (the upload target);
  - tests/ws_echo.py: a WebSocket echo server (the `websockets` library, not ours).
edge reaches each by the port in the Host (`<port>-bench.sandbox.localhost`); nginx by location
(`/upload` to the sink, `/ws` to the echo server, everything else to the backend nginx).

With `tls=` (a `Certificate`, made once per run by `certificate()`), both proxies also serve HTTPS on a
second port with that one certificate and the same TLS settings (bench/README.md, "TLS").
"""

from __future__ import annotations

import datetime
import json
import os
import re
import resource
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from functools import cache
from pathlib import Path

PROXY_CPU = "0"
LOAD_CPU = "1"
BACKEND_HOST = "127.0.0.2"
SANDBOX = "bench"
DOMAIN = "sandbox.localhost"
BIG_BYTES = 100 * 1024 * 1024
REPO = Path(__file__).resolve().parent.parent
#: The checkout edge runs from. bench/run.py --edge-src points it at another one (say, a `git archive`
#: of a commit) to measure that code with this harness while the working tree is being edited.
EDGE_SRC = REPO


def _edge_env(extra: dict | None = None) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGE_")}
    env["PYTHONPATH"] = str(EDGE_SRC)
    return {**env, **(extra or {})}


def need(*tools: str) -> None:
    missing = [t for t in tools if not shutil.which(t) and not Path(f"/usr/sbin/{t}").exists()]
    if missing:
        sys.exit(f"bench: missing {', '.join(missing)}; run `make bench` (it installs them from Debian)")


def raise_nofile(want: int = 65536) -> int:
    """Raise this process's open-file limit (children inherit it); returns the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = _nofile_cap(want)
    if soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            pass
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def _nofile_cap(want: int = 65536) -> int:
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    return want if hard == resource.RLIM_INFINITY else min(want, hard)


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


# --- process memory ---------------------------------------------------------------------------------


def children(pid: int) -> list[int]:
    """Direct children of pid (Linux /proc)."""
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def tree(pid: int) -> list[int]:
    """pid and all its descendants (`edge serve`: the supervisor and its workers)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children(p))
    return out


def tree_rss_kib(pid: int) -> int:
    """RSS of pid and all its descendants (`edge serve` is a supervisor and its workers)."""
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            total += rss_kib(p)
        except OSError:
            continue
        todo.extend(children(p))
    return total


def _cpu_ticks(pid: int) -> int:
    """utime + stime of pid and its descendants, in clock ticks."""
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
        todo.extend(children(p))
    return total


def _core_ticks(cpu: int) -> tuple[int, int, int, int]:
    """(busy, interrupts, steal, total) clock ticks of one CPU since boot, from /proc/stat."""
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith(f"cpu{cpu} "):
            user, nice, system, idle, iowait, irq, softirq, steal = (int(x) for x in line.split()[1:9])
            total = user + nice + system + idle + iowait + irq + softirq + steal  # guest is inside user
            return total - idle - iowait, irq + softirq, steal, total
    return 0, 0, 0, 0


def _kernel_thread(name: str) -> int | None:
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() == name:
                    return int(entry.name)
            except OSError:
                continue
    return None


class CoreWatch:
    """Where the proxy core's time went during a measurement, in % of the core.

    proxy: the proxy process(es); irq: interrupts and softirqs (and ksoftirqd), mostly loopback
    packet processing, partly this benchmark's own traffic (the kernel may charge softirq work done
    during the proxy's system calls to both, so proxy + irq can pass 100); steal: the hypervisor ran
    someone else; others: every other process. This machine may be shared: a run where others or
    steal took a share measured less proxy than it claims, and the report says so.
    """

    def __init__(self, pid: int, cpu: int = int(PROXY_CPU)) -> None:
        self.pid, self.cpu = pid, cpu
        self.ksoftirqd = _kernel_thread(f"ksoftirqd/{cpu}")
        self.start = self._now()

    def _now(self) -> tuple[int, ...]:
        busy, irq, steal, total = _core_ticks(self.cpu)
        # Softirq work the kernel defers to ksoftirqd is packet work too, not another tenant.
        deferred = _cpu_ticks(self.ksoftirqd) if self.ksoftirqd else 0
        load_busy, _, _, load_total = _core_ticks(int(LOAD_CPU))
        return _cpu_ticks(self.pid), busy, irq + deferred, steal, total, load_busy, load_total

    def stop(self) -> dict:
        delta = (a - b for a, b in zip(self._now(), self.start, strict=True))
        proc, busy, irq, steal, total, load_busy, load_total = delta
        if total <= 0:
            return {}
        others = max(0, busy - min(proc, busy) - irq - steal)  # the proxy may also run elsewhere (workers)

        def pct(x: int) -> float:
            return 100 * x / total

        return {
            # The load core: near 100 means the figure is the load generator's limit, not the proxy's.
            "load_core_busy_pct": 100 * load_busy / load_total if load_total > 0 else 0.0,
            "proxy_cpu_pct": pct(proc),
            "irq_cpu_pct": pct(irq),
            "steal_cpu_pct": pct(steal),
            "others_cpu_pct": pct(others),
        }


# --- nginx --------------------------------------------------------------------------------------------

NGINX_BACKEND = """
worker_processes 1;
worker_rlimit_nofile {nofile};
daemon off;
pid {dir}/backend.pid;
error_log {dir}/backend.err warn;
events {{ worker_connections 16384; }}
http {{
    access_log off;
    keepalive_requests 1000000;
    server {{
        listen {host}:{port} reuseport;
        location / {{ return 200 "hello from the sandbox\\n"; }}
        location /big {{ alias {dir}/big.bin; }}
    }}
}}
"""

# The peer: one worker, upstream keepalive, the same X-Forwarded-* headers as edge. Downloads use
# nginx's default response buffering (as the issue measured); uploads stream (proxy_request_buffering
# off), as edge does, instead of nginx's default of spooling the whole body to a temp file first.
# `{access_log}` is `access_log off;`, or (the `logged` scenario) `access_log <file>;`: nginx's default
# `combined` format, one write per request, as an operator who only names the file gets it.
NGINX_PROXY = """
worker_processes 1;
worker_rlimit_nofile {nofile};
daemon off;
pid {dir}/proxy.pid;
error_log {dir}/proxy.err warn;
events {{ worker_connections 16384; }}
http {{
    {access_log}
    keepalive_requests 1000000;
    upstream sandbox {{ server {backend_host}:{backend_port}; keepalive 64; }}
    upstream sink {{ server {backend_host}:{sink_port}; keepalive 64; }}
    upstream ws {{ server {backend_host}:{ws_port}; }}
    server {{
        listen 127.0.0.1:{port} reuseport;
        {tls}
        client_max_body_size 0;
        proxy_http_version 1.1;
        proxy_set_header Host $http_host;
        proxy_set_header X-Forwarded-For $remote_addr;
        proxy_set_header X-Forwarded-Proto $scheme;
        proxy_set_header X-Forwarded-Host $http_host;
        location / {{
            proxy_pass http://sandbox;
            proxy_set_header Connection "";
        }}
        location /upload {{
            proxy_pass http://sink;
            proxy_request_buffering off;
            proxy_set_header Connection "";
        }}
        location /ws {{
            proxy_pass http://ws;
            proxy_read_timeout 300s;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection "upgrade";
        }}
    }}
}}
"""


# edge's TLS settings (edge/tls/certs.py: Mozilla intermediate) written for nginx. Session tickets and
# the session cache stay at both servers' defaults (each sends TLS 1.3 tickets); the handshake client
# never resumes, so every connection it opens is a full handshake on both.
NGINX_TLS = """listen 127.0.0.1:{tls_port} ssl reuseport;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_ciphers {ciphers};
        ssl_prefer_server_ciphers on;"""
#: The TLS 1.2 suites edge allows (edge/tls/certs.py CIPHERS_TLS12); TLS 1.3 suites are OpenSSL's defaults.
TLS12_CIPHERS = ":".join(
    (
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "ECDHE-RSA-AES128-GCM-SHA256",
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "ECDHE-RSA-AES256-GCM-SHA384",
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        "ECDHE-RSA-CHACHA20-POLY1305",
    )
)


@contextmanager
def nginx(template: str, cpu: str, **values):
    """Run nginx in the foreground with a generated config; yields (folder, master process)."""
    need("nginx")
    with tempfile.TemporaryDirectory(prefix="edge-bench-") as d:
        os.chmod(d, 0o755)  # nginx's workers run as an unprivileged user when started by root
        conf = Path(d) / "nginx.conf"
        conf.write_text(template.format(dir=d, nofile=_nofile_cap(), **values))
        if "big_bytes" in values:
            with open(Path(d) / "big.bin", "wb") as fh:
                fh.write(os.urandom(1 << 20) * (values["big_bytes"] >> 20))
            os.chmod(Path(d) / "big.bin", 0o644)
        proc = subprocess.Popen(
            ["taskset", "-c", cpu, "nginx", "-p", d, "-c", str(conf), "-e", f"{d}/startup.err"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            yield Path(d), proc
        finally:
            _stop(proc)


def nginx_worker(master: subprocess.Popen, seconds: float = 5) -> int:
    """The pid of nginx's single worker (the process that holds the connections)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        kids = children(master.pid)
        if kids:
            return kids[0]
        time.sleep(0.05)
    raise RuntimeError("nginx started no worker")


@contextmanager
def python_server(args: list[str], cpu: str = LOAD_CPU):
    """Run a Python server that prints its port on its first line; yields (port, process)."""
    proc = subprocess.Popen(
        ["taskset", "-c", cpu, sys.executable, *args],
        cwd=REPO,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        line = proc.stdout.readline()
        if not line.strip().isdigit():
            raise RuntimeError(f"{args} printed {line!r} instead of a port")
        yield int(line), proc
    finally:
        _stop(proc)


@dataclass(frozen=True)
class Backend:
    host: str
    port: int  # nginx: / and /big
    sink_port: int  # bench/sink.py: /upload
    ws_port: int  # tests/ws_echo.py

    def edge_host(self, port: int) -> str:
        """The Host that makes edge forward to `port` on the backend."""
        return f"{port}-{SANDBOX}.{DOMAIN}"


@contextmanager
def backend():
    """The whole backend on the load core."""
    with ExitStack() as stack:
        port = free_port(BACKEND_HOST)
        stack.enter_context(nginx(NGINX_BACKEND, LOAD_CPU, host=BACKEND_HOST, port=port, big_bytes=BIG_BYTES))
        sink_port, _ = stack.enter_context(python_server(["bench/sink.py", BACKEND_HOST]))
        ws_port, _ = stack.enter_context(python_server(["-m", "tests.ws_echo", BACKEND_HOST]))
        wait_port(BACKEND_HOST, port)
        yield Backend(BACKEND_HOST, port, sink_port, ws_port)


# --- one certificate for both proxies ----------------------------------------------------------------


@dataclass(frozen=True)
class Certificate:
    """PEM files of the run's certificate: a throwaway CA, and an ECDSA P-256 leaf it signed."""

    ca: Path  # the CA certificate: what a verifying client trusts
    cert: Path  # the leaf, then the CA (a full chain)
    key: Path
    names: tuple[str, ...]


#: The names the bench certificate carries: the sandbox wildcard, the domain, and `localhost`, the name
#: wrk's URL has (it sends its URL's host as SNI, and `*.sandbox.localhost` does not resolve here).
CERT_NAMES = (f"*.{DOMAIN}", DOMAIN, "localhost")


@contextmanager
def certificate(names: tuple[str, ...] = CERT_NAMES):
    """A CA and a leaf for `names` in a temporary folder, as tests/tlsutil.py makes them; yields a Certificate."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)
    valid = {"not_valid_before": now - datetime.timedelta(hours=1), "not_valid_after": now + datetime.timedelta(days=2)}

    def build(subject: str, issuer: x509.Name | None, key, signer, ext: x509.ExtensionType, critical: bool):
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
        b = x509.CertificateBuilder(
            subject_name=name,
            issuer_name=issuer or name,
            public_key=key.public_key(),
            serial_number=x509.random_serial_number(),
            **valid,
        )
        return b.add_extension(ext, critical=critical).sign(signer, hashes.SHA256())

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = build("edge bench CA", None, ca_key, ca_key, x509.BasicConstraints(ca=True, path_length=None), True)
    key = ec.generate_private_key(ec.SECP256R1())
    sans = x509.SubjectAlternativeName([x509.DNSName(n) for n in names])
    leaf = build(names[0], ca.subject, key, ca_key, sans, False)
    pem = serialization.Encoding.PEM
    with tempfile.TemporaryDirectory(prefix="edge-bench-tls-") as d:
        folder = Path(d)  # read by edge and by nginx's master, both run as this user
        (folder / "ca.pem").write_bytes(ca.public_bytes(pem))
        (folder / "fullchain.pem").write_bytes(leaf.public_bytes(pem) + ca.public_bytes(pem))
        (folder / "privkey.pem").write_bytes(
            key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        )
        os.chmod(folder / "privkey.pem", 0o600)
        yield Certificate(folder / "ca.pem", folder / "fullchain.pem", folder / "privkey.pem", names)


# --- what the proxies complained about -------------------------------------------------------------

#: One entry per proxy process that logged a warning or worse: {"proxy", "lines", "last"}. bench/run.py
#: files them under the scenario that was running.
LOGS: list[dict] = []
_BAD = re.compile(r'"level":"(warning|error|critical)"|Traceback|\[(warn|error|crit|alert|emerg)\]')


def _collect(name: str, path: Path) -> None:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return
    bad = [ln for ln in lines if _BAD.search(ln)]
    if bad:
        LOGS.append({"proxy": name, "lines": len(bad), "last": [ln[:300] for ln in bad[-5:]]})


# --- the two proxies ----------------------------------------------------------------------------------


_METRIC = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)", re.M)


def metric(text: str, name: str) -> float | None:
    """The value of `name` in Prometheus text (summed over its labels); None when it is not there."""
    values = [float(v) for n, _, v in _METRIC.findall(text) if n == name]
    return sum(values) if values else None


@dataclass(frozen=True)
class Admin:
    """A running edge's admin API: its address and the bearer token it was started with."""

    url: str
    token: str

    def metric(self, name: str, timeout: float = 5) -> float | None:
        """One figure of its /metrics (None when it does not report that one)."""
        req = urllib.request.Request(f"{self.url}/metrics", headers={"Authorization": f"Bearer {self.token}"})
        with urllib.request.urlopen(req, timeout=timeout) as answer:
            return metric(answer.read().decode(), name)


@dataclass(frozen=True)
class Proxy:
    name: str
    port: int
    pid: int  # the process that holds client connections (nginx: the worker)
    tls_port: int = 0  # its HTTPS port when started with a certificate; 0: none
    admin: Admin | None = None  # edge's admin API (an edge that has one); nginx: None

    def host(self, be: Backend, kind: str = "http") -> str:
        """The Host header a client sends through this proxy to reach the backend's `kind` server."""
        if self.name == "nginx":
            return f"127.0.0.1:{self.port}"
        return be.edge_host({"http": be.port, "sink": be.sink_port, "ws": be.ws_port}[kind])


@cache
def edge_flags() -> frozenset[str]:
    """The long flags `edge serve` accepts in this checkout (the harness adapts to new ones)."""
    out = subprocess.run(
        [sys.executable, "-m", "edge", "serve", "--help"],
        capture_output=True,
        text=True,
        cwd=EDGE_SRC,
        env=_edge_env(),
    ).stdout
    return frozenset(re.findall(r"(--[a-z][a-z0-9-]*)", out))


@cache
def edge_config_keys() -> frozenset[str]:
    """The config keys this checkout's edge knows, dotted (`workers`, `http.fast_lane`)."""
    code = (
        "import dataclasses as d, edge.config as c\n"
        "cfg = c.Config()\n"
        "for f in d.fields(cfg):\n"
        "    v = getattr(cfg, f.name)\n"
        "    print(f.name, *(f'{f.name}.{g.name}' for g in (d.fields(v) if d.is_dataclass(v) else ())))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=EDGE_SRC, env=_edge_env())
    return frozenset(done.stdout.split())


def toml(config: dict) -> str:
    """A config for `edge serve --config` from {"key": value, "table": {"key": value}}.

    Values are scalars, or lists of them or of flat dicts (written as inline tables).
    """

    def value(v: object) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, int | float):
            return repr(v)
        if isinstance(v, list | tuple):  # `certs = [{cert = "...", key = "..."}]`: inline tables
            return "[" + ", ".join(value(x) for x in v) + "]"
        if isinstance(v, dict):
            return "{" + ", ".join(f"{k} = {value(x)}" for k, x in v.items()) + "}"
        return json.dumps(str(v))  # a TOML basic string is a JSON string for what the harness writes

    lines = [f"{k} = {value(v)}" for k, v in config.items() if not isinstance(v, dict)]
    for table, keys in config.items():
        if isinstance(keys, dict):
            lines += [f"[{table}]", *(f"{k} = {value(v)}" for k, v in keys.items())]
    return "\n".join(lines) + "\n"


def edge_tls_config(tls_port: int, tls: Certificate) -> dict:
    """edge's [https] table: a listener on loopback serving the run's certificate."""
    return {"https": {"listen": f"127.0.0.1:{tls_port}", "certs": [{"cert": str(tls.cert), "key": str(tls.key)}]}}


@contextmanager
def edge(
    backend_host: str,
    workers: int | None = None,
    cpu: str = PROXY_CPU,
    config: dict | None = None,
    access_log: Path | None = None,
):
    """Run `edge serve` pinned to `cpu`, with one sandbox at backend_host. Yields (port, process, Admin).

    `config` ({"http": {"fast_lane": False}}) goes to it as a --config file; an `https.listen` in it
    is waited for too. Without `access_log` it runs with --no-access-log (every scenario but
    `logged`); with it, `--access-log <access_log>` and otherwise its defaults. The Admin is its admin
    API (a free loopback port, a token made for this run), None for an edge without --admin. Its
    stderr goes to a file; warnings, errors and tracebacks in it are kept in LOGS when it stops.
    """
    with tempfile.TemporaryDirectory(prefix="edge-bench-") as d:
        token = secrets.token_hex(16)
        env = _edge_env({"EDGE_STATE_DIR": d, "EDGE_ADMIN_TOKEN": token})
        subprocess.run(
            [sys.executable, "-m", "edge", "sandbox", "add", SANDBOX, "--address", backend_host],
            env=env,
            check=True,
            capture_output=True,
            cwd=EDGE_SRC,
        )
        port = free_port()
        extra = ["--access-log", str(access_log)] if access_log else ["--no-access-log"]
        admin = None
        if "--admin" in edge_flags():
            admin_port = free_port()
            admin = Admin(f"http://127.0.0.1:{admin_port}", token)
            extra += ["--admin", f"127.0.0.1:{admin_port}"]
        if workers is not None:
            if "--workers" not in edge_flags():
                raise RuntimeError("this edge has no `serve --workers` yet")
            extra += ["--workers", str(workers)]
        if config:
            (Path(d) / "edge.toml").write_text(toml(config))
            extra += ["--config", str(Path(d) / "edge.toml")]
        err = open(Path(d) / "edge.err", "wb")  # noqa: SIM115 (closed when the process has stopped)
        proc = subprocess.Popen(
            [
                "taskset",
                "-c",
                cpu,
                sys.executable,
                "-m",
                "edge",
                "serve",
                "--http",
                f"127.0.0.1:{port}",
                "--dns",
                "127.0.0.1:0",
                *extra,
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=err,
            cwd=EDGE_SRC,
        )
        try:
            wait_port("127.0.0.1", port)
            if https := (config or {}).get("https", {}).get("listen"):
                wait_port("127.0.0.1", int(https.rpartition(":")[2]))
            yield port, proc, admin
        finally:
            _stop(proc)
            err.close()
            _collect("edge", Path(d) / "edge.err")


@contextmanager
def proxy(
    name: str,
    be: Backend,
    workers: int | None = None,
    cpu: str = PROXY_CPU,
    config: dict | None = None,
    tls: Certificate | None = None,
    access_log: Path | None = None,
):
    """A fresh edge or nginx proxy in front of `be`, pinned to `cpu`; `config` is edge's (see edge()).

    With `tls`, it also serves HTTPS on `Proxy.tls_port` with that certificate (the same for both).
    With `access_log`, it writes its access log to that file, each in its default format (edge: JSON
    lines; nginx: `combined`); without, neither logs requests.
    """
    tls_port = free_port() if tls else 0
    if name == "edge":
        if tls:
            config = {**(config or {}), **edge_tls_config(tls_port, tls)}
        with edge(be.host, workers, cpu, config, access_log) as (port, proc, admin):
            yield Proxy("edge", port, proc.pid, tls_port, admin)
    else:
        port = free_port()
        tls_conf = NGINX_TLS.format(tls_port=tls_port, cert=tls.cert, key=tls.key, ciphers=TLS12_CIPHERS) if tls else ""
        with nginx(
            NGINX_PROXY,
            cpu,
            port=port,
            tls=tls_conf,
            access_log=f"access_log {access_log};" if access_log else "access_log off;",
            backend_host=be.host,
            backend_port=be.port,
            sink_port=be.sink_port,
            ws_port=be.ws_port,
        ) as (_, master):
            try:
                wait_port("127.0.0.1", port)
                if tls:
                    wait_port("127.0.0.1", tls_port)
                yield Proxy("nginx", port, nginx_worker(master), tls_port)
            finally:
                _collect("nginx", _ / "proxy.err")


# --- wrk ----------------------------------------------------------------------------------------------

_WRK_RPS = re.compile(r"Requests/sec:\s+([\d.]+)")
_WRK_LAT = re.compile(r"^\s+(50|75|90|99)%\s+([\d.]+)(us|ms|s)\s*$", re.M)
_WRK_TOTAL = re.compile(r"(\d+) requests in")
_UNIT = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def parse_wrk(out: str) -> dict:
    """wrk --latency output -> req/s, latency percentiles in ms, requests, non-2xx and socket errors."""
    m = _WRK_RPS.search(out)
    if not m:
        raise RuntimeError(f"wrk printed no rate:\n{out}")
    lat = {f"p{p}": float(v) * _UNIT[u] for p, v, u in _WRK_LAT.findall(out)}
    total = _WRK_TOTAL.search(out)
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    return {
        "rps": float(m.group(1)),
        **lat,
        "requests": int(total.group(1)) if total else 0,
        "non2xx": int(bad.group(1)) if bad else 0,
        "socket_errors": sum(int(x) for x in errors.groups()) if errors else 0,
    }


def wrk(url: str, host: str, connections: int, seconds: float, threads: int = 1, cpu: str = LOAD_CPU) -> dict:
    """Run wrk on the load core (bounded: -d plus a hard timeout)."""
    need("wrk")
    secs = max(1, round(seconds))
    out = subprocess.run(
        [
            "taskset",
            "-c",
            cpu,
            "wrk",
            f"-t{threads}",
            f"-c{connections}",
            f"-d{secs}s",
            "--timeout",
            "5s",
            "--latency",
            "-H",
            f"Host: {host}",
            url,
        ],
        capture_output=True,
        text=True,
        timeout=secs + 30,
    ).stdout
    return parse_wrk(out)


# --- statistics ---------------------------------------------------------------------------------------


def median(values: list[float]) -> float:
    s = sorted(values)
    n = len(s)
    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2


def spread(values: list[float]) -> dict:
    """Median, min and max of a list of runs."""
    return {"median": median(values), "min": min(values), "max": max(values), "runs": list(values)}
