"""One client connection: read a request, route it, forward it, relay the answer; then the next.

Theory of operation. h11 keeps the state of both HTTP conversations: `self.h` (we are the server) with
the client, and `Upstream.h11` (we are the client) with the sandbox. For each request:

  parse   h11 yields a Request; `request.check_request` refuses what h11 lets through (smuggling).
  route   the Host (or an absolute-form target that agrees with it) names port and sandbox; the
          sandbox comes from the catalog snapshot taken for this request.
  rewrite `headers.rewrite_request` builds the upstream head.
  forward a pooled or new upstream connection gets the head; the body, if any, is pumped by a second
          task while this one relays the response, so a sandbox may answer before the upload ends.
  relay   1xx (but 101), the response head and each body chunk go to the client as they arrive:
          streams and server-sent events are never buffered. A 101 turns both sockets into a tunnel
          (`splice.Tunnel`), bytes already read past either head going first.

Every request is routed on its own Host, also on keep-alive and pipelined connections. The next
request starts only through h11's `start_next_cycle()`, that is, only after both sides finished
cleanly; anything else closes the connection. Errors are EdgeErrors; one function renders them.
"""

from __future__ import annotations

import logging
import socket as stdlib_socket
import time

import h11
import trio

from edge import log as edge_log
from edge.catalog.store import LiveCatalog
from edge.config import Config
from edge.errors import (
    BadHost,
    BadRequest,
    EdgeError,
    HeadTooLarge,
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
from edge.http.pages import REASONS, render_error
from edge.http.request import check_request
from edge.http.route import Router, split_target
from edge.http.splice import Pipe, SpliceError, Tunnel, splice
from edge.http.upstream import Pool, Upstream
from edge.metrics import STATS

logger = logging.getLogger("edge.http")
# Durations for logs and metrics: a plain monotonic clock (trio's current_time is the same clock behind
# four calls; deadlines still use trio's).
_clock = time.perf_counter

_GONE = (trio.BrokenResourceError, trio.ClosedResourceError, OSError)
# Methods safe to resend when a pooled connection turns out to be dead before any answer.
_RETRYABLE = frozenset((b"GET", b"HEAD", b"OPTIONS", b"PUT", b"DELETE", b"TRACE"))


class ServerContext:
    """What every connection of one HTTP server shares. Built once; nothing here changes per request."""

    __slots__ = ("config", "http", "router", "live", "pool", "scheme", "secure", "access_log", "active", "idle",
                 "draining")

    def __init__(self, config: Config, live: LiveCatalog) -> None:
        self.config = config
        self.http = config.http
        self.router = Router(config.domains)
        self.live = live
        self.pool = Pool(config.http)
        self.scheme = config.http.scheme.encode()
        self.secure = config.http.scheme == "https"
        self.access_log = config.access_log
        #: In-flight requests and tunnels per sandbox with a max_connections limit.
        self.active: dict[str, int] = {}
        #: Keep-alive connections waiting for their next request -> when they stop waiting.
        self.idle: dict[ClientConnection, float] = {}
        #: Set when the server stops: connections end after their current exchange.
        self.draining = False

    def drain(self) -> None:
        """Stop keep-alive: idle connections close now, busy ones after their current exchange."""
        self.draining = True
        for conn in list(self.idle):
            sock = conn.stream.socket
            trio.lowlevel.notify_closing(sock)
            sock.close()

    async def reap_idle(self) -> None:
        """Close keep-alive connections idle past keepalive_timeout (one task for all of them)."""
        every = min(1.0, max(self.http.keepalive_timeout / 4, 0.01))
        idle = self.idle
        while True:
            await trio.sleep(every)
            now = trio.current_time()
            for conn in [c for c, deadline in idle.items() if deadline <= now]:
                sock = conn.stream.socket
                trio.lowlevel.notify_closing(sock)  # the waiting task gets ClosedResourceError
                sock.close()


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


class _Tunnelled(Exception):
    """Internal: the exchange became a tunnel; the connection ends after it."""


def _translate(exc: h11.RemoteProtocolError) -> EdgeError:
    hint = exc.error_status_hint
    if hint == 431:
        return HeadTooLarge("The request head is too large")
    if hint == 501:
        return NotImplementedByEdge(str(exc))
    return BadRequest(f"Malformed request: {exc}")


class ClientConnection:
    __slots__ = ("ctx", "stream", "fd", "h", "client_ip", "_pump_error", "_served", "_spliced_up", "_spliced_down",
                 "_req_keepalive", "_resp_keepalive")

    def __init__(self, ctx: ServerContext, stream: trio.SocketStream) -> None:
        self.ctx = ctx
        self.stream = stream
        self.fd = stream.socket.fileno()
        self.h = h11.Connection(h11.SERVER, max_incomplete_event_size=ctx.http.max_head_bytes)
        try:
            self.client_ip = stream.socket.getpeername()[0].encode()
        except OSError:
            self.client_ip = b"-"
        self._pump_error: BaseException | None = None
        self._served = 0
        # Per exchange: which bodies went by splice (h11 never saw them), and whether each side
        # allows keep-alive; together they decide whether the connections live on (see _next_cycle).
        self._spliced_up = self._spliced_down = False
        self._req_keepalive = self._resp_keepalive = False

    # --- the connection loop --------------------------------------------------------------------

    async def run(self) -> None:
        STATS.http_active_connections += 1
        idle = self.ctx.idle
        wait_readable = trio.lowlevel.wait_readable
        try:
            while True:
                if not await self._exchange():
                    break
                if self.ctx.draining or not self._next_cycle():
                    break
                if self.h.trailing_data[0]:
                    # Pipelined: the next request is already here. sockio does not checkpoint when a
                    # socket is ready, so yield once per exchange to keep the other connections fair.
                    await trio.lowlevel.checkpoint()
                else:
                    # Between requests with nothing buffered. Wait right here, in the shallowest frame
                    # and without a cancel scope of our own: an idle keep-alive connection should
                    # cost little memory. The server's reaper closes those idle past keepalive_timeout
                    # (wait_readable then raises ClosedResourceError).
                    # The h11 state machine is dropped too: it holds nothing between requests, and a
                    # new one costs about a microsecond.
                    idle[self] = trio.current_time() + self.ctx.http.keepalive_timeout
                    self.h = None
                    try:
                        await wait_readable(self.stream.socket)
                    finally:
                        del idle[self]
                        self.h = h11.Connection(h11.SERVER, max_incomplete_event_size=self.ctx.http.max_head_bytes)
        except (_Tunnelled, _ClientMustClose, _ClientGone):
            pass
        except _GONE:
            pass  # the client went away; nothing to answer
        finally:
            STATS.http_active_connections -= 1
            await self._close()

    def _next_cycle(self) -> bool:
        """Ready the client connection for its next request; False when it must close instead."""
        h = self.h
        if not (self._spliced_up or self._spliced_down):
            if h.our_state is not h11.DONE or h.their_state is not h11.DONE:
                return False
            h.start_next_cycle()
            return True
        # A spliced body went past h11, so its state machine is stuck mid-message. The cycle did end
        # cleanly when every body not spliced finished in h11 and the request allowed keep-alive:
        # then a fresh state machine takes over, with any pipelined bytes h11 had buffered.
        if not (self._req_keepalive and (self._spliced_up or h.their_state is h11.DONE)
                and (self._spliced_down or h.our_state is h11.DONE)):
            return False
        pipelined = h.trailing_data[0]
        self.h = h11.Connection(h11.SERVER, max_incomplete_event_size=self.ctx.http.max_head_bytes)
        if pipelined:
            self.h.receive_data(pipelined)
        return True

    def _upstream_reusable(self, up: Upstream) -> bool:
        """After a spliced exchange: may this upstream connection carry another request?"""
        conn = up.h11
        return (self._resp_keepalive and (self._spliced_down or conn.their_state is h11.DONE)
                and (self._spliced_up or conn.our_state is h11.DONE))

    async def _close(self) -> None:
        h = self.h
        try:
            if h.their_state is h11.SEND_BODY and h.our_state in (h11.DONE, h11.MUST_CLOSE):
                # We answered before the request body ended. Closing now would reset the connection
                # and could destroy the answer in flight: half-close, then drain a little (lingering close).
                self.stream.socket.shutdown(stdlib_socket.SHUT_WR)
                with trio.move_on_after(1.0):
                    drained = 0
                    while drained < 1 << 20:
                        data = await sockio.read(self.fd, self.ctx.http.read_size)
                        if not data:
                            break
                        drained += len(data)
        except _GONE:
            pass
        finally:
            self.stream.socket.close()

    async def _client_event(self):
        h = self.h
        while True:
            event = h.next_event()
            if event is h11.NEED_DATA:
                h.receive_data(await sockio.read(self.fd, self.ctx.http.read_size))
                continue
            return event

    async def _read_request(self):
        """The next Request, or None when the client closed or stayed idle past keepalive_timeout."""
        h = self.h
        http = self.ctx.http
        event = h.next_event()
        if event is h11.NEED_DATA:
            if self._served:
                # Between requests, run() waited for the socket to be readable: take what is there.
                data = await sockio.read(self.fd, http.read_size)
                if not data:  # closed by the client
                    return None
                h.receive_data(data)
                event = h.next_event()
            if event is h11.NEED_DATA:
                # The (rest of the) head on the head clock (slowloris). trio's CancelScope is used
                # directly: fail_after's context-manager wrapper costs more than the scope on this path.
                with trio.CancelScope(deadline=trio.current_time() + http.head_timeout) as scope:
                    event = await self._client_event()
                if scope.cancelled_caught:
                    raise RequestTimeout("The request head was not received in time")
        if type(event) is h11.ConnectionClosed:
            return None
        return event

    async def _exchange(self) -> bool:
        """Serve one request. False when the connection must end."""
        ctx = self.ctx
        ex = Exchange(_clock())
        try:
            try:
                request = await self._read_request()
            except h11.RemoteProtocolError as exc:
                raise _translate(exc) from None
            if request is None:
                return False
            ex.start = _clock()
            self._served += 1
            ex.method = request.method
            # h11's Headers is a Sequence whose iteration costs a Python call per field: walk it once.
            ex.headers = list(request.headers)
            check_request(request, ex.headers, ctx.http.max_head_bytes, ctx.http.max_head_fields)
            await self._forward(request, ex)
        except EdgeError as exc:
            await self._send_error(exc, ex)
        except h11.RemoteProtocolError as exc:
            await self._send_error(_translate(exc), ex)
        finally:
            if ex.headers is not None or ex.status:
                self._finish(ex)
        return True

    # --- route and forward --------------------------------------------------------------------------

    async def _forward(self, request: h11.Request, ex: Exchange) -> None:
        ctx = self.ctx
        host = b""
        for name, value in ex.headers:
            if name == b"host":
                host = value
                break
        authority, target = split_target(request.target)
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
        headers_in = ex.headers
        if not sandbox.public:
            grant = authorize(sandbox, request.method, headers_in, target, port, ctx.secure)
            if grant.redirect is not None:
                location, cookie = grant.redirect
                await self._answer(ex, 303, [(b"location", location), (b"set-cookie", cookie),
                                             (b"cache-control", b"no-store"), (b"content-length", b"0")], b"", False)
                return
            headers_in, target = grant.headers, grant.target

        tokens = connection_tokens(headers_in)
        upgrade = is_upgrade(headers_in, tokens) if tokens else None
        self._spliced_up = self._spliced_down = False
        self._req_keepalive = request.http_version == b"1.1" and b"close" not in tokens
        upstream_host = masked_host(sandbox.mask_request_host, port) if sandbox.mask_request_host else host
        headers = rewrite_request(
            headers_in,
            host=host,
            upstream_host=upstream_host,
            client_ip=self.client_ip,
            scheme=ctx.scheme,
            upgrade=upgrade,
        )
        # _parsed=True: every field either came out of h11's parser or was checked when it was made
        # (catalog masks, our own constants), so h11's per-field regexes would only repeat work.
        outgoing = h11.Request(method=request.method, target=target, headers=headers, _parsed=True)

        # A body-less request is complete already: its EndOfMessage is in h11's buffer.
        first = self.h.next_event()
        body_done = type(first) is h11.EndOfMessage

        limit = sandbox.max_connections
        if limit is not None:
            active = ctx.active
            if active.get(sandbox.id, 0) >= limit:
                raise TooManyConnections(sandbox.id, port, limit)
            active[sandbox.id] = active.get(sandbox.id, 0) + 1
            try:
                await self._send_upstream(sandbox, port, request.method, outgoing, first, body_done, ex)
            finally:
                active[sandbox.id] -= 1
                if not active[sandbox.id]:
                    del active[sandbox.id]
        else:
            await self._send_upstream(sandbox, port, request.method, outgoing, first, body_done, ex)

    async def _send_upstream(self, sandbox, port: int, method: bytes, outgoing, first, body_done: bool,
                             ex: Exchange) -> None:
        ctx = self.ctx
        key = (sandbox.id, sandbox.address, port)
        attempts = 2 if body_done and method in _RETRYABLE else 1
        retried = False
        while True:
            attempts -= 1
            t0 = _clock()
            up = await ctx.pool.acquire(key, fresh=retried)
            ex.connect_ms = round((_clock() - t0) * 1000, 3)
            try:
                data = up.h11.send(outgoing)
                if body_done:
                    data += up.h11.send(h11.EndOfMessage(headers=first.headers))
                try:
                    await sockio.write_all(up.fd, data)
                except OSError as exc:
                    if up.reused:  # the pooled connection died while idle: nothing was sent
                        raise _Stale() from None
                    raise UpstreamError(sandbox.id, port, f"sending the request: {exc.strerror}") from None
                if body_done:
                    await self._relay(up, ex)
                else:
                    await self._relay_with_body(up, ex, first)
            except _Stale:
                up.close()
                if attempts > 0:
                    retried = True
                    continue
                raise UpstreamError(sandbox.id, port, "connection closed before a response") from None
            except BaseException:
                up.close()
                raise
            if self._spliced_up or self._spliced_down:
                if self._upstream_reusable(up):
                    up.h11 = h11.Connection(h11.CLIENT)
                    ctx.pool.release(up)
                else:
                    up.close()
            else:
                ctx.pool.release(up)
            return

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
            self._pump_error = _translate(exc)
        except SpliceError as exc:
            self._pump_error = (
                BadRequest("The client connection failed before the request body ended") if exc.source
                else UpstreamError(ex.sandbox, ex.port, f"sending the request body: {exc}")
            )
        except trio.TooSlowError:
            self._pump_error = RequestTimeout("The request body stalled")
        except _GONE as exc:
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
        except _GONE:
            raise _ClientGone() from None

    async def _splice_body(self, src: trio.SocketStream, dst: trio.SocketStream, n: int, ex: Exchange,
                           upload: bool) -> None:
        """Move the last `n` bytes of a Content-Length body by splice; a short count is a broken body."""
        with Pipe() as pipe:
            moved = await splice(src.socket, dst.socket, n, pipe)
        if upload:
            ex.bytes_in += moved
        else:
            ex.bytes_out += moved
        if moved < n:
            raise SpliceError(True, ConnectionError(f"peer closed after {moved} of {n} body bytes"))

    async def _upstream_event(self, up: Upstream):
        conn = up.h11
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(await sockio.read(up.fd, self.ctx.http.read_size))
                continue
            return event

    async def _response_head(self, up: Upstream, ex: Exchange):
        """The sandbox's Response (or its 101), forwarding other 1xx answers as they come."""
        answered = False  # any 1xx seen: then a failure is no longer a stale pooled connection
        with trio.CancelScope(deadline=trio.current_time() + self.ctx.http.response_head_timeout) as scope:
            while True:
                try:
                    event = await self._upstream_event(up)
                except (h11.RemoteProtocolError, *_GONE) as exc:
                    # A pooled connection the sandbox closed while idle: nothing was answered.
                    if up.reused and not answered:
                        raise _Stale() from None
                    raise UpstreamError(ex.sandbox, ex.port, str(exc) or type(exc).__name__) from None
                t = type(event)
                if t is h11.Response:
                    return event
                if t is not h11.InformationalResponse:  # ConnectionClosed before any answer
                    if up.reused:
                        raise _Stale()
                    raise UpstreamError(ex.sandbox, ex.port, "closed before a response")
                if event.status_code == 101:
                    return event
                answered = True
                await sockio.write_all(self.fd, self.h.send(h11.InformationalResponse(
                    status_code=event.status_code,
                    headers=rewrite_response(list(event.headers), event.status_code),
                    reason=event.reason, _parsed=True)))
        assert scope.cancelled_caught
        raise UpstreamTimeout(ex.sandbox, ex.port, "response")

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
        pending = [h.send(h11.Response(status_code=status, headers=rewrite_response(response_headers, status),
                                       reason=event.reason, _parsed=True))]
        conn = up.h11
        up_fd = up.fd
        read = sockio.read
        read_size = self.ctx.http.read_size
        self._resp_keepalive = event.http_version == b"1.1" and b"close" not in connection_tokens(response_headers)
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
                                raise _ClientGone() from None
                            raise
                        self._spliced_down = True
                        return
                    if pending:
                        out = pending[0] if len(pending) == 1 else b"".join(pending)
                        pending.clear()
                        try:
                            await write_all(fd, out)
                        except _GONE:
                            raise _ClientGone() from None
                    conn.receive_data(await read(up_fd, read_size))
                    continue
            except (h11.RemoteProtocolError, SpliceError, *_GONE) as exc:
                # The sandbox broke the body mid-way. The client already has our head: the honest
                # signal left is to close without finishing the body, which it sees as truncation.
                logger.info("sandbox %s port %s broke its response body: %s", ex.sandbox, ex.port, exc)
                raise _ClientMustClose() from None
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
        raise _Tunnelled()

    # --- answers of our own ---------------------------------------------------------------------------

    async def _send_error(self, exc: EdgeError, ex: Exchange) -> None:
        status, headers, body = render_error(exc, ex.headers)
        await self._answer(ex, status, headers, body, exc.closes_connection)

    async def _answer(self, ex: Exchange, status: int, headers: list, body: bytes, close: bool) -> None:
        """An answer of the edge's own (an error, a redirect), when the connection can still take one."""
        h = self.h
        ex.status = status
        if h.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            return  # a response already started: the connection just closes
        if ex.method == b"HEAD":
            body = b""
        if h.their_state is h11.SEND_BODY:
            _discard_buffered_body(h)
        # After a protocol error, or with the request body unread, this connection cannot go on.
        if close or h.their_state is not h11.DONE:
            headers.append((b"connection", b"close"))
        try:
            data = h.send(h11.Response(status_code=status, headers=headers, reason=REASONS.get(status, b"")))
            if body:
                data += h.send(h11.Data(data=body))
            data += h.send(h11.EndOfMessage())
        except h11.LocalProtocolError:
            return
        ex.bytes_out = len(body)
        await sockio.write_all(self.fd, data)

    def _finish(self, ex: Exchange) -> None:
        """Count the exchange and write its access line."""
        status = ex.status or 499  # nginx's "client closed request": the client left before an answer
        duration = _clock() - ex.start
        stats = STATS
        stats.http_requests[status // 100 if status < 600 else 0] += 1
        stats.http_bytes_in += ex.bytes_in
        stats.http_bytes_out += ex.bytes_out
        stats.http_duration.observe(duration)
        if ex.connect_ms is not None:
            stats.upstream_connect.observe(ex.connect_ms / 1000)
            stats.sandbox_requests[ex.sandbox] = stats.sandbox_requests.get(ex.sandbox, 0) + 1
        if not self.ctx.access_log or edge_log.ACCESS.disabled:
            return
        edge_log.access(
            client=self.client_ip.decode(),
            host=ex.host.decode("latin-1"),
            sandbox=ex.sandbox,
            port=ex.port,
            method=ex.method.decode("latin-1"),
            path=ex.path.decode("latin-1"),
            status=status,
            bytes_in=ex.bytes_in,
            bytes_out=ex.bytes_out,
            duration_ms=round(duration * 1000, 3),
            connect_ms=ex.connect_ms,
        )


class _Stale(Exception):
    """Internal: a pooled connection was dead before the sandbox said anything; retry on a new one."""


class _ClientGone(Exception):
    """Internal: a write to the client failed; it left."""


class _ClientMustClose(Exception):
    """Internal: the response broke after its head was sent; the client connection must be dropped."""




def _discard_buffered_body(h: h11.Connection) -> None:
    """Consume a request body that already sits in h11's buffer, so the connection may go on."""
    try:
        while h.their_state is h11.SEND_BODY:
            if h.next_event() is h11.NEED_DATA:
                return
    except h11.RemoteProtocolError:
        return


def _content_length(headers) -> int | None:
    """The Content-Length h11 already validated, or None (chunked, close-delimited, absent)."""
    for name, value in headers:
        if name == b"content-length":
            return int(value)
    return None
