"""One worker process: it sends its share of the load and reports what happened once a second.

Open loop (`--rate`), as wrk2 does it: request k is *due* at a time fixed in advance (k / rate, the
ramp's square-root curve before that), whatever happened to the requests before it. It is counted as
sent at that time, and its latency is measured from that time, so an edge that stalls for a second
shows a second of latency on every request that was due in it, not only on the one that was in flight
(no coordinated omission). Due requests queue for a connection of the pool (at most --connections
keep-alive connections across processes); one that waited --timeout without getting one ends as
`client_backlog`. Sessions (ws, sse, churn) run beside the pool, each on its own connection.

Closed loop (`--connections N` alone): N users, each sending its next request when its last one
ended; latency from the actual start. Simple and comparable with wrk, but a slow edge also slows the
load it is given: use it for throughput, and --rate for latency.

Every request runs under a deadline (due time + --timeout, + a session's own length); what is still
running when the run's last deadline passes is counted as `timeout`, and a request still queued as
`client_backlog`, so every sent request is accounted for.
"""

from __future__ import annotations

import bisect
import itertools
import math
import random
import socket
import time
from dataclasses import dataclass

import trio

from bench.loadlib import wire
from bench.loadlib.admin import Admin
from bench.loadlib.conn import LoadError, Slot, client_context
from bench.loadlib.hist import Recorder
from bench.loadlib.options import SESSIONS, Sandbox
from bench.loadlib.scenarios import RUN, Ctx, session_seconds

FLUSH_SECONDS = 1.0
#: The scheduler wakes this much before a due time: trio's epoll wait rounds its timeout up to a whole
#: millisecond, so waking at the due time itself would make every request up to 1 ms late.
EARLY = 0.0005


def due(k: int, rate: float, ramp: float, phase: float = 0.0) -> float:
    """Seconds after the start at which request k (from 0) is due: the rate rises linearly from 0 to
    `rate` over `ramp` seconds (N(t) = rate t^2 / 2 ramp), then stays. `phase` (0-1) staggers processes."""
    c = k + phase
    if ramp > 0 and c < rate * ramp / 2:
        return math.sqrt(2 * ramp * c / rate)
    return c / rate + ramp / 2


class Choice:
    """Weighted choice by one random number and a bisect."""

    def __init__(self, items: list, weights: list[float]) -> None:
        self.items = items
        self.cum = list(itertools.accumulate(weights))
        self.total = self.cum[-1]

    def pick(self, rng: random.Random):
        return self.items[bisect.bisect_right(self.cum, rng.random() * self.total)]


def sandbox_choice(sandboxes: list[Sandbox], zipf: float) -> Choice:
    """Uniform (zipf 0), or Zipf: the k-th sandbox of the list weighs 1/k^s, so the first few are hot."""
    if zipf <= 0:
        return Choice(sandboxes, [1.0] * len(sandboxes))
    return Choice(sandboxes, [1.0 / (k**zipf) for k in range(1, len(sandboxes) + 1)])


def share(total: float, proc: int, procs: int) -> int:
    """Process `proc`'s whole share of `total` things (connections), spread as evenly as integers go."""
    base, extra = divmod(int(total), procs)
    return base + (1 if proc < extra else 0)


@dataclass
class Plan:
    """What one worker is told. Handed over by fork, never pickled."""

    opts: object  # the parsed options (bench/loadlib/options.py)
    sandboxes: list[Sandbox]
    proc: int
    procs: int
    t0: float  # time.monotonic() of the run's start, the same for every process
    prefix: str  # of the sandbox IDs churn registers


class Worker:
    def __init__(self, plan: Plan, pipe) -> None:
        self.plan = plan
        self.o = o = plan.opts
        self.pipe = pipe
        seed = None if o.seed is None else o.seed * 1000 + plan.proc
        self.rng = random.Random(seed)
        self.scenarios = Choice(list(o.mix), list(o.mix.values()))
        self.sandboxes = sandbox_choice(plan.sandboxes, o.zipf)
        self.ctx: Ctx
        self.rec: Recorder

    async def main(self) -> None:
        o, plan = self.o, self.plan
        t0 = plan.t0 + (trio.current_time() - time.monotonic())
        self.rec = Recorder(t0)
        admin = (
            Admin(o.admin_target, o.admin_token, client_context(o.admin_target, o.insecure, o.cacert))
            if (o.admin_target and o.admin_token)
            else None
        )
        self.ctx = Ctx(
            o, o.target, client_context(o.target, o.insecure, o.cacert), self.rec, admin, plan.proc, plan.prefix
        )
        end = t0 + o.duration
        longest = max(session_seconds(o, s) for s in o.mix)
        async with trio.open_nursery() as top:
            top.start_soon(self.flush_every_second)
            with trio.move_on_at(end + o.timeout + longest + 1.0):  # a safety net: each request has its own deadline
                async with trio.open_nursery() as load:
                    await trio.sleep_until(t0)
                    if o.dns_addr:
                        load.start_soon(self.dns, t0, end)
                    if o.rate:
                        load.start_soon(self.open_loop, load, t0, end)
                    else:
                        n = share(o.connections, plan.proc, plan.procs)
                        for i in range(n):
                            load.start_soon(self.user, t0 + o.ramp * i / max(1, n), end)
            top.cancel_scope.cancel()
        self.pipe.send(("done", plan.proc, self.rec.take(), (time.monotonic(), time.process_time())))

    async def flush_every_second(self) -> None:
        while True:
            await trio.sleep(FLUSH_SECONDS)
            self.pipe.send(("stats", self.plan.proc, self.rec.take(), (time.monotonic(), time.process_time())))

    def next_job(self) -> tuple[str, Sandbox]:
        return self.scenarios.pick(self.rng), self.sandboxes.pick(self.rng)

    async def run(self, scenario: str, sb: Sandbox, since: float, slot: Slot) -> None:
        """Run one request (or session) and file its outcome: answered with its latency from `since`, or one error."""
        rec = self.rec
        deadline = since + self.o.timeout + session_seconds(self.o, scenario)
        try:
            with trio.move_on_at(deadline) as scope:
                answered = await RUN[scenario](self.ctx, slot, sb, deadline)
            now = trio.current_time()
            if scope.cancelled_caught:
                slot.drop()
                rec.error(scenario, wire.TIMEOUT, now)
            else:
                rec.answered(scenario, now, answered - since)
        except LoadError as exc:
            rec.error(scenario, exc.kind, trio.current_time())
        except trio.Cancelled:
            slot.drop()
            rec.error(scenario, wire.TIMEOUT, trio.current_time())
            raise

    # --- closed loop ------------------------------------------------------------------------------------

    async def user(self, start: float, end: float) -> None:
        await trio.sleep_until(start)
        slot = Slot()
        try:
            while (now := trio.current_time()) < end:
                scenario, sb = self.next_job()
                self.rec.sent(scenario, now)
                await self.run(scenario, sb, now, slot)
        finally:
            slot.drop()

    # --- open loop --------------------------------------------------------------------------------------

    async def open_loop(self, nursery: trio.Nursery, t0: float, end: float) -> None:
        o, plan, rec = self.o, self.plan, self.rec
        rate = o.rate / plan.procs
        phase = plan.proc / plan.procs
        send, receive = trio.open_memory_channel(math.inf)
        for _ in range(share(o.connections, plan.proc, plan.procs)):
            nursery.start_soon(self.pool_worker, receive)
        try:
            for k in itertools.count():
                t = t0 + due(k, rate, o.ramp, phase)
                if t >= end:
                    break
                now = trio.current_time()
                if t > now + EARLY:
                    await trio.sleep_until(t - EARLY)
                    now = trio.current_time()
                rec.latency("lag", now, max(0.0, now - t))
                # Latency counts from the due time when the request goes out late (that wait is the
                # point of an open loop) and from the real start when it goes out a little early.
                since = min(t, now)
                scenario, sb = self.next_job()
                rec.sent(scenario, t)
                if scenario in SESSIONS:
                    nursery.start_soon(self.run, scenario, sb, since, Slot())
                else:
                    send.send_nowait((scenario, sb, since))
        finally:
            send.close()  # the pool workers finish what is queued, then stop

    async def pool_worker(self, receive) -> None:
        slot = Slot()
        timeout, rec = self.o.timeout, self.rec
        try:
            async for scenario, sb, t in receive:
                now = trio.current_time()
                if now - t > timeout:
                    rec.error(scenario, wire.BACKLOG, now)
                    continue
                await self.run(scenario, sb, t, slot)
        finally:
            slot.drop()
            # The run's safety net cancelled us: whatever is still queued was sent and never answered.
            while True:
                try:
                    scenario, _, _ = receive.receive_nowait()
                except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
                    break
                rec.error(scenario, wire.BACKLOG, trio.current_time())

    # --- DNS --------------------------------------------------------------------------------------------

    async def dns(self, t0: float, end: float) -> None:
        """Queries for sandbox names at --qps (open loop), dnsperf-like; answered = NOERROR with an answer."""
        o, plan, rec = self.o, self.plan, self.rec
        qps = o.qps / plan.procs
        timeout = o.timeout
        host, port = o.dns_addr
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        # 16-bit IDs: one socket per 30,000 queries that may be outstanding at once.
        socks = []
        for _ in range(max(1, math.ceil(qps * timeout / 30000))):
            s = trio.socket.socket(family, socket.SOCK_DGRAM)
            await s.connect((host, port))
            socks.append(s)
        pending: dict[tuple[int, int], float] = {}
        next_id = [random.randrange(65536) for _ in socks]

        async def receive(i: int, s) -> None:
            while True:
                try:
                    data = await s.recv(4096)
                except OSError:  # ICMP port unreachable: the queries it answered will time out
                    continue
                try:
                    qid, rcode, answers, truncated = wire.dns_reply(data)
                except ValueError:
                    rec.count("dns_garbage", trio.current_time())
                    continue
                t = pending.pop((i, qid), None)
                if t is None:
                    continue  # answered after its timeout: already counted
                now = trio.current_time()
                kind = wire.dns_error(rcode, answers, truncated)
                if kind:
                    rec.error("dns", kind, now)
                else:
                    rec.answered("dns", now, now - t)

        def expire(older_than: float) -> None:
            now = trio.current_time()
            for key, t in list(pending.items()):  # insertion order is due order
                if t > older_than:
                    break
                del pending[key]
                rec.error("dns", wire.DNS_TIMEOUT, now)

        async def sweep() -> None:
            while True:
                await trio.sleep(0.05)
                expire(trio.current_time() - timeout)

        try:
            async with trio.open_nursery() as nursery:
                for i, s in enumerate(socks):
                    nursery.start_soon(receive, i, s)
                nursery.start_soon(sweep)
                for k in itertools.count():
                    t = t0 + due(k, qps, o.ramp, plan.proc / plan.procs)
                    if t >= end:
                        break
                    if t > trio.current_time() + EARLY:
                        await trio.sleep_until(t - EARLY)
                    i = k % len(socks)
                    qid = next_id[i]
                    next_id[i] = (qid + 1) & 0xFFFF
                    if (i, qid) in pending:  # outstanding for 65,536 queries: long timed out
                        del pending[(i, qid)]
                        rec.error("dns", wire.DNS_TIMEOUT, trio.current_time())
                    sb = self.sandboxes.pick(self.rng)
                    rec.sent("dns", t)
                    pending[(i, qid)] = t
                    try:
                        await socks[i].send(wire.dns_query(qid, wire.host_for(sb.port, sb.id, o.domain)))
                    except OSError:
                        pending.pop((i, qid), None)
                        rec.error("dns", wire.CONNECT_REFUSED, trio.current_time())
                with trio.move_on_after(timeout + 0.1):
                    while pending:
                        await trio.sleep(0.05)
                nursery.cancel_scope.cancel()
        finally:
            expire(math.inf)
            for s in socks:
                s.close()


def worker(plan: Plan, pipe) -> None:
    """A worker process's entry point (forked by bench/load.py)."""
    try:
        trio.run(Worker(plan, pipe).main)
    except KeyboardInterrupt:
        pass
    finally:
        pipe.close()
