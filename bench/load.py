"""Load for a running edge, local or remote: requests to `<port>-<sandbox>.<domain>` by scenario mix.

    .venv/bin/python bench/load.py --edge http://127.0.0.1:8080 --sandboxes ids.txt --rate 1000 --duration 30
    .venv/bin/python bench/load.py --help                    every option, with examples

What it does, in order: reads the options (a bad one stops it here, exit 2); registers `--sandboxes N`
sandboxes through the admin API (`load<hex>-<i>`) and waits until the edge routes them; forks
`--procs` worker processes that share the load (bench/loadlib/driver.py) and prints one progress line
a second; writes the report (`--out DIR`: load.json, load.md, latency.png, throughput.png,
errors.png) and a summary; removes the sandboxes it registered; exits 1 when a `--threshold` was
missed, 3 when the run could not be made (registration refused, a worker died), else 0.

bench/README.md ("load.py") has a worked example and what one generator process can produce.
"""

from __future__ import annotations

import datetime
import multiprocessing
import multiprocessing.connection
import os
import platform
import resource
import secrets
import shlex
import socket
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import trio  # noqa: E402

from bench.loadlib import options, report, wire  # noqa: E402
from bench.loadlib.admin import Admin, AdminError, register, remove  # noqa: E402
from bench.loadlib.conn import Conn, LoadError, client_context  # noqa: E402
from bench.loadlib.driver import Plan, worker  # noqa: E402
from bench.loadlib.hist import Interval  # noqa: E402
from bench.loadlib.scenarios import session_seconds  # noqa: E402

EXIT_THRESHOLD, EXIT_FAILED = 1, 3


def say(text: str) -> None:
    print(f"load: {text}", file=sys.stderr, flush=True)


def _raise_nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else 65536
    if soft < want:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
        except (ValueError, OSError):
            pass


def _resolve(t: options.Target) -> options.Target:
    """The connect address as an IP, looked up once (not per connection, and not by the workers)."""
    try:
        info = socket.getaddrinfo(t.connect, t.port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        say(f"cannot resolve {t.connect}: {exc} (--resolve ADDR skips DNS)")
        sys.exit(EXIT_FAILED)
    return replace(t, connect=info[0][4][0])


# --- before and after the load ---------------------------------------------------------------------------


async def _routable(o, sandboxes: list[options.Sandbox], seconds: float = 15.0) -> None:
    """Wait until the edge routes the registered sandboxes (its catalog poll): the first, middle and last
    answer something other than sandbox_not_found."""
    ssl_ctx = client_context(o.target, o.insecure, o.cacert)
    probes = {sandboxes[0], sandboxes[len(sandboxes) // 2], sandboxes[-1]}
    deadline = trio.current_time() + seconds
    for sb in probes:
        host = wire.host_for(sb.port, sb.id, o.domain, o.target.suffix)
        extra = [("e2b-traffic-access-token", sb.token)] if sb.token else []
        while True:
            try:
                conn = await Conn.open(o.target, deadline, ssl_ctx, host.partition(":")[0])
                try:
                    await conn.send(wire.request_head("GET", o.path, host, [*extra, ("connection", "close")]))
                    with trio.fail_after(max(0.1, deadline - trio.current_time())):
                        head, _, _ = await conn.response()
                finally:
                    conn.close()
                if head.edge_error != "sandbox_not_found":
                    break
            except LoadError as exc:  # not a catalog that lags: waiting would not help; the run will count it
                say(f"warning: probing {sb.id}: {exc.kind}; starting anyway")
                return
            except trio.TooSlowError:
                pass
            if trio.current_time() > deadline:
                say(f"warning: {sb.id} still not routable after {seconds:g} s; starting anyway")
                return
            await trio.sleep(0.05)


async def _churn_templates(admin: Admin, sandboxes: list[options.Sandbox]) -> list[options.Sandbox]:
    """Churn's new sandboxes copy the address of existing ones: look up a few."""
    out = []
    for sb in sandboxes[:8]:
        doc = await admin.get(sb.id)
        if doc and doc.get("address"):
            out.append(replace(sb, address=doc["address"]))
    if not out:
        raise AdminError("churn: none of the first sandboxes of the file is known to the admin API")
    return out


# --- the run -----------------------------------------------------------------------------------------------


def _machine() -> str:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} CPUs ({model or platform.machine()}), Python {platform.python_version()}"


def _commit() -> str:
    try:
        out = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
        return out.stdout.strip()
    except OSError:
        return ""


def _meta(o, argv: list[str], sandboxes: list[options.Sandbox]) -> dict:
    mode = (
        f"open loop, {o.rate:,g} req/s, at most {o.connections} keep-alive connections"
        if o.rate
        else f"closed loop, {o.connections} connections"
    )
    if o.dns_addr:
        mode += f"; DNS {o.qps:,g} q/s to {o.dns}"
    return {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "command": "bench/load.py " + shlex.join(argv),
        "edge": o.edge,
        "domain": o.domain,
        "mode": mode,
        "rate": o.rate,
        "connections": o.connections,
        "duration": o.duration,
        "ramp": o.ramp,
        "timeout": o.timeout,
        "procs": o.procs,
        "mix": ",".join(f"{k}={v:g}" for k, v in o.mix.items()),
        "pick": o.pick,
        "sandboxes": len(sandboxes),
        "sandbox_source": "registered through the admin API for this run" if o.register else f"file {o.sandboxes}",
        "private": sum(1 for s in sandboxes if s.token) if o.register else None,
        "dns": o.dns,
        "qps": o.qps if o.dns else None,
        "sizes": {"download": o.download_size, "upload": o.upload_size, "ws_message": o.ws_size},
        "machine": _machine(),
        "generator_commit": _commit(),
        "load_average_before": list(os.getloadavg()),
    }


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of a process and its descendants (edge's --workers), from /proc."""
    total, todo, seen = 0, [pid], 0
    while todo:
        p = todo.pop()
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            kids = Path(f"/proc/{p}/task/{p}/children").read_text().split()
        except OSError:
            continue
        seen += 1
        total += int(fields[11]) + int(fields[12])
        todo += [int(k) for k in kids]
    return total / os.sysconf("SC_CLK_TCK") if seen else None


def run(o, sandboxes: list[options.Sandbox], prefix: str) -> tuple[dict[int, Interval], dict, bool]:
    """Fork the workers, collect their seconds, print progress. (timeline, cpu samples, complete?)."""
    mp = multiprocessing.get_context("fork")
    t0 = time.monotonic() + 0.2 + 0.05 * o.procs
    readers, procs = {}, []
    for i in range(o.procs):
        r, w = mp.Pipe(duplex=False)
        p = mp.Process(target=worker, args=(Plan(o, sandboxes, i, o.procs, t0, prefix), w), daemon=True)
        p.start()
        w.close()
        readers[r] = i
        procs.append(p)
    timeline: dict[int, Interval] = {}
    cpu: dict[int, list[tuple[float, float]]] = {i: [] for i in range(o.procs)}
    done: set[int] = set()
    died: set[int] = set()
    last_line = 0
    longest = max(session_seconds(o, s) for s in o.mix)
    give_up = t0 + o.duration + o.timeout + longest + 30
    tty = sys.stderr.isatty()
    edge_cpu: dict[int, float] = {}
    edge_last = (time.monotonic(), cpu_seconds(o.edge_pid)) if o.edge_pid else None
    try:
        while len(done) < o.procs:
            for r in multiprocessing.connection.wait(list(readers), timeout=0.25):
                i = readers[r]
                try:
                    kind, _, seconds, sample = r.recv()
                except (EOFError, OSError):
                    died.add(i)
                    done.add(i)
                    del readers[r]
                    continue
                for sec, iv in seconds.items():
                    timeline.setdefault(sec, Interval()).merge(iv)
                cpu[i].append(sample)
                if kind == "done":
                    done.add(i)
                    del readers[r]
            now = int(time.monotonic() - t0)
            if edge_last and edge_last[1] is not None and time.monotonic() - edge_last[0] >= 1.0:
                sample = (time.monotonic(), cpu_seconds(o.edge_pid))
                if sample[1] is not None:
                    sec = int((edge_last[0] + sample[0]) / 2 - t0)
                    edge_cpu[sec] = 100 * (sample[1] - edge_last[1]) / (sample[0] - edge_last[0])
                edge_last = sample
            if not o.quiet and now > last_line and now >= 2 and now <= o.duration + 1:
                last_line = now
                pct = max(
                    (
                        100 * (b[1] - a[1]) / max(b[0] - a[0], 1e-9)
                        for s in cpu.values()
                        if len(s) >= 2
                        for a, b in [s[-2:]]
                    ),
                    default=None,
                )
                line = report.progress_line(timeline, now - 1, o.duration, pct, edge_cpu.get(now - 1))
                print(("\r\x1b[K" if tty else "") + line, end="" if tty else "\n", file=sys.stderr, flush=True)
            if time.monotonic() > give_up:
                say("workers did not finish in time; stopping them")
                died |= set(range(o.procs)) - done
                break
    except KeyboardInterrupt:
        say("interrupted: reporting what was measured so far")
        died |= set(range(o.procs)) - done
    finally:
        if tty and not o.quiet:
            print(file=sys.stderr)
        for p in procs:
            p.join(timeout=2)
            if p.is_alive():
                p.terminate()
                p.join(timeout=2)
    if died:
        say(f"worker process(es) {sorted(died)} ended without their final figures")
    cpu["edge"] = edge_cpu  # type: ignore[index]
    return timeline, cpu, not died


def _print_summary(doc: dict, written: list[Path]) -> None:
    lat = doc["latency_ms"] or {}
    ms = {k: report._fmt_ms(lat.get(k)) for k in ("p50", "p90", "p99", "p99.9", "max")}
    print(
        f"sent {doc['sent']:,}  answered {doc['answered']:,}  errors {doc['error_total']:,} "
        f"({100 * doc['error_rate']:.3f}%)  {doc['throughput']['answered_per_s']:,.0f} answered/s"
    )
    print(f"latency ms: p50 {ms['p50']}  p90 {ms['p90']}  p99 {ms['p99']}  p99.9 {ms['p99.9']}  max {ms['max']}")
    for kind, n in doc["errors"].items():
        print(f"  error {kind}: {n:,}")
    for name, block in doc["scenarios"].items():
        sl = block["latency_ms"] or {}
        print(
            f"  {name:>8}: sent {block['sent']:,} answered {block['answered']:,} errors {block['error_total']:,}"
            f"  p50 {report._fmt_ms(sl.get('p50'))} p99 {report._fmt_ms(sl.get('p99'))} ms"
        )
    if doc["dns"]:
        d = doc["dns"]
        dl = d["latency_ms"] or {}
        print(
            f"  {'dns':>8}: sent {d['sent']:,} answered {d['answered']:,} errors {d['error_total']:,} "
            f"{dict(d['errors']) or ''} p50 {report._fmt_ms(dl.get('p50'))} p99 {report._fmt_ms(dl.get('p99'))} ms"
        )
    for r in doc["thresholds"]:
        actual = "-" if r["actual"] is None else f"{r['actual']:.4g}"
        print(f"threshold {r['threshold']}: {actual} {'ok' if r['ok'] else 'FAILED'}")
    for path in written:
        print(f"wrote {path}")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    o = options.parse(argv)
    _raise_nofile()
    o.target = _resolve(o.target)
    if o.admin_target:
        o.admin_target = _resolve(o.admin_target)
    prefix = "load" + secrets.token_hex(3)
    admin = None
    if o.admin_target and o.admin_token:
        admin = Admin(o.admin_target, o.admin_token, client_context(o.admin_target, o.insecure, o.cacert))
    registered: list[str] = []
    o.churn_templates = []
    try:
        if o.register:
            say(f"registering {o.register:,} sandboxes through {o.admin} ...")
            started = time.monotonic()
            try:
                sandboxes = trio.run(register, admin, prefix, o.register, o.addresses, o.port, o.private)
            except AdminError as exc:
                registered = [s.id for s in getattr(exc, "made", [])]
                say(str(exc))
                return EXIT_FAILED
            registered = [s.id for s in sandboxes]
            say(f"registered {len(sandboxes):,} in {time.monotonic() - started:.1f} s; waiting until they route")
            trio.run(_routable, o, sandboxes)
        else:
            sandboxes = o.sandbox_list
            if "churn" in o.mix:
                try:
                    o.churn_templates = trio.run(_churn_templates, admin, sandboxes)
                except (AdminError, LoadError) as exc:
                    say(str(exc))
                    return EXIT_FAILED
        meta = _meta(o, argv, sandboxes)
        timeline, cpu, complete = run(o, sandboxes, prefix)
    finally:
        if registered and not o.keep:
            left = trio.run(remove, admin, registered)
            say(
                f"removed {len(registered) - len(left):,} sandboxes"
                + (f"; could not remove {left[:5]}" if left else "")
            )
    meta["load_average_after"] = list(os.getloadavg())
    meta["complete"] = complete
    doc = report.summary(timeline, meta, cpu)
    doc["thresholds"] = report.evaluate(o.thresholds, doc)
    doc["passed"] = all(r["ok"] for r in doc["thresholds"])
    written = report.write(doc, Path(o.out), not o.no_plots) if o.out else []
    _print_summary(doc, written)
    if not complete:
        return EXIT_FAILED
    return 0 if doc["passed"] else EXIT_THRESHOLD


if __name__ == "__main__":
    sys.exit(main())
