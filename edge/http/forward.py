"""One exchange with a sandbox in the h11 lane: route, rewrite, forward the request, relay the answer.

The second half of the request path (conn.py is the first; fastlane.py is the other lane, and shares
`_plan`, `_enter`/`_leave`, `_read_upstream` and `_relay` from here): given a parsed and checked request, find
the sandbox, apply access rules and limits, build the upstream head, send it on a pooled or new
connection and relay the answer, pumping a request body in a second task meanwhile.

  route   the Host (or an absolute-form target that agrees with it) names port and sandbox; the
          sandbox comes from the catalog snapshot taken for this request.
  access  a private sandbox needs its token (access.py); a sandbox at max_connections gets 429.
  rewrite `headers.rewrite_request` builds the upstream head.
  forward the body, if any, is pumped by a second task while this one relays the response, so a
          sandbox may answer before the upload ends.
  relay   1xx (but 101), the response head and each body chunk go to the client as they arrive:
          streams and server-sent events are never buffered. Large Content-Length bodies move by
          splice(2). A 101 turns both sockets into a tunnel (`splice.Tunnel`), bytes already read
          past either head going first.

`Forwarder` (like `fastlane.FastLane`) is a mixin of `conn.ClientConnection`: the parts share one
connection's state (`self.h`, `self.fd`, the splice flags) but live in separate files, each one stage.
"""

from __future__ import annotations

import logging
import os
import time

import h11
import trio

from edge.errors import (
    BadHost,
    BadRequest,
    EdgeError,
    HeadTooLarge,
    LoopDetected,
    NotImplementedByEdge,
    RequestTimeout,
    SandboxNotFound,
    TooManyConnections,
    UpstreamError,
    UpstreamTimeout,
)
from edge.http import sockio
from edge.http.access import authorize
from edge.http.headers import connection_tokens, is_upgrade, masked_host, rewrite_request, rewrite_response
from edge.http.route import split_target
from edge.http.splice import Pipe, SpliceError, Tunnel, splice
from edge.http.upstream import Upstream
from edge.metrics import STATS

logger = logging.getLogger("edge.http")
# Durations for logs and metrics: a plain monotonic clock (trio's current_time is the same clock behind
# four calls; deadlines still use trio's).
clock = time.perf_counter

_os_read = os.read
_wait_readable = trio.lowlevel.wait_readable

GONE = (trio.BrokenResourceError, trio.ClosedResourceError, OSError)
# Methods safe to resend when a pooled connection turns out to be dead before any answer.
RETRYABLE = frozenset((b"GET", b"HEAD", b"OPTIONS", b"PUT", b"DELETE", b"TRACE"))


class Exchange:
    """One request and its answer, for the access log and for deciding what the connection does next."""

    __slots__ = (
        "start", "method", "host", "path", "sandbox", "port", "status",
        "bytes_in", "bytes_out", "connect_ms", "headers",
    )

    def __init__(self, start: float) -> None:
        self.start = start
        self.method = b"-"
        self.host = b"-"
        self.path = b"-"
        self.sandbox = None
        self.port = None
        self.status = 0
        self.bytes_in = 0
        self.bytes_out = 0
        self.connect_ms = None
        self.headers = None


class Plan:
    """Where a request goes and what it carries there: the outcome of route, access and rewrite."""

    __slots__ = ("sandbox", "port", "target", "headers", "tokens", "upgrade", "redirect")

    def __init__(self, sandbox, port: int) -> None:
        self.sandbox = sandbox
        self.port = port
        self.target = b""
        self.headers: list = []
        self.tokens: frozenset[bytes] = frozenset()
        self.upgrade: bytes | None = None
        self.redirect: tuple[bytes, bytes] | None = None  # (Location, Set-Cookie): answer 303 instead


class Tunnelled(Exception):
    """Internal: the exchange became a tunnel; the connection ends after it."""


def translate(exc: h11.RemoteProtocolError) -> EdgeError:
    hint = exc.error_status_hint
    if hint == 431:
        return HeadTooLarge("The request head is too large")
    if hint == 501:
        return NotImplementedByEdge(str(exc))
    return BadRequest(f"Malformed request: {exc}")


class Stale(Exception):
    """Internal: a pooled connection was dead before the sandbox said anything; retry on a new one."""


class ClientGone(Exception):
    """Internal: a write to the client failed; it left."""


class ClientMustClose(Exception):
    """Internal: the response broke after its head was sent; the client connection must be dropped."""


class Forwarder:
    """The exchange-with-a-sandbox half of ClientConnection (see the module docstring)."""

    __slots__ = ()

    def _plan(self, ex: Exchange, method: bytes, raw_target: bytes, headers: list, host: bytes) -> Plan:
        """Route, access and rewrite for one request head (both lanes): what to send, and to whom.

        Raises the EdgeError the request deserves (400 bad host, 404, 403). No I/O.
        """
        ctx = self.ctx
        authority, target = split_target(raw_target)
        if authority is not None:
            # RFC 9112 3.2.2: with an absolute-form target the server uses its authority; a Host
            # that says something else is a confused (or smuggling) client.
            if host and authority.lower() != host.lower():
                raise BadHost("The request target and the Host header name different hosts")
            host = authority
        ex.host = host
        q = target.find(b"?")
        ex.path = target if q < 0 else target[:q]
        port, sandbox_id = ctx.router.route(host)
        ex.port = port
        ex.sandbox = sandbox_id
        sandbox = ctx.live.snapshot.get(sandbox_id)
        if sandbox is None:
            raise SandboxNotFound(sandbox_id, port)
        own = ctx.own
        if port in own.ports and own.targets(sandbox.address, port):
            raise LoopDetected(sandbox_id, port, f"{sandbox.address} port {port} is the edge's own listener")
        plan = Plan(sandbox, port)
        if not sandbox.public:
            grant = authorize(sandbox, method, headers, target, port, ctx.secure, host)
            if grant.redirect is not None:
                plan.redirect = grant.redirect
                return plan
            headers, target = grant.headers, grant.target
        tokens = connection_tokens(headers)
        upgrade = is_upgrade(headers, tokens) if tokens else None
        plan.target = target
        plan.tokens = tokens
        plan.upgrade = upgrade
        plan.headers = rewrite_request(
            headers,
            tokens=tokens,
            host=host,
            upstream_host=masked_host(sandbox.mask_request_host, port) if sandbox.mask_request_host else host,
            client_ip=self.client_ip,
            scheme=ctx.scheme,
            forwarded_port=ctx.forwarded_port,
            via=ctx.via,
            upgrade=upgrade,
        )
        return plan

    async def _redirect(self, ex: Exchange, plan: Plan) -> None:
        """The 303 that trades ?edge_token= for a cookie (access.py)."""
        location, cookie = plan.redirect
        await self._answer(ex, 303, [(b"location", location), (b"set-cookie", cookie),
                                     (b"cache-control", b"no-store"), (b"content-length", b"0")], b"", False)

    async def _forward(self, request: h11.Request, ex: Exchange) -> None:
        host = b""
        for name, value in ex.headers:
            if name == b"host":
                host = value
                break
        plan = self._plan(ex, request.method, request.target, ex.headers, host)
        if plan.redirect is not None:
            await self._redirect(ex, plan)
            return
        self._req_keepalive = request.http_version == b"1.1" and b"close" not in plan.tokens
        # _parsed=True: every field either came out of h11's parser or was checked when it was made
        # (catalog masks, our own constants), so h11's per-field regexes would only repeat work.
        outgoing = h11.Request(method=request.method, target=plan.target, headers=plan.headers, _parsed=True)

        # A body-less request is complete already: its EndOfMessage is in h11's buffer.
        first = self.h.next_event()
        body_done = type(first) is h11.EndOfMessage
        sandbox, port = plan.sandbox, plan.port
        self._enter(sandbox, port)
        try:
            await self._send_upstream(sandbox, port, request.method, outgoing, first, body_done, ex)
        finally:
            self._leave(sandbox)

    def _enter(self, sandbox, port: int) -> None:
        """Count an exchange against the sandbox's max_connections, or refuse it (429); and register
        it as in flight on this record, for a catalog change that revokes it (ServerContext)."""
        limit = sandbox.max_connections
        if limit is not None:
            active = self.ctx.active
            n = active.get(sandbox.id, 0)
            if n >= limit:
                raise TooManyConnections(sandbox.id, port, limit)
            active[sandbox.id] = n + 1
        self.ctx.inflight[self] = sandbox

    def _leave(self, sandbox) -> None:
        del self.ctx.inflight[self]
        self.upstream = None
        if sandbox.max_connections is not None:
            active = self.ctx.active
            active[sandbox.id] -= 1
            if not active[sandbox.id]:
                del active[sandbox.id]

    async def _send_upstream(self, sandbox, port: int, method: bytes, outgoing, first, body_done: bool,
                             ex: Exchange) -> None:
        ctx = self.ctx
        key = (sandbox.id, sandbox.address, port)
        attempts = 2 if body_done and method in RETRYABLE else 1
        retried = False
        while True:
            attempts -= 1
            t0 = clock()
            up = await ctx.pool.acquire(key, fresh=retried)
            ex.connect_ms = round((clock() - t0) * 1000, 3)
            self.upstream = up
            up.client_fd = self.fd
            try:
                data = up.h11.send(outgoing)
                if body_done:
                    data += up.h11.send(h11.EndOfMessage(headers=first.headers))
                try:
                    await sockio.write_all(up.fd, data)
                except OSError as exc:
                    if up.reused:  # the pooled connection died while idle: nothing was sent
                        raise Stale() from None
                    raise UpstreamError(sandbox.id, port, f"sending the request: {exc.strerror}") from None
                if body_done:
                    await self._relay(up, ex)
                else:
                    await self._relay_with_body(up, ex, first)
            except Stale:
                up.close()
                if attempts > 0 and not self.revoked:
                    retried = True
                    continue
                raise UpstreamError(sandbox.id, port, "connection closed before a response") from None
            except BaseException:
                up.close()
                raise
            self._release(up)
            return

    def _release(self, up: Upstream) -> None:
        """After an h11-lane exchange: the upstream connection back to the pool, or closed."""
        if self._spliced_up or self._spliced_down:
            if self._upstream_reusable(up):
                up.h11 = h11.Connection(h11.CLIENT)
                self.ctx.pool.release(up)
            else:
                up.close()
        else:
            self.ctx.pool.release(up)

    async def _relay_with_body(self, up: Upstream, ex: Exchange, first) -> None:
        """Pump the request body in a second task while this one relays the response."""
        self._pump_error = None
        relay_error = None
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._pump, up, ex, first, nursery.cancel_scope)
            try:
                await self._relay(up, ex)
            except Exception as exc:  # noqa: BLE001 - re-raised below, after the pump stopped
                relay_error = exc
            # Answered before the body ended (or failed): stop pumping. The connection closes after.
            nursery.cancel_scope.cancel()
        if relay_error is not None:
            raise relay_error
        if self._pump_error is not None:
            raise self._pump_error

    async def _pump(self, up: Upstream, ex: Exchange, event, scope: trio.CancelScope) -> None:
        """Client body -> sandbox, chunk by chunk, in constant memory."""
        h = self.h
        idle = self.ctx.http.body_idle_timeout
        try:
            if h.they_are_waiting_for_100_continue:
                # The Expect header was not forwarded: we say 100 ourselves, as nginx does.
                await sockio.write_all(self.fd, h.send(h11.InformationalResponse(status_code=100, headers=[])))
            length = _content_length(ex.headers) if self.ctx.http.splice_threshold else None
            while True:
                if event is h11.NEED_DATA:
                    if length is not None and length - ex.bytes_in >= self.ctx.http.splice_threshold:
                        await self._splice_body(self.stream, up.stream, length - ex.bytes_in, ex, True)
                        self._spliced_up = True
                        return
                    with trio.fail_after(idle):
                        h.receive_data(await sockio.read(self.fd, self.ctx.http.read_size))
                    event = h.next_event()
                    continue
                t = type(event)
                if t is h11.Data:
                    ex.bytes_in += len(event.data)
                    await self._to_upstream(up, up.h11.send(event), ex)
                elif t is h11.EndOfMessage:
                    await self._to_upstream(up, up.h11.send(event), ex)
                    return
                else:  # ConnectionClosed mid-body
                    raise BadRequest("The client closed the connection before the request body ended")
                event = h.next_event()
        except h11.RemoteProtocolError as exc:
            self._pump_error = translate(exc)
        except SpliceError as exc:
            self._pump_error = (
                BadRequest("The client connection failed before the request body ended") if exc.source
                else UpstreamError(ex.sandbox, ex.port, f"sending the request body: {exc}")
            )
        except trio.TooSlowError:
            self._pump_error = RequestTimeout("The request body stalled")
        except GONE as exc:
            self._pump_error = exc
        except Exception as exc:  # noqa: BLE001 - handed to the relaying task
            self._pump_error = exc
        else:
            return
        scope.cancel()

    async def _to_upstream(self, up: Upstream, data: bytes, ex: Exchange) -> None:
        """A write to the sandbox; its failure is the sandbox's (502), never the client's."""
        try:
            await sockio.write_all(up.fd, data)
        except OSError as exc:
            raise UpstreamError(ex.sandbox, ex.port, f"sending the request body: {exc.strerror}") from None

    async def _send_client(self, data: bytes) -> None:
        try:
            await sockio.write_all(self.fd, data)
        except GONE:
            raise ClientGone() from None

    async def _splice_body(self, src: trio.SocketStream, dst: trio.SocketStream, n: int, ex: Exchange,
                           upload: bool) -> None:
        """Move the last `n` bytes of a Content-Length body by splice; a short count is a broken body.

        An upload keeps the h11 path's rule: body_idle_timeout seconds without progress is a 408."""
        moved = 0
        with Pipe() as pipe:
            if upload:
                idle = self.ctx.http.body_idle_timeout
                with trio.CancelScope(deadline=trio.current_time() + idle) as scope:

                    def progress(_: int) -> None:
                        scope.deadline = trio.current_time() + idle

                    moved = await splice(src.socket, dst.socket, n, pipe, progress)
                if scope.cancelled_caught:
                    raise RequestTimeout("The request body stalled")
            else:
                moved = await splice(src.socket, dst.socket, n, pipe)
        if upload:
            ex.bytes_in += moved
        else:
            ex.bytes_out += moved
        if moved < n:
            raise SpliceError(True, ConnectionError(f"peer closed after {moved} of {n} body bytes"))

    async def _read_upstream(self, up: Upstream, deadline: float, ex: Exchange) -> bytes:
        """One read from the sandbox; UpstreamTimeout (504) once `deadline` passes.

        The deadline is kept by the server's reaper (ServerContext.awaiting), which ends the wait
        through `Upstream.expire`. A trio cancel scope per response head did the same and cost about a
        third of a fast-lane exchange under load (its deadline bookkeeping, on every request).
        """
        fd = up.fd
        read_size = self.ctx.http.read_size
        while True:
            try:
                return _os_read(fd, read_size)
            except BlockingIOError:
                pass
            awaiting = self.ctx.awaiting
            awaiting[up] = deadline
            try:
                await _wait_readable(fd)
            except trio.ClosedResourceError:
                why = up.expired
                if why == "timeout":
                    raise UpstreamTimeout(ex.sandbox, ex.port, "response") from None
                if why == "client":
                    raise ClientGone() from None  # logged as 499
                if why == "revoked":
                    raise ClientMustClose() from None
                raise
            finally:
                awaiting.pop(up, None)

    async def _response_head(self, up: Upstream, ex: Exchange):
        """The sandbox's Response (or its 101), forwarding other 1xx answers as they come."""
        answered = False  # any 1xx seen: then a failure is no longer a stale pooled connection
        deadline = trio.current_time() + self.ctx.http.response_head_timeout
        conn = up.h11
        while True:
            try:
                event = conn.next_event()
                while event is h11.NEED_DATA:
                    conn.receive_data(await self._read_upstream(up, deadline, ex))
                    event = conn.next_event()
            except (h11.RemoteProtocolError, *GONE) as exc:
                # A pooled connection the sandbox closed while idle: nothing was answered.
                if up.reused and not answered:
                    raise Stale() from None
                raise UpstreamError(ex.sandbox, ex.port, str(exc) or type(exc).__name__) from None
            t = type(event)
            if t is h11.Response:
                return event
            if t is not h11.InformationalResponse:  # ConnectionClosed before any answer
                if up.reused:
                    raise Stale()
                raise UpstreamError(ex.sandbox, ex.port, "closed before a response")
            if event.status_code == 101:
                return event
            answered = True
            await sockio.write_all(self.fd, self.h.send(h11.InformationalResponse(
                status_code=event.status_code,
                headers=rewrite_response(list(event.headers), event.status_code),
                reason=event.reason, _parsed=True)))

    async def _relay(self, up: Upstream, ex: Exchange) -> None:
        """Sandbox response -> client, as it arrives.

        Output is gathered while h11 has events buffered and written just before the next read from
        the sandbox would block: a small response costs one write (head, body and end together),
        and a stream still leaves each chunk the moment nothing more is at hand.
        """
        h = self.h
        fd = self.fd
        write_all = sockio.write_all
        event = await self._response_head(up, ex)
        status = event.status_code
        if status == 101:
            await self._tunnel(up, ex, event)
        ex.status = status
        response_headers = list(event.headers)  # walked once (see _exchange)
        response_tokens = connection_tokens(response_headers)
        pending = [h.send(h11.Response(status_code=status,
                                       headers=rewrite_response(response_headers, status, response_tokens),
                                       reason=event.reason, _parsed=True))]
        conn = up.h11
        up_fd = up.fd
        read = sockio.read
        read_size = self.ctx.http.read_size
        self._resp_keepalive = event.http_version == b"1.1" and b"close" not in response_tokens
        threshold = self.ctx.http.splice_threshold
        length = _content_length(response_headers) if threshold else None
        while True:
            try:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    if length is not None and length - ex.bytes_out >= threshold:
                        if pending:
                            await self._send_client(b"".join(pending))
                        try:
                            await self._splice_body(up.stream, self.stream, length - ex.bytes_out, ex, False)
                        except SpliceError as exc:
                            if not exc.source:
                                raise ClientGone() from None
                            raise
                        self._spliced_down = True
                        return
                    if pending:
                        out = pending[0] if len(pending) == 1 else b"".join(pending)
                        pending.clear()
                        try:
                            await write_all(fd, out)
                        except GONE:
                            raise ClientGone() from None
                    conn.receive_data(await read(up_fd, read_size))
                    continue
            except (h11.RemoteProtocolError, SpliceError, *GONE) as exc:
                # The sandbox broke the body mid-way. The client already has our head: the honest
                # signal left is to close without finishing the body, which it sees as truncation.
                self._log_broken(ex, exc)
                raise ClientMustClose() from None
            if type(event) is h11.Data:
                ex.bytes_out += len(event.data)
                pending.append(h.send(event))
            else:  # EndOfMessage (h11 yields ConnectionClosed only after it)
                pending.append(h.send(event))
                await write_all(fd, b"".join(pending))
                return

    async def _tunnel(self, up: Upstream, ex: Exchange, event: h11.InformationalResponse) -> None:
        h = self.h
        if h.their_state is not h11.MIGHT_SWITCH_PROTOCOL:
            raise UpstreamError(ex.sandbox, ex.port, "101 Switching Protocols to a request that did not ask")
        ex.status = 101
        await sockio.write_all(self.fd, h.send(h11.InformationalResponse(
            status_code=101, headers=rewrite_response(list(event.headers), 101), reason=event.reason, _parsed=True)))
        # Bytes read past either head belong to the new protocol: they go first.
        client_pending = h.trailing_data[0]
        upstream_pending = up.h11.trailing_data[0]
        tunnel = Tunnel()
        STATS.http_active_tunnels += 1
        try:
            await tunnel.run(self.stream, up.stream, client_pending, upstream_pending)
        finally:
            STATS.http_active_tunnels -= 1
            up.close()
            ex.bytes_in += tunnel.bytes_up
            ex.bytes_out += tunnel.bytes_down
        raise Tunnelled()

    @staticmethod
    def _log_broken(ex: Exchange, exc: BaseException) -> None:
        logger.info("sandbox %s port %s broke its response body: %s", ex.sandbox, ex.port, exc)

    def _upstream_reusable(self, up: Upstream) -> bool:
        """After a spliced exchange: may this upstream connection carry another request?"""
        conn = up.h11
        return (self._resp_keepalive and (self._spliced_down or conn.their_state is h11.DONE)
                and (self._spliced_up or conn.our_state is h11.DONE))


async def next_event(conn: h11.Connection, fd: int, read_size: int):
    """The next h11 event on either side, reading from the socket while h11 needs data."""
    while True:
        event = conn.next_event()
        if event is not h11.NEED_DATA:
            return event
        conn.receive_data(await sockio.read(fd, read_size))


def _content_length(headers) -> int | None:
    """The Content-Length h11 already validated, or None (chunked, close-delimited, absent)."""
    for name, value in headers:
        if name == b"content-length":
            return int(value)
    return None

