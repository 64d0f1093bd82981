"""From per-second intervals to what a reader sees: the progress line, the JSON and Markdown report,
thresholds, and the PNG plots. Pure except `write()` and `plots()`, which only write files.

Percentiles are over answered requests only; errors are counted by kind beside them (overall, per
scenario and per second), so a run with 10% timeouts cannot report a fine median and nothing else.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from bench.loadlib.hist import LATENCY_ONLY, Interval, http_series, merged, overall
from bench.loadlib.options import Threshold

PROGRESS_WINDOW = 5  # seconds the progress line's rates and percentiles cover


def _fmt_ms(ms: float | None) -> str:
    if ms is None:
        return "-"
    if ms >= 100:
        return f"{ms:,.0f}"
    if ms >= 10:
        return f"{ms:.1f}"
    return f"{ms:.2f}"


def _errors_by_kind(iv: Interval, series: str | None = None, exclude: str | None = "dns") -> dict[str, int]:
    out: dict[str, int] = {}
    for (s, kind), c in sorted(iv.errors.items(), key=lambda item: -item[1]):
        if (series is None and s != exclude) or s == series:
            out[kind] = out.get(kind, 0) + c
    return dict(sorted(out.items(), key=lambda kv: (-kv[1], kv[0])))


def progress_line(
    timeline: dict[int, Interval], now: int, duration: float, cpu: float | None = None, edge_cpu: float | None = None
) -> str:
    """`[ 12s/60s] sent 2,000/s answered 1,998/s errors 0 p50 1.2ms p99 5.3ms | dns ... | cpu 45%`,
    over the last PROGRESS_WINDOW complete seconds before `now`."""
    secs = [s for s in range(now - PROGRESS_WINDOW, now) if s >= 0]
    window = merged(timeline[s] for s in secs if s in timeline)
    n = max(1, len(secs))
    all_ = overall(window)
    h = all_.latency.get("all")
    errors = all_.error_count()
    text = (
        f"[{now:>4}s/{duration:g}s] sent {all_.sent['all'] / n:,.0f}/s  answered {all_.answered['all'] / n:,.0f}/s  "
        f"errors {errors / n:,.0f}/s"
    )
    if errors:
        kinds = _errors_by_kind(window)
        text += " (" + ", ".join(f"{k} {v}" for k, v in list(kinds.items())[:3]) + ")"
    text += (
        f"  p50 {_fmt_ms(h.percentile_ms(50) if h else None)} ms  p99 {_fmt_ms(h.percentile_ms(99) if h else None)} ms"
    )
    if window.sent["dns"]:
        d = window.latency.get("dns")
        text += (
            f" | dns {window.answered['dns'] / n:,.0f}/s p99 {_fmt_ms(d.percentile_ms(99) if d else None)} ms"
            f" errors {window.error_count('dns')}"
        )
    if cpu is not None:
        text += f" | load cpu {cpu:.0f}%"
    if edge_cpu is not None:
        text += f" | edge cpu {edge_cpu:.0f}%"
    return text


def _block(iv: Interval, series: str) -> dict:
    h = iv.latency.get(series)
    sent = iv.sent[series]
    errors = _errors_by_kind(iv, series=series)
    total = sum(errors.values())
    return {
        "sent": sent,
        "answered": iv.answered[series],
        "errors": errors,
        "error_total": total,
        "error_rate": total / sent if sent else 0.0,
        "latency_ms": h.summary() if h else None,
    }


def summary(timeline: dict[int, Interval], meta: dict, cpu: dict[int, list[tuple[float, float]]]) -> dict:
    """The JSON report: totals, per scenario, DNS, the timeline, the generator's own CPU and lag."""
    cpu = dict(cpu)
    edge_cpu: dict[int, float] = cpu.pop("edge", {}) or {}  # type: ignore[call-overload]
    total = merged(timeline.values())
    all_ = overall(total)
    head = _block(all_, "all")
    duration = meta["duration"]
    seconds = sorted(timeline)
    per_second = []
    for s in seconds:
        iv = timeline[s]
        o = overall(iv)
        h = o.latency.get("all")
        d = iv.latency.get("dns")
        per_second.append(
            {
                "t": s,
                "sent": o.sent["all"],
                "answered": o.answered["all"],
                "errors": _errors_by_kind(iv),
                "latency_ms": {f"p{q:g}": (h.percentile_ms(q) if h else None) for q in (50, 90, 99)}
                | {"max": (h.max / 1000 if h and h.n else None)},
                "scenarios": {name: iv.answered[name] for name in http_series(iv)},
                "edge_cpu_percent": edge_cpu.get(s),
                "dns": {
                    "sent": iv.sent["dns"],
                    "answered": iv.answered["dns"],
                    "errors": iv.error_count("dns"),
                    "p99_ms": d.percentile_ms(99) if d else None,
                },
            }
        )
    in_run = [p for p in per_second if p["t"] < duration]
    steady = [p for p in in_run if p["t"] >= math.ceil(meta.get("ramp", 0))] or in_run
    doc = {
        "meta": meta,
        **{k: head[k] for k in ("sent", "answered", "errors", "error_total", "error_rate", "latency_ms")},
        "consistent": head["sent"] == head["answered"] + head["error_total"],
        "throughput": {
            "answered_per_s": head["answered"] / duration,
            "steady_answered_per_s": sum(p["answered"] for p in steady) / max(1, len(steady)),
            "peak_answered_per_s": max((p["answered"] for p in in_run), default=0),
        },
        "scenarios": {name: _block(total, name) for name in http_series(total)},
        "latency_only_ms": {name: total.latency[name].summary() for name in LATENCY_ONLY if name in total.latency},
        "counts": dict(sorted(total.counts.items())),
        "dns": _block(total, "dns") if total.sent["dns"] else None,
        "generator": _generator(cpu, duration),
        "edge_cpu_percent": {"mean": sum(edge_cpu.values()) / len(edge_cpu), "max": max(edge_cpu.values())}
        if edge_cpu
        else None,
        "timeline": per_second,
        # For thresholds on any percentile (p95, p99.99); not written to load.json.
        "_hists": {name: total.latency[name] for name in [*http_series(total), "dns"] if name in total.latency}
        | ({"all": all_.latency["all"]} if "all" in all_.latency else {}),
    }
    for name, block in doc["scenarios"].items():
        secs = duration
        if name == "download" and block["answered"]:
            block["mb_per_s"] = total.counts["download_bytes"] / secs / 1e6
        if name == "upload" and block["answered"]:
            block["mb_per_s"] = total.counts["upload_bytes"] / secs / 1e6
    return doc


def _generator(cpu: dict[int, list[tuple[float, float]]], duration: float) -> dict:
    """Each worker process's CPU use (% of one core), from its (monotonic, process_time) samples, one a second."""
    per_proc = {}
    busiest = 0.0
    for proc, samples in sorted(cpu.items()):
        if len(samples) >= 2:
            (w0, c0), (w1, c1) = samples[0], samples[-1]
            per_proc[str(proc)] = round(100 * (c1 - c0) / max(w1 - w0, 1e-9), 1)
            for (wa, ca), (wb, cb) in zip(samples, samples[1:], strict=False):
                if wb - wa > 0.5:
                    busiest = max(busiest, 100 * (cb - ca) / (wb - wa))
    return {"cpu_percent": per_proc, "busiest_second_percent": round(busiest, 1)}


def evaluate(thresholds: list[Threshold], doc: dict) -> list[dict]:
    """Each threshold with the actual value and whether it held. A latency over no answers fails."""
    out = []
    hists = doc.get("_hists", {})
    for th in thresholds:
        block = doc if th.scope == "all" else (doc["dns"] if th.scope == "dns" else doc["scenarios"].get(th.scope))
        actual: float | None
        if block is None:
            actual = None
        elif th.metric == "errors":
            actual = block["error_rate"] * 100 if th.percent else block["error_total"]
        elif th.metric == "rate":
            actual = block["answered"] / doc["meta"]["duration"]
        elif th.metric.startswith("p") and th.scope in hists:
            actual = hists[th.scope].percentile_ms(float(th.metric[1:]))
        else:
            actual = (block["latency_ms"] or {}).get(th.metric)
        out.append({"threshold": th.text, "actual": actual, "ok": actual is not None and th.holds(actual)})
    return out


# --- Markdown ------------------------------------------------------------------------------------------


def _n(x: int | float) -> str:
    return f"{x:,.0f}"


def _lat_row(name: str, block: dict) -> str:
    lat = block["latency_ms"] or {}
    cells = [_fmt_ms(lat.get(k)) for k in ("p50", "p90", "p99", "p99.9", "max")]
    errs = ", ".join(f"{k} {v:,}" for k, v in block["errors"].items()) or "none"
    return (
        f"| {name} | {_n(block['sent'])} | {_n(block['answered'])} | {_n(block['error_total'])} "
        f"({100 * block['error_rate']:.2f}%) | " + " | ".join(cells) + f" | {errs} |"
    )


def markdown(doc: dict, plots: list[str] | None = None) -> str:
    m = doc["meta"]
    lines = [
        f"# Load run against {m['edge']} ({m['date']})",
        "",
        f"`{m['command']}`",
        "",
        f"{m['mode']}; {m['duration']:g} s (ramp {m['ramp']:g} s); {m['procs']} generator process(es); "
        f"{m['sandboxes']:,} sandboxes ({m['sandbox_source']}), {m['pick']} choice; mix {m['mix']}; "
        f"timeout {m['timeout']:g} s. Machine: {m['machine']}.",
        "",
        "| | sent | answered | errors | p50 ms | p90 ms | p99 ms | p99.9 ms | max ms | errors by kind |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
        _lat_row("**all HTTP**", doc),
    ]
    for name, block in doc["scenarios"].items():
        lines.append(_lat_row(name, block))
    if doc["dns"]:
        lines.append(_lat_row("dns", doc["dns"]))
    t = doc["throughput"]
    lines += [
        "",
        f"sent = answered + errors: **{'yes' if doc['consistent'] else 'NO'}**. Throughput: "
        f"{t['answered_per_s']:,.0f} answered/s over the run, {t['steady_answered_per_s']:,.0f}/s after the ramp, "
        f"peak second {t['peak_answered_per_s']:,}. Latency is "
        + (
            "from each request's intended send time (open loop, no coordinated omission)."
            if m["rate"]
            else "from each request's actual start (closed loop)."
        ),
        "",
        "What each scenario's latency measures: small/newconn/download/upload the whole answer; ws the "
        "101 (the session's echoes under ws_echo); sse the first event; churn from the registration's start "
        "to the new sandbox's first answer through the edge.",
        "",
    ]
    lo = doc["latency_only_ms"]
    if lo:
        lines += ["| series | p50 ms | p90 ms | p99 ms | max ms | what |", "|---|---:|---:|---:|---:|---|"]
        what = {
            "ws_echo": "round trip of one WebSocket message through the tunnel",
            "churn_routable": "from the registration's answer to the first answer through the edge",
            "lag": "how late the generator emitted a request (its own delay; high = the generator is the limit)",
        }
        for name, s in lo.items():
            lines.append(
                f"| {name} | {_fmt_ms(s['p50'])} | {_fmt_ms(s['p90'])} | {_fmt_ms(s['p99'])} | {_fmt_ms(s['max'])} "
                f"| {what.get(name, '')} |"
            )
        lines.append("")
    lag = lo.get("lag") or {}
    if (lag.get("p99") or 0) > 10:
        lines += [
            f"**The generator itself was late**: its scheduler emitted requests {_fmt_ms(lag['p99'])} ms after their "
            "due time at p99 (CPU contention on its core, or a process at its limit). Latency counts from the due "
            "time, so that delay is inside the figures above: they are an upper bound for the edge.",
            "",
        ]
    counts = doc["counts"]
    if counts:
        lines.append("Counts: " + ", ".join(f"{k} {v:,}" for k, v in counts.items()) + ".")
        lines.append("")
    g = doc["generator"]
    lines.append(
        "Generator CPU (% of one core, per process, over the run): "
        + (", ".join(f"{p}: {v:g}%" for p, v in g["cpu_percent"].items()) or "-")
        + f"; busiest second {g['busiest_second_percent']:g}%."
        + (
            " A process near 100% may itself be the bottleneck: add --procs."
            if g["busiest_second_percent"] >= 90
            else ""
        )
    )
    e = doc.get("edge_cpu_percent")
    if e:
        lines.append("")
        lines.append(
            f"Edge process CPU (`--edge-pid`, its workers included; % of one core): mean {e['mean']:.0f}%, "
            f"busiest second {e['max']:.0f}%."
        )
    lines.append("")
    lines.append(
        "Load average before/after (other processes on this machine count too): "
        + " / ".join(
            ", ".join(f"{x:.2f}" for x in m[k]) for k in ("load_average_before", "load_average_after") if k in m
        )
        + "."
    )
    if doc["thresholds"]:
        lines += ["", "| threshold | actual | |", "|---|---:|---|"]
        for r in doc["thresholds"]:
            actual = "-" if r["actual"] is None else f"{r['actual']:,.3g}"
            lines.append(f"| `{r['threshold']}` | {actual} | {'pass' if r['ok'] else '**FAIL**'} |")
        lines.append("")
        lines.append("**All thresholds held.**" if doc["passed"] else "**A threshold was missed: exit status 1.**")
    lines.append("")
    for p in plots or []:
        lines.append(f"![{Path(p).stem}]({Path(p).name})")
    return "\n".join(lines) + "\n"


def write(doc: dict, out: Path, with_plots: bool = True) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    made = plots(doc, out) if with_plots else []
    public = {k: v for k, v in doc.items() if not k.startswith("_")}
    (out / "load.json").write_text(json.dumps(public, indent=1) + "\n")
    (out / "load.md").write_text(markdown(doc, [str(p) for p in made]))
    return [out / "load.json", out / "load.md", *made]


def plots(doc: dict, out: Path) -> list[Path]:
    """latency.png, throughput.png, errors.png; none (and a note on stderr) without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        import sys

        print("load: no matplotlib (pip install -e '.[bench]'): no plots", file=sys.stderr)
        return []
    tl = doc["timeline"]
    t = [p["t"] for p in tl]
    title = f"{doc['meta']['mode']}, {doc['meta']['edge']}"
    made = []

    fig, ax = plt.subplots(figsize=(9, 4.5))
    for key, style in (("p50", "-"), ("p90", "-"), ("p99", "-"), ("max", ":")):
        ax.plot(t, [p["latency_ms"][key] for p in tl], style, label=key)
    if doc["dns"]:
        ax.plot(t, [p["dns"]["p99_ms"] for p in tl], "--", label="dns p99")
    ax.set_yscale("log")
    if any(p.get("edge_cpu_percent") is not None for p in tl):
        ax2 = ax.twinx()
        ax2.plot(t, [p.get("edge_cpu_percent") for p in tl], color="grey", lw=0.8, alpha=0.7, label="edge CPU %")
        ax2.set_ylim(0, 105)
        ax2.set_ylabel("edge process CPU, % of a core (grey)")
    ax.set_xlabel("second of the run")
    ax.set_ylabel("latency, ms (log)")
    ax.set_title(f"Latency percentiles per second (all HTTP scenarios)\n{title}", fontsize=10)
    ax.axvline(doc["meta"]["duration"], color="grey", lw=0.5)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    made.append(out / "latency.png")
    fig.savefig(made[-1], dpi=100)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(9, 4.5))
    names = sorted({n for p in tl for n in p["scenarios"]})
    if names:
        ax.stackplot(
            t,
            [[p["scenarios"].get(n, 0) for p in tl] for n in names],
            labels=[f"answered: {n}" for n in names],
            alpha=0.6,
        )
    ax.plot(t, [p["sent"] for p in tl], "k-", lw=1, label="sent (due)")
    ax.plot(t, [sum(p["errors"].values()) for p in tl], "r-", lw=1, label="errors")
    if doc["dns"]:
        ax.plot(t, [p["dns"]["answered"] for p in tl], "b--", lw=1, label="dns answered")
    ax.set_xlabel("second of the run")
    ax.set_ylabel("per second")
    ax.set_title(f"Throughput per second\n{title}", fontsize=10)
    ax.grid(alpha=0.3)
    top = max([p["sent"] for p in tl] + [p["answered"] for p in tl] + [1])
    ax.set_ylim(0, top * 1.45)  # room for the legend above the curves
    ax.legend(fontsize=8, loc="upper left", ncol=3)
    fig.tight_layout()
    made.append(out / "throughput.png")
    fig.savefig(made[-1], dpi=100)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(9, 4))
    kinds = list(doc["errors"])
    dns_kinds = list((doc["dns"] or {}).get("errors", {}))
    bottom = [0] * len(tl)
    for kind in kinds:
        ys = [p["errors"].get(kind, 0) for p in tl]
        ax.bar(t, ys, bottom=bottom, label=f"{kind} ({doc['errors'][kind]:,})", width=0.9)
        bottom = [a + b for a, b in zip(bottom, ys, strict=True)]
    if dns_kinds:
        ax.plot(t, [p["dns"]["errors"] for p in tl], "k--", label=f"dns ({', '.join(dns_kinds)})")
    if not kinds and not dns_kinds:
        ax.text(0.5, 0.5, f"no errors in {doc['sent']:,} requests", ha="center", va="center", transform=ax.transAxes)
    else:
        ax.legend(fontsize=8)
    ax.set_xlabel("second of the run")
    ax.set_ylabel("errors per second")
    ax.set_title(f"Errors by kind\n{title}", fontsize=10)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    made.append(out / "errors.png")
    fig.savefig(made[-1], dpi=100)
    plt.close(fig)
    return made
