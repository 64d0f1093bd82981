"""The command line of bench/load.py: argparse, and pure parsers for the values it takes.

Every parser raises ValueError with a sentence naming the bad part; `parse()` turns that into
argparse's usage error (exit 2), so a typo in `--mix` or `--threshold` stops the run before it
registers a sandbox or sends a request.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

SCENARIOS = ("small", "newconn", "download", "upload", "ws", "sse", "churn")
#: Scenarios that hold a connection for a while; in open-loop mode they run beside the connection pool.
SESSIONS = ("ws", "sse", "churn")


@dataclass(frozen=True, slots=True)
class Sandbox:
    id: str
    port: int
    token: str | None = None
    address: str | None = None  # known when this run registered it


@dataclass(frozen=True, slots=True)
class Target:
    """Where to connect (an HTTP or HTTPS listener) and what the Host header carries besides the sandbox."""

    scheme: str
    host: str  # as written in the URL
    connect: str  # the address actually connected to (--resolve, else the URL's host)
    port: int
    suffix: str  # ":8080" appended to sandbox hosts, "" on the scheme's default port

    @property
    def tls(self) -> bool:
        return self.scheme == "https"


def target(url: str, resolve: str | None = None) -> Target:
    """`http://127.0.0.1:8080`, `https://edge.example.com` (+ `--resolve 203.0.113.10[:443]`)."""
    parts = urlsplit(url if "://" in url else "http://" + url)
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"{url}: the scheme must be http or https")
    if not parts.hostname:
        raise ValueError(f"{url}: no host")
    default = 443 if parts.scheme == "https" else 80
    port = parts.port or default
    connect = parts.hostname
    if resolve:
        if resolve.startswith("["):  # [2001:db8::1]:443
            connect, _, rport = resolve[1:].partition("]")
            rport = rport.lstrip(":")
        elif resolve.count(":") == 1:
            connect, _, rport = resolve.partition(":")
        else:  # an IPv4 address, or IPv6 without a port
            connect, rport = resolve, ""
        if rport:
            port = int(rport)
    suffix = "" if (parts.port or default) == default else f":{parts.port}"
    return Target(parts.scheme, parts.hostname, connect, port, suffix)


def hostport(text: str, default_port: int | None = None) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep:
        if default_port is None:
            raise ValueError(f"{text}: expected ADDR:PORT")
        return text, default_port
    return host.strip("[]"), int(port)


def mix(text: str) -> dict[str, float]:
    """`small=90,ws=5,sse=5` -> weights; a bare name weighs 1."""
    out: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, _, weight = part.partition("=")
        name = name.strip()
        if name not in SCENARIOS:
            raise ValueError(f"--mix: unknown scenario {name!r} (known: {', '.join(SCENARIOS)})")
        w = float(weight) if weight else 1.0
        if w < 0 or w != w:
            raise ValueError(f"--mix: {name} has a negative weight")
        out[name] = out.get(name, 0.0) + w
    if not out or sum(out.values()) <= 0:
        raise ValueError("--mix: no scenario has a positive weight")
    return {k: v for k, v in out.items() if v > 0}


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmg]i?b?|b)?\s*$", re.I)


def size(text: str) -> int:
    """Bytes: `100`, `64KiB`, `1MiB`, `1M` (10^6), `2GiB`."""
    m = _SIZE.match(text)
    if not m:
        raise ValueError(f"{text!r} is not a size (e.g. 100, 64KiB, 1MiB, 1M)")
    unit = (m.group(2) or "b").lower().rstrip("b") or ""
    factor = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "ki": 1 << 10, "mi": 1 << 20, "gi": 1 << 30}[unit]
    return int(float(m.group(1)) * factor)


def seconds(text: str) -> float:
    """`60`, `60s`, `2m`, `500ms`."""
    m = re.match(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$", text)
    if not m:
        raise ValueError(f"{text!r} is not a duration (e.g. 60, 60s, 2m, 500ms)")
    return float(m.group(1)) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600, None: 1}[m.group(2)]


def rate(text: str) -> float:
    value = float(text.removesuffix("/s"))
    if value <= 0:
        raise ValueError("a rate must be positive")
    return value


def pick(text: str) -> float:
    """`uniform` -> 0; `zipf` -> 1.0; `zipf:1.2` -> 1.2: the Zipf exponent s (weight of rank k is 1/k^s)."""
    if text == "uniform":
        return 0.0
    name, _, s = text.partition(":")
    if name != "zipf":
        raise ValueError(f"--pick: {text!r} is neither uniform nor zipf[:S]")
    value = float(s) if s else 1.0
    if value <= 0:
        raise ValueError("--pick: the Zipf exponent must be positive")
    return value


def addresses(text: str) -> list[str]:
    """`127.0.0.2`, `127.1.0.1-127.1.3.232`, `127.1.0.0/24` (its hosts), comma-separated, in order."""
    out: list[str] = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        if "/" in part:
            out += [str(a) for a in ipaddress.ip_network(part, strict=False).hosts()]
        elif "-" in part:
            first, last = (ipaddress.ip_address(p.strip()) for p in part.split("-", 1))
            if int(last) < int(first) or int(last) - int(first) > 1 << 16:
                raise ValueError(f"{part}: the range is reversed or longer than 65536")
            out += [str(ipaddress.ip_address(int(first) + i)) for i in range(int(last) - int(first) + 1)]
        else:
            out.append(str(ipaddress.ip_address(part)))
    if not out:
        raise ValueError("no address given")
    return out


def ports(text: str) -> list[int]:
    """`3000`, `3000-3009`, `3000,4000`."""
    out: list[int] = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        first, _, last = part.partition("-")
        lo, hi = int(first), int(last or first)
        if not 0 <= lo <= hi <= 65535:
            raise ValueError(f"{part}: not a port or a port range")
        out += range(lo, hi + 1)
    if not out:
        raise ValueError("no port given")
    return out


def sandboxes_file(text: str) -> list[Sandbox]:
    """Lines `ID:PORT` or `ID:PORT:TOKEN` (a private sandbox's traffic token); `#` comments, blank lines."""
    out = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        fields = line.split(":")
        if len(fields) not in (2, 3) or not fields[0] or not fields[1].isdigit():
            raise ValueError(f"line {number}: {raw.strip()!r} is not ID:PORT or ID:PORT:TOKEN")
        port = int(fields[1])
        if not 1 <= port <= 65535:
            raise ValueError(f"line {number}: port {port} out of range")
        out.append(Sandbox(fields[0].lower(), port, fields[2] if len(fields) == 3 and fields[2] else None))
    if not out:
        raise ValueError("the sandboxes file names no sandbox")
    return out


# --- thresholds ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Threshold:
    text: str
    scope: str  # "all", a scenario, or "dns"
    metric: str  # p50 p90 p99 p99.9 max mean errors rate
    op: str
    value: float  # ms for latency; a fraction for errors%; a count for errors; per second for rate
    percent: bool = False

    def holds(self, actual: float) -> bool:
        return {
            "<": actual < self.value,
            "<=": actual <= self.value,
            ">": actual > self.value,
            ">=": actual >= self.value,
        }[self.op]


_THRESHOLD = re.compile(
    r"^(?:(?P<scope>[a-z_]+)\.)?(?P<metric>p\d+(?:\.\d+)?|max|mean|errors|rate)"
    r"\s*(?P<op><=|>=|<|>)\s*(?P<value>\d+(?:\.\d+)?)\s*(?P<unit>ms|us|s|%|/s)?$"
)


def thresholds(text: str) -> list[Threshold]:
    """`p99<50ms,errors<0.1%` ; `small.p99<20ms`, `dns.errors<10`, `rate>=900/s`, `ws.p50<5ms`."""
    out = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        m = _THRESHOLD.match(part)
        if not m:
            raise ValueError(f"--threshold: cannot read {part!r} (e.g. p99<50ms, errors<0.1%, small.p99<20ms)")
        scope = m["scope"] or "all"
        if scope not in ("all", "dns", *SCENARIOS):
            raise ValueError(f"--threshold: {part!r}: unknown scope {scope!r}")
        metric, unit, value = m["metric"], m["unit"], float(m["value"])
        percent = False
        if metric.startswith("p") or metric in ("max", "mean"):
            if unit not in (None, "ms", "us", "s"):
                raise ValueError(f"--threshold: {part!r}: a latency takes ms, us or s")
            value *= {None: 1, "ms": 1, "us": 0.001, "s": 1000}[unit]
            if metric.startswith("p") and not 0 < float(metric[1:]) <= 100:
                raise ValueError(f"--threshold: {part!r}: a percentile is between 0 and 100")
        elif metric == "errors":
            if unit not in (None, "%"):
                raise ValueError(f"--threshold: {part!r}: errors take a count or a percentage")
            percent = unit == "%"
        elif unit not in (None, "/s"):
            raise ValueError(f"--threshold: {part!r}: a rate is per second")
        out.append(Threshold(part, scope, metric, m["op"], value, percent))
    return out


# --- the command line ----------------------------------------------------------------------------------

EXAMPLES = """examples:
  # 1,000 sandboxes registered for the run (and removed after), a fleet of backends, 60 s at 2,000 req/s
  .venv/bin/python bench/sandboxd.py --hosts 127.1.0.1-127.1.3.232 --ports 3000 &
  .venv/bin/python bench/load.py --edge http://127.0.0.1:8080 --admin http://127.0.0.1:8081 \\
      --admin-token "$(cat ~/.local/state/edge/admin-token)" --sandboxes 1000 \\
      --sandbox-address 127.1.0.1-127.1.3.232 --port 3000 --rate 2000 --duration 60 --ramp 5 \\
      --mix small=90,ws=5,sse=5 --threshold 'p99<50ms,errors<0.1%' --out /tmp/load
  # sandboxes that exist already (lines ID:PORT), closed loop, 64 connections, over HTTPS
  .venv/bin/python bench/load.py --edge https://sandbox.example.com --resolve 203.0.113.10 \\
      --domain sandbox.example.com --sandboxes ids.txt --connections 64 --duration 30
"""


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="bench/load.py",
        description="Load for a running edge: requests to <port>-<sandbox>.<domain> by scenario mix, "
        "open-loop (--rate) or closed-loop (--connections), DNS beside it, a report and thresholds.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    t = ap.add_argument_group("target")
    t.add_argument("--edge", required=True, metavar="URL", help="the edge's HTTP or HTTPS listener")
    t.add_argument("--resolve", metavar="ADDR[:PORT]", help="connect here instead of resolving the URL's host")
    t.add_argument("--domain", default="sandbox.localhost", help="the sandbox domain (default sandbox.localhost)")
    t.add_argument("--insecure", action="store_true", help="HTTPS: do not verify the edge's certificate")
    t.add_argument("--cacert", metavar="FILE", help="HTTPS: trust this CA bundle (default: the system's)")
    s = ap.add_argument_group("sandboxes")
    s.add_argument(
        "--sandboxes",
        required=True,
        metavar="FILE|N",
        help="a file of ID:PORT[:TOKEN] lines, or N sandboxes this run registers through --admin and removes after",
    )
    s.add_argument("--admin", metavar="URL", help="the admin API (to register --sandboxes N, and for churn)")
    s.add_argument(
        "--admin-token",
        metavar="T",
        default=os.environ.get("EDGE_ADMIN_TOKEN"),
        help="its bearer token (default $EDGE_ADMIN_TOKEN)",
    )
    s.add_argument(
        "--sandbox-address",
        default="127.0.0.2",
        metavar="SPEC",
        help="addresses of the sandboxes registered here (and by churn), used in turn: 127.0.0.2, "
        "127.1.0.1-127.1.3.232, 127.1.0.0/24 (default 127.0.0.2)",
    )
    s.add_argument("--port", type=int, default=3000, help="the port in registered sandboxes' URLs (default 3000)")
    s.add_argument(
        "--private",
        type=float,
        nargs="?",
        const=1.0,
        default=0.0,
        metavar="SHARE",
        help="make this share of registered sandboxes private (default 0; alone: all) and send their tokens",
    )
    s.add_argument("--token", help="a traffic access token sent to every sandbox without one of its own")
    s.add_argument("--pick", default="uniform", help="sandbox choice: uniform, or zipf[:S] (a few hot ones)")
    w = ap.add_argument_group("load")
    w.add_argument(
        "--mix", default="small=100", help=f"scenario weights, e.g. small=90,ws=5,sse=5 ({', '.join(SCENARIOS)})"
    )
    w.add_argument("--rate", metavar="R/s", help="open loop: start R requests per second whatever the answers do")
    w.add_argument(
        "--connections",
        type=int,
        metavar="N",
        help="closed loop (no --rate): N users, each sending its next request when the last ended; "
        "with --rate: at most N keep-alive connections (default 64)",
    )
    w.add_argument("--duration", default="10", help="seconds of load, ramp included (default 10)")
    w.add_argument("--ramp", default="0", help="seconds over which the rate (or the users) rise from 0")
    w.add_argument(
        "--timeout", default="10", help="longest wait for an answer before it counts as timeout (default 10)"
    )
    w.add_argument("--procs", type=int, default=1, help="worker processes sharing the load (default 1)")
    w.add_argument("--seed", type=int, help="random seed (sandbox choice, scenario order)")
    c = ap.add_argument_group("scenarios")
    c.add_argument("--path", default="/", help="small, newconn: the path requested (default /)")
    c.add_argument("--download-size", default="1MiB", help="download: body size (default 1MiB)")
    c.add_argument("--upload-size", default="1MiB", help="upload: body size (default 1MiB)")
    c.add_argument("--ws-messages", type=int, default=10, help="ws: echoed messages per session (default 10)")
    c.add_argument("--ws-size", default="64", help="ws: message size (default 64)")
    c.add_argument("--ws-interval", default="0.1", help="ws: seconds between messages (default 0.1)")
    c.add_argument("--sse-events", type=int, default=10, help="sse: events per stream (default 10)")
    c.add_argument("--sse-interval", default="0.2", help="sse: seconds between events (default 0.2)")
    c.add_argument(
        "--churn-poll", default="0.005", help="churn: seconds between probes of a new sandbox (default 0.005)"
    )
    d = ap.add_argument_group("DNS")
    d.add_argument("--dns", metavar="ADDR:PORT", help="also query this DNS server for sandbox names")
    d.add_argument("--qps", type=float, default=100.0, help="DNS queries per second, open loop (default 100)")
    o = ap.add_argument_group("output")
    o.add_argument("--out", metavar="DIR", help="write load.json, load.md and PNG plots here")
    o.add_argument(
        "--threshold", default="", help="fail (exit 1) unless all hold: p99<50ms,errors<0.1%%,small.p99<20ms"
    )
    o.add_argument(
        "--edge-pid",
        type=int,
        metavar="PID",
        help="a local edge's process: its CPU (with its workers') is sampled each second into the report",
    )
    o.add_argument("--no-plots", action="store_true")
    o.add_argument("--quiet", action="store_true", help="no progress lines")
    o.add_argument("--keep", action="store_true", help="leave the registered sandboxes in place at the end")
    return ap


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    """The validated options; values converted (seconds, sizes, weights, thresholds, the target)."""
    ap = build_parser()
    a = ap.parse_args(argv)
    try:
        a.target = target(a.edge, a.resolve)
        a.mix = mix(a.mix)
        a.zipf = pick(a.pick)
        a.duration = seconds(a.duration)
        a.ramp = seconds(a.ramp)
        a.timeout = seconds(a.timeout)
        a.ws_interval = seconds(a.ws_interval)
        a.sse_interval = seconds(a.sse_interval)
        a.churn_poll = seconds(a.churn_poll)
        a.download_size = size(a.download_size)
        a.upload_size = size(a.upload_size)
        a.ws_size = size(a.ws_size)
        a.thresholds = thresholds(a.threshold)
        a.rate = rate(a.rate) if a.rate else None
        a.addresses = addresses(a.sandbox_address)
        a.admin_target = target(a.admin) if a.admin else None
        a.dns_addr = hostport(a.dns) if a.dns else None
    except ValueError as exc:
        ap.error(str(exc))
    if a.sandboxes.isdigit():
        a.register, a.sandbox_list = int(a.sandboxes), None
        if a.register < 1:
            ap.error("--sandboxes N: N must be at least 1")
        if not a.admin or not a.admin_token:
            ap.error("--sandboxes N registers sandboxes: it needs --admin URL and --admin-token (or $EDGE_ADMIN_TOKEN)")
    else:
        try:
            a.register, a.sandbox_list = 0, sandboxes_file(Path(a.sandboxes).read_text())
        except OSError as exc:
            ap.error(f"--sandboxes: {exc}")
        except ValueError as exc:
            ap.error(f"--sandboxes {a.sandboxes}: {exc}")
    if "churn" in a.mix and (not a.admin or not a.admin_token):
        ap.error("the churn scenario registers sandboxes: it needs --admin URL and --admin-token")
    if a.connections is None:
        a.connections = 64 if a.rate else 16
    if a.connections < 1 or a.procs < 1:
        ap.error("--connections and --procs must be at least 1")
    if a.connections < a.procs:
        ap.error("--connections must be at least --procs (each process gets its share)")
    if a.duration <= 0 or a.ramp < 0 or a.ramp > a.duration or a.timeout <= 0:
        ap.error("--duration must be positive, --ramp between 0 and --duration, --timeout positive")
    if not 0 <= a.private <= 1:
        ap.error("--private: a share between 0 and 1")
    if a.dns and a.qps <= 0:
        ap.error("--qps must be positive")
    for th in a.thresholds:
        if th.scope != "all" and th.scope != "dns" and th.scope not in a.mix:
            ap.error(f"--threshold {th.text}: scenario {th.scope} is not in --mix")
        if th.scope == "dns" and not a.dns:
            ap.error(f"--threshold {th.text}: no --dns")
    return a
