"""bench/results/http.json -> a Markdown table and PNG plots (matplotlib, Agg: no display needed).

python bench/report.py                    re-render http.md and the plots from the last http.json
python bench/report.py RUN.json OUT.md    render another run's JSON (say, a `--only logged` run kept as
                                          bench/results/logged.json): only the scenarios it has, no plots

What goes where comes from the scenarios' registry (bench.scenarios.SCENARIOS): each entry's rows in
the main table and the CPU table, its note under the table, its own table ("levels", "variants").
Nothing here names a scenario.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.scenarios import SCENARIOS, Scenario  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def fmt(v: float) -> str:
    if v >= 100:
        return f"{v:,.0f}"
    if v >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def _cell(s: dict) -> tuple[str, str]:
    return fmt(s["median"]), f"{fmt(s['min'])}-{fmt(s['max'])}"


def _counts(side: dict) -> str:
    """One side's error counts summed over runs: `non2xx 3, socket_errors 1`, or `none`."""
    counts = {k: side.get(k, 0) for k in ("non2xx", "socket_errors", "not_served")}
    return ", ".join(f"{k} {v}" for k, v in counts.items() if v) or "none"


def _errors(sc: dict, names=("edge", "nginx")) -> str:
    return "; ".join(f"{name}: {_counts(sc.get(name, {}))}" for name in names)


def _pct(side: dict, key: str, worst: bool = False) -> str:
    if key not in side:
        return "?"
    text = f"{side[key]['median']:.0f}"
    return f"{text} (max {side[key]['max']:.0f})" if worst else text


def _at(result: dict | None, path: tuple[str, ...]) -> dict | None:
    for p in path:
        result = (result or {}).get(p)
    return result


def _comparisons(s: Scenario, result: dict) -> list[tuple[str, dict]]:
    """(label, edge / nginx comparison) of a scenario: one per distinct `at` of its rows, or per level."""
    if s.table == "levels":
        return [(f"{s.name}, {c} connections", lv) for c, lv in (result.get("levels") or {}).items()]
    seen: dict[tuple[str, ...], str] = {}
    for row in s.rows:
        seen.setdefault(row.at, row.label)
    return [(label, c) for at, label in seen.items() if (c := _at(result, at))]


def _cpu_rows(sc: dict, registry: tuple[Scenario, ...]) -> list[str]:
    rows = []
    for s in registry:
        if not isinstance(sc.get(s.name), dict):
            continue
        for label, c in _comparisons(s, sc[s.name]):
            if "proxy_cpu_pct" not in c.get("edge", {}) or "proxy_cpu_pct" not in c.get("nginx", {}):
                continue
            e, n = c["edge"], c["nginx"]
            rows.append(
                f"| {label} | {e['proxy_cpu_pct']['median']:.0f} | {n['proxy_cpu_pct']['median']:.0f} | "
                f"{_pct(e, 'irq_cpu_pct')} / {_pct(n, 'irq_cpu_pct')} | "
                f"{_pct(e, 'steal_cpu_pct')} / {_pct(n, 'steal_cpu_pct')} | "
                f"{_pct(e, 'others_cpu_pct', True)} / {_pct(n, 'others_cpu_pct', True)} | "
                f"{_pct(e, 'load_core_busy_pct')} / {_pct(n, 'load_core_busy_pct')} |"
            )
    return rows


def _note(s: Scenario, result: dict) -> str | None:
    """The scenario's line under the main table; None when its result lacks what the note names."""
    if not s.note:
        return None
    # {errors}: per comparison the rows point at (once each), named by its key when it is not the result
    comparisons = {row.at: _at(result, row.at) for row in s.rows}
    errors = ", ".join(" ".join((*at[-1:], _errors(c))) for at, c in comparisons.items() if c and "edge" in c)
    return _fill(s.note, {**result, "errors": errors})


def _fill(template: str, result: dict) -> str | None:
    """template.format_map(result); None when the result lacks a field it names (an older http.json)."""
    try:
        return template.format_map(result)
    except (KeyError, IndexError, TypeError, ValueError):
        return None


def _levels(s: Scenario, result: dict) -> list[str]:
    """A comparison per connection count: throughput, per CPU-second, latency, errors."""
    lines = [
        "",
        _fill(s.title, result) or f"{s.name}:",
        "",
        "| connections | edge req/s | nginx req/s | edge / nginx | per CPU-s, edge / nginx "
        "| edge p50 ms | nginx p50 ms | edge p99 ms | nginx p99 ms | errors (edge / nginx) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for c, lv in result["levels"].items():
        errs = " / ".join(str(lv[n].get("non2xx", 0) + lv[n].get("socket_errors", 0)) for n in ("edge", "nginx"))
        lines.append(
            f"| {c} | {fmt(lv['edge']['rps']['median'])} | {fmt(lv['nginx']['rps']['median'])} | "
            f"{lv['ratio']['rps']:.3f} | {lv['ratio'].get('rps_per_cpu', 0):.3f} | "
            f"{fmt(lv['edge']['p50']['median'])} | "
            f"{fmt(lv['nginx']['p50']['median'])} | {fmt(lv['edge']['p99']['median'])} | "
            f"{fmt(lv['nginx']['p99']['median'])} | {errs} |"
        )
    return lines


def _variants(s: Scenario, result: dict) -> list[str]:
    """Two set-ups of edge against each other (workers, fast lane): a row each, then their ratio."""
    # ratio_of names the numerator first; results from before it was recorded are workers' (2 / 1).
    top, bottom = result.get("ratio_of") or ("2 workers", "1 worker")
    cols = (("rps_per_cpu", "req/s per proxy CPU-s"), ("p50", "p50 ms"), ("p99", "p99 ms"))
    lines = [
        "",
        _fill(s.title, result) or f"{s.name}:",
        "",
        "| set-up | req/s median | min-max | " + " | ".join(h for _, h in cols) + " | errors |",
        "|---|---:|---:|" + "---:|" * len(cols) + "---|",
    ]
    for label in (bottom, top):
        r = result[label]
        figures = " | ".join(fmt(r[f]["median"]) if f in r else "-" for f, _ in cols)
        lines.append(f"| {label} | {_cell(r['rps'])[0]} | {_cell(r['rps'])[1]} | {figures} | {_counts(r)} |")
    ratio = result.get("ratio", {})
    text = f"\n{top} / {bottom}: {ratio.get('rps', 0):.2f}x req/s"
    if "rps_per_cpu" in ratio:
        text += f", {ratio['rps_per_cpu']:.2f}x per proxy CPU-second"
    lines.append(text)
    return lines


def markdown(out: dict, plots: list[Path] = (), brief: bool = False, registry: tuple[Scenario, ...] = SCENARIOS) -> str:
    """http.md: the main edge / nginx table, the scenarios' notes, the CPU table, their own tables, micro."""
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
    for s in registry:
        for row in s.rows:
            c = _at(sc.get(s.name), row.at)
            if not c or "error" in c or row.fig not in c.get("edge", {}):
                got = sc.get(s.name) or {}
                why = got.get("error") or got.get("skipped") or "not run"
                lines.append(f"| {row.label} | {row.unit} | {why} | | | | |")
                continue
            e, n = _cell(c["edge"][row.fig]), _cell(c["nginx"][row.fig])
            lines.append(
                f"| {row.label} | {row.unit} | {e[0]} | {e[1]} | {n[0]} | {n[1]} | {c['ratio'].get(row.fig, 0):.3f} |"
            )
    lines.append("")
    lines.append("Ratios are edge / nginx: above 1 is better for edge on rates, worse on latency and memory.")
    notes = []
    for s in (s for s in registry if s.name in sc):
        result = sc[s.name] or {"skipped": "not measured"}  # an older http.json has None for a skip
        if "error" in result:
            notes.append(f"{s.name}: FAILED {result['error']}")
        elif "skipped" in result:
            notes.append(f"{s.name}: skipped, {result['skipped']}")
        elif (note := _note(s, result)) is not None:
            notes.append(note)
    if notes:
        lines += [""] + [f"- {n}" for n in notes]

    cpu = _cpu_rows(sc, registry)
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

    for s in registry:
        result = sc.get(s.name)
        if not isinstance(result, dict) or "error" in result or "skipped" in result:
            continue
        if s.table == "levels" and result.get("levels"):
            lines += _levels(s, result)
        elif s.table == "variants":
            lines += _variants(s, result)
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


def plots(out: dict, folder: Path, registry: tuple[Scenario, ...] = SCENARIOS) -> list[Path]:
    """Throughput and latency against concurrency, edge beside nginx; [] when no "levels" scenario ran."""
    found = [out["scenarios"].get(s.name) for s in registry if s.table == "levels"]
    sw = next((r for r in found if isinstance(r, dict) and r.get("levels")), None)
    if sw is None:
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
            ax.annotate(f"{v:,.0f}", (c, v), textcoords="offset points", xytext=(0, 7), ha="center", fontsize=8)
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
    if len(sys.argv) == 3:  # one run's scenarios alone: no rows of scenarios it did not run
        data = json.loads(Path(sys.argv[1]).read_text())
        ran = tuple(s for s in SCENARIOS if s.name in data["scenarios"])
        Path(sys.argv[2]).write_text(markdown(data, registry=ran))
        print(markdown(data, brief=True, registry=ran))
        sys.exit(0)
    data = json.loads((RESULTS / "http.json").read_text())
    written = plots(data, RESULTS)
    (RESULTS / "http.md").write_text(markdown(data, written))
    print(markdown(data, written, brief=True))
    sys.exit(0)
