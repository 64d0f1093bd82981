"""bench/results/http.json -> a Markdown table and PNG plots (matplotlib, Agg: no display needed).

python bench/report.py        re-render http.md and the plots from the last http.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"

# (scenario key, path inside it, figure label, unit, True when higher is better)
ROWS = (
    ("small", (), "rps", "small requests", "req/s", True),
    ("small", (), "rps_per_cpu", "small requests per proxy CPU-second", "req/CPU-s", True),
    ("small", (), "p50", "small requests, latency p50", "ms", False),
    ("small", (), "p99", "small requests, latency p99", "ms", False),
    ("bulk", ("download",), "mbps", "100 MiB download", "MB/s", True),
    ("bulk", ("download",), "mbps_per_cpu", "100 MiB download per proxy CPU-second", "MB/CPU-s", True),
    ("bulk", ("upload",), "mbps", "100 MiB upload", "MB/s", True),
    ("bulk", ("upload",), "mbps_per_cpu", "100 MiB upload per proxy CPU-second", "MB/CPU-s", True),
    ("websocket", (), "mps", "WebSocket echo", "messages/s", True),
    ("websocket", (), "mps_per_cpu", "WebSocket echo per proxy CPU-second", "messages/CPU-s", True),
    ("idle", (), "bytes_per_connection", "memory per idle keep-alive connection", "bytes", False),
)


def fmt(v: float) -> str:
    if v >= 100:
        return f"{v:,.0f}"
    if v >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def _cell(s: dict) -> tuple[str, str]:
    return fmt(s["median"]), f"{fmt(s['min'])}-{fmt(s['max'])}"


def _errors(sc: dict, names=("edge", "nginx")) -> str:
    parts = []
    for name in names:
        counts = {k: sc.get(name, {}).get(k, 0) for k in ("non2xx", "socket_errors", "not_served")}
        bad = ", ".join(f"{k} {v}" for k, v in counts.items() if v)
        parts.append(f"{name}: {bad or 'none'}")
    return "; ".join(parts)


def _pct(side: dict, key: str, worst: bool = False) -> str:
    if key not in side:
        return "?"
    text = f"{side[key]['median']:.0f}"
    return f"{text} (max {side[key]['max']:.0f})" if worst else text


def _cpu_rows(sc: dict) -> list[str]:
    parts = [("small requests", sc.get("small"))]
    bulk = sc.get("bulk") or {}
    parts += [("100 MiB download", bulk.get("download")), ("100 MiB upload", bulk.get("upload"))]
    parts += [("WebSocket echo", sc.get("websocket"))]
    for c, lv in ((sc.get("sweep") or {}).get("levels") or {}).items():
        parts.append((f"sweep, {c} connections", lv))
    rows = []
    for label, s in parts:
        if not s or "proxy_cpu_pct" not in s.get("edge", {}) or "proxy_cpu_pct" not in s.get("nginx", {}):
            continue
        e, n = s["edge"], s["nginx"]
        rows.append(
            f"| {label} | {e['proxy_cpu_pct']['median']:.0f} | {n['proxy_cpu_pct']['median']:.0f} | "
            f"{_pct(e, 'irq_cpu_pct')} / {_pct(n, 'irq_cpu_pct')} | "
            f"{_pct(e, 'steal_cpu_pct')} / {_pct(n, 'steal_cpu_pct')} | "
            f"{_pct(e, 'others_cpu_pct', True)} / {_pct(n, 'others_cpu_pct', True)} | "
            f"{_pct(e, 'load_core_busy_pct')} / {_pct(n, 'load_core_busy_pct')} |"
        )
    return rows


def markdown(out: dict, plots: list[Path] = (), brief: bool = False) -> str:
    m, sc = out["meta"], out["scenarios"]
    lines = (
        []
        if brief
        else [
            f"# HTTP benchmark ({m['date']}, commit {m['commit']})",
            "",
            f"{m['cpus']} CPUs ({m['cpu_model']}), Python {m['python']}, {m['nginx']}, {m['wrk']}. "
            f"Proxies on CPU {m['proxy_cpu']}; load generator, clients and backend on CPU {m['load_cpu']}. "
            f"{m['args']['runs']} alternating runs per proxy; medians, min-max over runs, ratio of medians. "
            f"Load average before/after: {', '.join(f'{x:.2f}' for x in m['load_average_before'])} / "
            f"{', '.join(f'{x:.2f}' for x in m.get('load_average_after', ()))}.",
            "",
        ]
    )
    lines += [
        "| scenario | unit | edge median | edge min-max | nginx median | nginx min-max | edge / nginx |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for key, path, fig, label, unit, _higher in ROWS:
        s = sc.get(key)
        for p in path:
            s = (s or {}).get(p)
        if not s or "error" in s or fig not in s.get("edge", {}):
            why = (s or {}).get("error", "not run")
            lines.append(f"| {label} | {unit} | {why} | | | | |")
            continue
        e, n = _cell(s["edge"][fig]), _cell(s["nginx"][fig])
        lines.append(
            f"| {label} | {unit} | {e[0]} | {e[1]} | {n[0]} | {n[1]} | {s['ratio'].get(fig, 0):.3f} |"
        )
    lines.append("")
    lines.append("Ratios are edge / nginx: above 1 is better for edge on rates, worse on latency and memory.")
    notes = []
    if "small" in sc and "edge" in sc["small"]:
        notes.append(
            f"small requests: wrk -t1 -c{sc['small']['setup']['connections']} "
            f"-d{sc['small']['setup']['seconds']:g}s; errors {_errors(sc['small'])}"
        )
    if "bulk" in sc and "download" in sc["bulk"]:
        b = sc["bulk"]
        notes.append(
            f"bulk: {b['download']['setup']['bodies_per_run']} bodies of 100 MiB per run on one "
            f"connection; straight to the backend (no proxy, the ceiling on this machine): download "
            f"{fmt(b['download']['direct']['mbps']['median'])} MB/s, upload "
            f"{fmt(b['upload']['direct']['mbps']['median'])} MB/s; errors down {_errors(b['download'])}, "
            f"up {_errors(b['upload'])}"
        )
    if "websocket" in sc and "direct" in sc["websocket"]:
        w = sc["websocket"]
        st = w["setup"]
        notes.append(
            f"WebSocket: {st['connections']} connections x {st['in_flight_per_connection']} messages in "
            f"flight, {st['payload_bytes']}-byte payloads; straight to the echo server (no proxy, the "
            f"ceiling on this machine): {fmt(w['direct']['mps']['median'])} messages/s"
        )
    if "idle" in sc and "edge" in sc["idle"]:
        i = sc["idle"]
        notes.append(
            f"idle: {i['setup']['connections']:,} connections; RSS before -> after (medians, KiB): "
            f"edge {fmt(i['edge']['rss_before_kib']['median'])} -> {fmt(i['edge']['rss_after_kib']['median'])}, "
            f"nginx worker {fmt(i['nginx']['rss_before_kib']['median'])} -> "
            f"{fmt(i['nginx']['rss_after_kib']['median'])}; second request on 100 of them: "
            f"{_errors(i)}"
        )
    if notes:
        lines += [""] + [f"- {n}" for n in notes]

    cpu = _cpu_rows(sc)
    if cpu:
        lines += [
            "",
            "Where CPU 0 (the proxy core) went during each measurement, % of the core, medians over runs "
            "(pairs are edge runs / nginx runs). irq: interrupts and softirqs, mostly loopback packet work; "
            "steal: the hypervisor; others: any other process on this shared machine (max: the worst run). "
            "What is left is idle: the proxy was waiting on the load core. Last column: CPU 1 (wrk, clients, "
            "backend), near 100 when the figure is the load generator's limit.",
            "",
            "| scenario | edge CPU % | nginx CPU % | irq % | steal % | others % | load core busy % |",
            "|---|---:|---:|---:|---:|---:|---:|",
            *cpu,
        ]

    sw = sc.get("sweep")
    if sw and "levels" in sw:
        lines += [
            "",
            f"Throughput and latency against concurrency (wrk -t1, {sw['setup']['seconds']:g} s per point):",
            "",
            "| connections | edge req/s | nginx req/s | edge / nginx | per CPU-s, edge / nginx | edge p50 ms | nginx p50 ms "
            "| edge p99 ms | nginx p99 ms | errors (edge / nginx) |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
        ]
        for c, lv in sw["levels"].items():
            errs = " / ".join(
                str(lv[n].get("non2xx", 0) + lv[n].get("socket_errors", 0)) for n in ("edge", "nginx")
            )
            lines.append(
                f"| {c} | {fmt(lv['edge']['rps']['median'])} | {fmt(lv['nginx']['rps']['median'])} | "
                f"{lv['ratio']['rps']:.3f} | {lv['ratio'].get('rps_per_cpu', 0):.3f} | "
                f"{fmt(lv['edge']['p50']['median'])} | "
                f"{fmt(lv['nginx']['p50']['median'])} | {fmt(lv['edge']['p99']['median'])} | "
                f"{fmt(lv['nginx']['p99']['median'])} | {errs} |"
            )
    wk = sc.get("workers")
    if wk and "1 worker" in wk:
        lines += [
            "",
            "`edge serve --workers`: small requests (wrk -t1), 1 worker on core 0 against 2 workers on "
            "cores 0-1, which they share with wrk and the backend:",
            "",
            "| workers | req/s median | min-max | p99 ms |",
            "|---|---:|---:|---:|",
        ]
        for label in ("1 worker", "2 workers"):
            r = wk[label]
            lines.append(
                f"| {label} | {_cell(r['rps'])[0]} | {_cell(r['rps'])[1]} | {fmt(r['p99']['median'])} |"
            )
        lines.append(f"\n2 workers / 1 worker: {wk['ratio'].get('rps', 0):.2f}x")
    elif "workers" in sc and sc["workers"] is None:
        lines += ["", "`edge serve --workers`: not in this edge yet, so no 1-vs-2-worker figure."]
    mi = out.get("micro")
    if mi and mi.get("ns"):
        lines += [
            "",
            f"Pure stages in memory (bench/micro.py, {mi['setup']['request_bytes']}-byte request, "
            f"median of {mi['setup']['repeat']} x {mi['setup']['number']:,} calls):",
            "",
            "| stage | ns/request |",
            "|---|---:|",
        ]
        lines += [f"| {k} | {v:,.0f} |" for k, v in mi["ns"].items()]
        if mi.get("unavailable"):
            lines.append(f"\nUnavailable: {mi['unavailable']}")
    if plots and not brief:
        lines += [""] + [f"![{p.stem}]({p.name})" for p in plots]
    return "\n".join(lines) + "\n"


def plots(out: dict, folder: Path) -> list[Path]:
    """Throughput and latency against concurrency, edge beside nginx; [] when there is no sweep."""
    sw = out["scenarios"].get("sweep")
    if not sw or "levels" not in sw:
        return []
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    levels = [int(c) for c in sw["levels"]]
    lv = sw["levels"]
    colors = {"edge": "tab:blue", "nginx": "tab:orange"}
    written = []

    fig, ax = plt.subplots(figsize=(8, 5), dpi=110)
    for name in ("edge", "nginx"):
        med = [lv[str(c)][name]["rps"]["median"] for c in levels]
        lo = [lv[str(c)][name]["rps"]["min"] for c in levels]
        hi = [lv[str(c)][name]["rps"]["max"] for c in levels]
        ax.plot(levels, med, "o-", color=colors[name], label=f"{name} (median, band: min-max)")
        ax.fill_between(levels, lo, hi, color=colors[name], alpha=0.2)
        for c, v in zip(levels, med, strict=True):
            ax.annotate(
                f"{v:,.0f}", (c, v), textcoords="offset points", xytext=(0, 7), ha="center", fontsize=8
            )
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xticks(levels, [str(c) for c in levels])
    ax.set_xlabel("concurrent connections (wrk -t1)")
    ax.set_ylabel("requests per second (log)")
    ax.set_title("Small requests: throughput against concurrency, one proxy core")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path = folder / "http_throughput.png"
    fig.savefig(path)
    plt.close(fig)
    written.append(path)

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.8), dpi=110, sharey=True)
    for ax, name in zip(axes, ("edge", "nginx"), strict=True):
        for pct, style in (("p50", "o-"), ("p90", "s--"), ("p99", "^:")):
            ys = [lv[str(c)][name][pct]["median"] for c in levels if pct in lv[str(c)][name]]
            if len(ys) == len(levels):
                ax.plot(levels, ys, style, color=colors[name], label=pct)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xticks(levels, [str(c) for c in levels])
        ax.set_xlabel("concurrent connections")
        ax.set_title(name)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    axes[0].set_ylabel("latency, ms (log; medians of runs)")
    fig.suptitle("Small requests: latency percentiles against concurrency")
    fig.tight_layout()
    path = folder / "http_latency.png"
    fig.savefig(path)
    plt.close(fig)
    written.append(path)
    return written


if __name__ == "__main__":
    data = json.loads((RESULTS / "http.json").read_text())
    written = plots(data, RESULTS)
    (RESULTS / "http.md").write_text(markdown(data, written))
    print(markdown(data, written, brief=True))
    sys.exit(0)
