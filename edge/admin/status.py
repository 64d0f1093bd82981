"""The `GET /v1/status` document and its text form for `edge status`. Pure: no I/O, no framework.

The server builds the document from what it already holds (the live catalog snapshot, the process's
counters, the addresses it bound); the CLI only formats what it received, so a newer server can add
fields without breaking an older CLI.
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Iterable

from edge.catalog.model import Snapshot
from edge.metrics import Stats

#: How many of the busiest sandboxes the status document lists.
BUSIEST = 10


def build(
    snapshot: Snapshot,
    stats: Stats,
    listeners: Iterable[tuple[str, str]],
    uptime: float,
    busiest: int = BUSIEST,
    certificates: list | None = None,
    catalog: dict | None = None,
    supervisor: dict | None = None,
) -> dict:
    """`certificates`: the `domains` part of edge.tls.renewal.report (per domain: certificate, ACME state);
    `catalog`: `{"url", "path", "version"}`, the version being the lowest any process of this edge serves;
    `supervisor`: its generations (edge/supervisor.py `Status`), None for an edge without one."""
    top = sorted(stats.sandbox_requests.items(), key=lambda kv: (-kv[1], kv[0]))[:busiest]
    private = sum(1 for s in snapshot.by_id.values() if not s.public)
    return {
        "uptime_seconds": round(uptime, 3),
        "listeners": [{"kind": kind, "address": address} for kind, address in listeners],
        "sandboxes": {"total": len(snapshot), "private": private, "catalog_version": snapshot.version},
        "active_connections": stats.http_active_connections,
        "active_tunnels": stats.http_active_tunnels,
        "requests": {("none" if i == 0 else f"{i}xx"): n for i, n in enumerate(stats.http_requests)},
        "busiest": [{"id": sandbox_id, "requests": n} for sandbox_id, n in top],
        "certificates": list(certificates or []),
        "catalog": catalog or {"url": "", "path": None, "version": snapshot.version},
        "supervisor": supervisor,
    }


def format_text(doc: dict) -> str:
    """A few readable lines for people; unknown fields are ignored, missing ones shown as '?'."""
    lines = []
    up = doc.get("uptime_seconds")
    lines.append(f"edge is up{'' if up is None else f' for {_duration(up)}'}")
    for listener in doc.get("listeners", []):
        lines.append(f"  {listener.get('kind', '?'):6} {listener.get('address', '?')}")
    sb = doc.get("sandboxes", {})
    lines.append(
        f"sandboxes:   {sb.get('total', '?')} ({sb.get('private', '?')} private), catalog version"
        f" {sb.get('catalog_version', '?')}"
    )
    catalog = doc.get("catalog") or {}
    if catalog:
        lines.append(
            f"catalog:     {catalog.get('path') or catalog.get('url', '?')}, version"
            f" {catalog.get('version', '?')} served"
        )
    lines += format_supervisor(doc.get("supervisor"))
    lines.append(f"connections: {doc.get('active_connections', '?')} open")
    lines.append(f"tunnels:     {doc.get('active_tunnels', '?')} open")
    req = doc.get("requests", {})
    if req:
        total = sum(v for v in req.values() if isinstance(v, int))
        by_class = "  ".join(f"{k}={v}" for k, v in req.items() if v)
        lines.append(f"requests:    {total}{'  (' + by_class + ')' if by_class else ''}")
    busiest = doc.get("busiest", [])
    if busiest:
        lines.append("busiest sandboxes:")
        width = max(len(str(b.get("id", "?"))) for b in busiest)
        for b in busiest:
            lines.append(f"  {str(b.get('id', '?')):{width}}  {b.get('requests', '?')} requests")
    else:
        lines.append("busiest sandboxes: none yet")
    lines += format_certificates(doc.get("certificates", []))
    return "\n".join(lines)


def format_supervisor(sup: dict | None) -> list[str]:
    """The serving generation and its start, the old ones still draining, the last deploy's outcome."""
    if not sup:
        return []
    lines = [
        f"generation:  {sup.get('generation', '?')} since {_date(sup.get('generation_started'))}"
        f" (supervisor pid {sup.get('pid', '?')}, {sup.get('workers', '?')} workers, up since"
        f" {_date(sup.get('started'))})"
    ]
    draining = sup.get("draining") or []
    if draining:
        conns = sup.get("draining_connections", "?")
        gens = ", ".join(str(g) for g in draining)
        lines.append(f"draining:    generation {gens}: {conns} connections still open")
    last = sup.get("last_deploy") or None
    if last:
        outcome = "ok" if last.get("ok") else f"FAILED: {last.get('error', '?')}"
        lines.append(f"last deploy: {last.get('kind', '?')} at {_date(last.get('at'))}: {outcome}")
    return lines


def format_certificates(rows: list, now: float | None = None) -> list[str]:
    """Per domain: the names served, when they expire, where from; the ACME task's plans and troubles."""
    if not rows:
        return []
    now = time.time() if now is None else now
    lines = ["certificates:"]
    width = max(len(str(r.get("domain", "?"))) for r in rows)
    for row in rows:
        cert = row.get("certificate") or None
        acme = row.get("acme") or {}
        if cert:
            left = cert.get("not_after", now) - now
            text = (
                f"{', '.join(cert.get('names', []))}  {cert.get('source', '?')}, expires"
                f" {_date(cert.get('not_after'))} (in {_duration(left) if left > 0 else 'the past: EXPIRED'})"
            )
        else:
            text = "no certificate"
        if acme.get("renewing"):
            text += "; renewing now"
        elif acme.get("next_attempt"):
            text += f"; next ACME order {_date(acme['next_attempt'])}"
        if acme.get("last_error"):
            text += f"; last error ({acme.get('failures', '?')} in a row): {acme['last_error']}"
        lines.append(f"  {str(row.get('domain', '?')):{width}}  {text}")
    return lines


def _date(ts: object) -> str:
    if not isinstance(ts, int | float):
        return "?"
    return datetime.datetime.fromtimestamp(ts, datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    if minutes:
        return f"{minutes}m {secs}s"
    return f"{secs}s"
