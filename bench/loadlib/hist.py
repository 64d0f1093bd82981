"""Latency histograms and the per-second `Interval` every figure of a run is summed from. Pure.

A histogram keeps counts in logarithmic buckets, 64 per factor e (each ~1.6% wide; a percentile is
reported at its bucket's geometric middle, within ~0.8%), from 1 us to any length; plus the exact
count, sum and maximum. Buckets are a dict of the ones used, so merging a second's histogram from
each worker process is a few hundred additions, and one pickles small.

An `Interval` is one second of one process (and, merged, of the whole run): per series the requests
sent, answered and failed by kind, the latency histogram and a few counters. Series are the scenarios
(`small`, `ws` ...), `dns`, and series that only carry latency: `ws_echo` (each WebSocket message's
round trip), `churn_routable` (from a new sandbox's registration answered to its first answer through
the edge) and `lag` (how late the open-loop scheduler emitted a request: the generator's own delay).
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field

SCALE = 64  # buckets per factor e


def _bucket(us: float) -> int:
    return int(math.log(us) * SCALE) if us > 1.0 else 0


def _value(bucket: int) -> float:
    return math.exp((bucket + 0.5) / SCALE) if bucket else 1.0


class Hist:
    __slots__ = ("counts", "n", "total", "max")

    def __init__(self) -> None:
        self.counts: dict[int, int] = {}
        self.n = 0
        self.total = 0.0  # microseconds
        self.max = 0.0

    def record(self, seconds: float) -> None:
        us = seconds * 1e6
        b = int(math.log(us) * SCALE) if us > 1.0 else 0
        counts = self.counts
        counts[b] = counts.get(b, 0) + 1
        self.n += 1
        self.total += us
        if us > self.max:
            self.max = us

    def merge(self, other: Hist) -> None:
        counts = self.counts
        for b, c in other.counts.items():
            counts[b] = counts.get(b, 0) + c
        self.n += other.n
        self.total += other.total
        self.max = max(self.max, other.max)

    def percentile_ms(self, q: float) -> float | None:
        """The q-th percentile (0-100) in ms; None when empty. p100 is the exact maximum."""
        if not self.n:
            return None
        if q >= 100:
            return self.max / 1000
        rank = max(1, math.ceil(self.n * q / 100))
        seen = 0
        for b in sorted(self.counts):
            seen += self.counts[b]
            if seen >= rank:
                return min(_value(b), self.max) / 1000
        return self.max / 1000

    def summary(self) -> dict[str, float | None]:
        """p50, p90, p99, p99.9, max and mean in ms (None when empty), as the report and thresholds use."""
        out: dict[str, float | None] = {f"p{q:g}": self.percentile_ms(q) for q in (50, 90, 99, 99.9)}
        out["max"] = self.max / 1000 if self.n else None
        out["mean"] = self.total / self.n / 1000 if self.n else None
        return out

    def __getstate__(self) -> tuple:
        return self.counts, self.n, self.total, self.max

    def __setstate__(self, state: tuple) -> None:
        self.counts, self.n, self.total, self.max = state


#: Series that carry latency only: no sent/answered counts of their own.
LATENCY_ONLY = ("ws_echo", "lag", "churn_routable")


@dataclass
class Interval:
    """One second's outcomes (of one process, or merged)."""

    sent: Counter = field(default_factory=Counter)  # series -> requests due
    answered: Counter = field(default_factory=Counter)  # series -> answered
    errors: Counter = field(default_factory=Counter)  # (series, kind) -> count
    latency: dict[str, Hist] = field(default_factory=dict)  # series -> histogram
    counts: Counter = field(default_factory=Counter)  # "download_bytes", "sse_events", "ws_messages" ...

    def hist(self, series: str) -> Hist:
        h = self.latency.get(series)
        if h is None:
            h = self.latency[series] = Hist()
        return h

    def merge(self, other: Interval) -> None:
        self.sent.update(other.sent)
        self.answered.update(other.answered)
        self.errors.update(other.errors)
        self.counts.update(other.counts)
        for series, h in other.latency.items():
            self.hist(series).merge(h)

    def error_count(self, series: str | None = None) -> int:
        return sum(c for (s, _), c in self.errors.items() if series is None or s == series)


def merged(intervals) -> Interval:
    out = Interval()
    for iv in intervals:
        out.merge(iv)
    return out


def http_series(iv: Interval) -> list[str]:
    """The request-carrying series of an interval other than DNS (the HTTP scenarios), sorted."""
    names = set(iv.sent) | set(iv.answered) | {s for s, _ in iv.errors}
    return sorted(names - {"dns"} - set(LATENCY_ONLY))


def overall(iv: Interval) -> Interval:
    """The HTTP scenarios of an interval folded into one series "all" (DNS and latency-only series apart)."""
    out = Interval()
    for s in http_series(iv):
        out.sent["all"] += iv.sent[s]
        out.answered["all"] += iv.answered[s]
        if s in iv.latency:
            out.hist("all").merge(iv.latency[s])
    for (s, kind), c in iv.errors.items():
        if s != "dns":
            out.errors[("all", kind)] += c
    return out


class Recorder:
    """A worker's outcomes, filed by the second (since the run's start `t0`) they happened in.

    Times are whatever clock `t0` is on (the driver uses trio's). `take()` hands over what was filed
    so far and starts afresh: the parent merges the pieces by second."""

    def __init__(self, t0: float) -> None:
        self.t0 = t0
        self.seconds: dict[int, Interval] = {}

    def at(self, t: float) -> Interval:
        sec = int(t - self.t0) if t > self.t0 else 0
        iv = self.seconds.get(sec)
        if iv is None:
            iv = self.seconds[sec] = Interval()
        return iv

    def sent(self, series: str, t: float) -> None:
        self.at(t).sent[series] += 1

    def answered(self, series: str, t: float, latency: float) -> None:
        iv = self.at(t)
        iv.answered[series] += 1
        iv.hist(series).record(latency)

    def error(self, series: str, kind: str, t: float) -> None:
        self.at(t).errors[(series, kind)] += 1

    def latency(self, series: str, t: float, seconds: float) -> None:
        self.at(t).hist(series).record(seconds)

    def count(self, name: str, t: float, n: int = 1) -> None:
        self.at(t).counts[name] += n

    def take(self) -> dict[int, Interval]:
        out, self.seconds = self.seconds, {}
        return out
