"""One coroutine per scenario. Each sends its request(s) through the edge and returns the moment it
counts as answered, or raises `LoadError(kind)`; the driver times it and files the outcome.

What "answered" means, so the latency percentiles mean one thing per scenario:

    small     GET --path on a keep-alive connection: the whole answer read
    newconn   the same on a new connection (connect + request + answer; `connection: close`)
    download  GET /bytes?n=SIZE: the last of SIZE bytes read (fewer: bad_response)
    upload    POST /upload with SIZE bytes: the sandbox's answer, which must be the count it read
    ws        GET /ws upgrade: the 101 read and its Sec-WebSocket-Accept checked; then the session sends
              --ws-messages binary messages --ws-interval apart, each echo checked and its round trip
              filed under `ws_echo`, and closes (1000). The session fails if any step does.
    sse       GET /sse?n=EVENTS&gap=INTERVAL: the first event read; the stream must then deliver every
              event and end
    churn     PUT a new sandbox through the admin API, GET it through the edge every --churn-poll until
              it stops answering sandbox_not_found: the first real answer; then DELETE it. The time from
              the PUT's answer to that first answer is filed under `churn_routable`.

The paths are the ones bench/sandboxd.py serves; a sandbox that does not serve them answers 404,
counted as sandbox_4xx.
"""

from __future__ import annotations

import itertools
import os

import trio

from bench.loadlib import wire
from bench.loadlib.admin import Admin, AdminError
from bench.loadlib.conn import Conn, LoadError, Slot
from bench.loadlib.hist import Recorder
from bench.loadlib.options import Sandbox, Target

TOKEN_HEADER = "e2b-traffic-access-token"


class Ctx:
    """What every scenario of one worker process shares: where to go, the settings, the recorder."""

    def __init__(
        self, opts, target: Target, ssl_ctx, rec: Recorder, admin: Admin | None, proc: int, prefix: str
    ) -> None:
        self.opts = opts
        self.target = target
        self.ssl_ctx = ssl_ctx
        self.rec = rec
        self.admin = admin
        self.prefix = prefix
        self.proc = proc
        self.churn_ids = itertools.count()
        self.upload_body = memoryview(b"\0" * opts.upload_size)
        self.ws_mask = os.urandom(4)
        self._wire: dict[tuple[str, int], dict[str, bytes]] = {}

    def host(self, sb: Sandbox) -> str:
        return wire.host_for(sb.port, sb.id, self.opts.domain, self.target.suffix)

    def requests(self, sb: Sandbox) -> dict[str, bytes]:
        """Every request head this sandbox is sent, built once."""
        key = (sb.id, sb.port)
        got = self._wire.get(key)
        if got is None:
            o = self.opts
            host = self.host(sb)
            token = sb.token or o.token
            extra = [(TOKEN_HEADER, token)] if token else []
            got = self._wire[key] = {
                "small": wire.request_head("GET", o.path, host, extra),
                "newconn": wire.request_head("GET", o.path, host, [*extra, ("connection", "close")]),
                "download": wire.request_head("GET", f"/bytes?n={o.download_size}", host, extra),
                "upload": wire.request_head(
                    "POST", "/upload", host, [*extra, ("content-type", "application/octet-stream")], o.upload_size
                ),
                "sse": wire.request_head(
                    "GET",
                    f"/sse?n={o.sse_events}&gap={o.sse_interval:g}",
                    host,
                    [*extra, ("accept", "text/event-stream")],
                ),
            }
            if len(self._wire) > 100_000:  # bounded, whatever churn does
                self._wire.clear()
        return got

    def forget(self, sb: Sandbox) -> None:
        self._wire.pop((sb.id, sb.port), None)

    async def connect(self, sb: Sandbox, deadline: float) -> Conn:
        return await Conn.open(self.target, deadline, self.ssl_ctx, self.host(sb).partition(":")[0])


def check(head: wire.Head, body: bytes) -> None:
    kind = wire.classify(head.status, head.edge_error, body)
    if kind:
        raise LoadError(kind, f"status {head.status}")


async def exchange(
    ctx: Ctx, slot: Slot, sb: Sandbox, parts: tuple, deadline: float, method: str = "GET", keep: int | None = None
) -> tuple[wire.Head, int, bytes]:
    """One request on the slot's keep-alive connection (opened when there is none). A reused connection
    that the server closed while it was idle (no byte of an answer) is replaced and the request sent
    again, once, as HTTP clients do for idempotent requests; `keepalive_retries` counts those."""
    for attempt in (0, 1):
        conn = slot.conn
        reused = conn is not None
        if conn is None:
            conn = slot.conn = await ctx.connect(sb, deadline)
        try:
            for part in parts:
                await conn.send(part)
            head, n, body = await conn.response(method, keep=keep)
        except LoadError as exc:
            slot.drop()
            if reused and exc.idle and attempt == 0 and method == "GET":
                ctx.rec.count("keepalive_retries", trio.current_time())
                continue
            raise
        except BaseException:
            slot.drop()  # cancelled mid-answer: the connection's state is unknown
            raise
        if head.close:
            slot.drop()
        return head, n, body
    raise AssertionError("unreachable")


async def small(ctx: Ctx, slot: Slot, sb: Sandbox, deadline: float) -> float:
    head, _, body = await exchange(ctx, slot, sb, (ctx.requests(sb)["small"],), deadline)
    check(head, body)
    return trio.current_time()


async def newconn(ctx: Ctx, slot: Slot, sb: Sandbox, deadline: float) -> float:
    conn = await ctx.connect(sb, deadline)
    try:
        await conn.send(ctx.requests(sb)["newconn"])
        head, _, body = await conn.response()
    finally:
        conn.close()
    check(head, body)
    return trio.current_time()


async def download(ctx: Ctx, slot: Slot, sb: Sandbox, deadline: float) -> float:
    head, n, body = await exchange(ctx, slot, sb, (ctx.requests(sb)["download"],), deadline)
    check(head, body)
    now = trio.current_time()
    if n != ctx.opts.download_size:
        raise LoadError(wire.BAD_RESPONSE, f"downloaded {n} bytes of {ctx.opts.download_size}")
    ctx.rec.count("download_bytes", now, n)
    return now


async def upload(ctx: Ctx, slot: Slot, sb: Sandbox, deadline: float) -> float:
    size = ctx.opts.upload_size
    head, _, body = await exchange(ctx, slot, sb, (ctx.requests(sb)["upload"], ctx.upload_body), deadline, "POST", 256)
    check(head, body)
    now = trio.current_time()
    if body.strip() != str(size).encode():
        raise LoadError(wire.BAD_RESPONSE, f"the sandbox read {body[:20]!r} bytes of {size}")
    ctx.rec.count("upload_bytes", now, size)
    return now


async def ws(ctx: Ctx, slot: Slot, sb: Sandbox, deadline: float) -> float:
    o = ctx.opts
    key = wire.ws_key()
    token = sb.token or o.token
    headers = [
        ("upgrade", "websocket"),
        ("connection", "Upgrade"),
        ("sec-websocket-key", key),
        ("sec-websocket-version", "13"),
    ]
    if token:
        headers.append((TOKEN_HEADER, token))
    conn = await ctx.connect(sb, deadline)
    try:
        await conn.send(wire.request_head("GET", "/ws", ctx.host(sb), headers))
        head = await conn.read_head()
        if head.status != 101:
            _, body = await conn.read_body(head, keep=4096)
            check(head, body)
            raise LoadError(wire.BAD_RESPONSE, f"status {head.status} to a WebSocket upgrade")
        if head.accept != wire.ws_accept(key):
            raise LoadError(wire.BAD_RESPONSE, "wrong Sec-WebSocket-Accept")
        answered = trio.current_time()
        filler = b"x" * max(0, o.ws_size - 8)
        for i in range(o.ws_messages):
            payload = (i.to_bytes(8, "big") + filler)[: o.ws_size]
            sent = trio.current_time()
            await conn.send(wire.ws_frame(wire.OP_BINARY, payload, ctx.ws_mask))
            while True:
                opcode, echoed = await conn.read_frame()
                if opcode not in (wire.OP_PING, wire.OP_PONG):
                    break
            now = trio.current_time()
            if opcode != wire.OP_BINARY or echoed != payload:
                raise LoadError(wire.BAD_RESPONSE, f"message {i} not echoed (opcode {opcode}, {len(echoed)} bytes)")
            ctx.rec.latency("ws_echo", now, now - sent)
            ctx.rec.count("ws_messages", now)
            if i < o.ws_messages - 1 and o.ws_interval > 0:
                await trio.sleep(o.ws_interval)
        await conn.send(wire.ws_frame(wire.OP_CLOSE, (1000).to_bytes(2, "big"), ctx.ws_mask))
        while True:
            opcode, _ = await conn.read_frame()
            if opcode == wire.OP_CLOSE:
                break
    finally:
        conn.close()
    return answered


async def sse(ctx: Ctx, slot: Slot, sb: Sandbox, deadline: float) -> float:
    o = ctx.opts
    conn = await ctx.connect(sb, deadline)
    first: list[float] = []
    events = 0
    tail = b""

    def on_data(piece: bytes) -> None:
        nonlocal events, tail
        joined = tail + piece
        found = joined.count(b"\n\n")
        if found:
            if not first:
                first.append(trio.current_time())
            events += found
        tail = joined[-1:]

    try:
        await conn.send(ctx.requests(sb)["sse"])
        head = await conn.read_head()
        if head.status >= 400:
            _, body = await conn.read_body(head, keep=4096)
            check(head, body)
        if not head.content_type.startswith(b"text/event-stream"):
            raise LoadError(wire.BAD_RESPONSE, f"content type {head.content_type[:40]!r}, not text/event-stream")
        await conn.read_body(head, on_data=on_data)
    finally:
        conn.close()
    if events != o.sse_events or not first:
        raise LoadError(wire.BAD_RESPONSE, f"{events} events of {o.sse_events}")
    ctx.rec.count("sse_events", trio.current_time(), events)
    return first[0]


async def churn(ctx: Ctx, slot: Slot, sb: Sandbox, deadline: float) -> float:
    """The new sandbox copies the address and port of `sb` (the picked one, when this run registered it and so
    knows its address) or of one of `opts.churn_templates` (looked up through the admin API at the start)."""
    o = ctx.opts
    admin = ctx.admin
    assert admin is not None
    sid = f"{ctx.prefix}-c{ctx.proc}x{next(ctx.churn_ids)}"
    if sb.address is None:
        sb = o.churn_templates[next(ctx.churn_ids) % len(o.churn_templates)]
    address = sb.address
    try:
        await admin.put(sid, address)
    except (AdminError, LoadError) as exc:
        raise LoadError(wire.ADMIN_ERROR, str(exc)) from None
    registered = trio.current_time()
    probe = Sandbox(sid, sb.port, None, address)
    request = (ctx.requests(probe)["small"],)
    mine = Slot()
    removed = False
    try:
        with trio.move_on_at(deadline) as scope:
            while True:
                head, _, body = await exchange(ctx, mine, probe, request, deadline)
                if head.edge_error != "sandbox_not_found":
                    break
                ctx.rec.count("churn_probes", trio.current_time())
                await trio.sleep(o.churn_poll)
        if scope.cancelled_caught:
            raise LoadError(wire.NOT_ROUTABLE, f"{sid} not routable within --timeout")
        check(head, body)
        answered = trio.current_time()
        ctx.rec.latency("churn_routable", answered, answered - registered)
    finally:
        mine.drop()
        ctx.forget(probe)
        with trio.CancelScope(shield=True), trio.move_on_after(10):
            try:
                await admin.delete(sid)  # a 404 (already gone) is as good
                removed = True
            except (AdminError, LoadError):
                pass
        if not removed:
            ctx.rec.count("churn_leftover", trio.current_time())
    if not removed:
        raise LoadError(wire.ADMIN_ERROR, f"DELETE {sid} failed")
    return answered


RUN = {
    "small": small,
    "newconn": newconn,
    "download": download,
    "upload": upload,
    "ws": ws,
    "sse": sse,
    "churn": churn,
}


def session_seconds(opts, scenario: str) -> float:
    """How long a scenario's session lasts on its own, beyond waiting for answers (added to its deadline)."""
    if scenario == "ws":
        return max(0, opts.ws_messages - 1) * opts.ws_interval
    if scenario == "sse":
        return max(0, opts.sse_events - 1) * opts.sse_interval
    return 0.0
