"""One client connection: read a request, pick its lane, hand it to the exchange, answer; then the next.

Theory of operation. Each request takes one of two lanes (edge/http/README.md). A plain request, whole
in the bytes at hand, takes the fast lane (fastlane.py, heads read by h1.py, no h11 at all). Any other
takes the h11 lane: h11 keeps the state of both HTTP conversations, `self.h` (we are the server) with
the client and `Upstream.h11` (we are the client) with the sandbox, and forward.py relays. The fast
lane hands an exchange over to h11 mid-way when it stops being plain; from then on it is an h11
exchange like any other. This file is the connection's half: the loop over requests, the choice of
lane, the edge's own answers (errors, redirects) and the accounting.

  accept  server.py hands each socket to `ClientConnection.run()`.
  read    run() reads what the client sent. A plain head (h1.parse_request) with its body in hand goes
          to `FastLane._fast_exchange`; anything else to h11, which reads the rest of the head as it
          comes, and `request.check_request` refuses what h11 lets through (smuggling).
  forward both lanes route, check access and rewrite with `Forwarder._plan`; the h11 lane relays
          in forward.py, the fast lane in fastlane.py.
  next    a fast exchange goes on only after its answer was relayed whole and the request allowed
          keep-alive; an h11 exchange only through h11's `start_next_cycle()` (or, after a spliced
          body, with a fresh h11 under the same rule). Anything else closes the connection. Between
          requests the connection waits in its outermost frame, with no h11 state, no cancel scope
          and no parsed head: idle connections stay small.

Every request is routed on its own Host, also on keep-alive and pipelined connections. Errors are
EdgeErrors; one function (pages.render_error) renders them.
"""

from __future__ import annotations

import logging
import os
import socket as stdlib_socket

import h11
import trio

from edge import log as edge_log
from edge.catalog.model import Sandbox, Snapshot
from edge.catalog.store import LiveCatalog
from edge.config import Config
from edge.errors import EdgeError, RequestTimeout
from edge.http import sockio
from edge.http.fastlane import FastLane
from edge.http.forward import (
    GONE,
    ClientGone,
    ClientMustClose,
    Exchange,
    Forwarder,
    Tunnelled,
    clock,
    next_event,
    translate,
)
from edge.http.h1 import parse_request
from edge.http.loop import OwnListeners
from edge.http.pages import REASONS, render_error
from edge.http.request import check_request
from edge.http.route import Router
from edge.http.limits import clients_gone, connection_limits, revokes
from edge.http.upstream import Pool, Upstream
from edge.metrics import STATS

logger = logging.getLogger("edge.http")

_VIA = b"edge-" + os.urandom(4).hex().encode()


class ServerContext:
    """What every connection of one HTTP server shares. Built once; nothing here changes per request."""

    __slots__ = ("config", "http", "router", "live", "pool", "scheme", "secure", "access_log", "active", "idle",
                 "awaiting", "draining", "via", "forwarded_port", "own", "max_open", "max_per_ip", "open",
                 "per_ip", "inflight")

    def __init__(self, config: Config, live: LiveCatalog, own: OwnListeners) -> None:
        self.config = config
        #: The edge's own listeners: a sandbox target among them is a loop (508).
        self.own = own
        self.http = config.http
        self.router = Router(config.domains)
        self.live = live
        self.pool = Pool(config.http)
        self.scheme = config.http.scheme.encode()
        self.secure = config.http.scheme == "https"
        #: The edge's Via token (headers.rewrite_request, headers.via_has), one per process for now.
        self.via = _VIA
        #: X-Forwarded-Port sent upstream: the configured listener port.
        self.forwarded_port = str(config.http.listen.port).encode()
        self.access_log = config.access_log
        #: In-flight requests and tunnels per sandbox with a max_connections limit.
        self.active: dict[str, int] = {}
        #: Keep-alive connections waiting for their next request -> when they stop waiting.
        self.idle: dict[ClientConnection, float] = {}
        #: Upstream connections waiting for a response head (either lane) -> when that wait ends (504).
        #: The reaper keeps this deadline: a cancel scope per request cost a third of a fast-lane
        #: exchange under load (bench/README.md).
        self.awaiting: dict[Upstream, float] = {}
        #: Set when the server stops: connections end after their current exchange.
        self.draining = False
        #: Client connections at most, in all and per client address (connection_limits); past
        #: them a new connection is closed at once. `open` and `per_ip` count those admitted.
        self.max_open, self.max_per_ip = connection_limits(config.http)
        self.open = 0
        self.per_ip: dict[str, int] = {}
        #: Connections with an exchange in flight -> the sandbox record it was authorised against:
        #: a catalog change that revokes that record cuts them (revoke_changed).
        self.inflight: dict[ClientConnection, Sandbox] = {}
        live.on_change(self.revoke_changed)

    def admit(self, ip: str) -> bool:
        """Count a new client connection in, or refuse it (the caller closes it at once)."""
        if self.open >= self.max_open:
            STATS.http_connections_rejected["total"] += 1
            return False
        n = self.per_ip.get(ip, 0)
        if n >= self.max_per_ip:
            STATS.http_connections_rejected["per_ip"] += 1
            return False
        self.per_ip[ip] = n + 1
        self.open += 1
        return True

    def leave(self, ip: str) -> None:
        self.open -= 1
        n = self.per_ip[ip] - 1
        if n:
            self.per_ip[ip] = n
        else:
            del self.per_ip[ip]

    def revoke_changed(self, old: Snapshot, new: Snapshot) -> None:
        """A new catalog snapshot: cut the exchanges and tunnels it revokes (removed sandbox, new
        address, made private, token rotated). Keep-alive requests are checked anew anyway."""
        if not self.inflight:
            return
        for conn, was in list(self.inflight.items()):
            why = revokes(was, new.get(was.id))
            if why is not None:
                logger.info("sandbox %s: %s; closing an open connection", was.id, why)
                STATS.http_revoked += 1
                conn.revoke()

    def drain(self) -> None:
        """Stop keep-alive: idle connections close now, busy ones after their current exchange."""
        self.draining = True
        for conn in list(self.idle):
            conn.close_idle()

    async def reap_idle(self) -> None:
        """One task for every connection's wait: close client connections idle past their time
        (keepalive_timeout, or head_timeout before a first request), and end fast-lane waits for a
        response head past response_head_timeout (the waiting task then answers 504)."""
        http = self.http
        every = min(1.0, max(min(http.keepalive_timeout, http.head_timeout, http.response_head_timeout) / 4, 0.01))
        idle = self.idle
        awaiting = self.awaiting
        while True:
            await trio.sleep(every)
            now = trio.current_time()
            for conn in [c for c, deadline in idle.items() if deadline <= now]:
                conn.close_idle()
            for up in [u for u, deadline in awaiting.items() if deadline <= now]:
                del awaiting[up]
                up.expire("timeout")
            if awaiting:
                # A client that left while its sandbox thinks: release the sandbox connection and
                # the slot now (logged as 499), not when the answer finally comes.
                for up in clients_gone(awaiting):
                    del awaiting[up]
                    up.expire("client")


class ClientConnection(FastLane, Forwarder):
    __slots__ = ("ctx", "stream", "fd", "h", "client_ip", "_pump_error", "_spliced_up", "_spliced_down",
                 "_req_keepalive", "_resp_keepalive", "upstream", "revoked")

    def __init__(self, ctx: ServerContext, stream: trio.SocketStream, client_ip: bytes) -> None:
        self.ctx = ctx
        self.stream = stream
        self.fd = stream.socket.fileno()
        #: The h11 state machine while h11 holds this connection's state; None in the fast lane and between requests.
        self.h: h11.Connection | None = None
        self.client_ip = client_ip
        #: The sandbox connection of the exchange in flight (either lane), for revoke().
        self.upstream: Upstream | None = None
        #: Set by revoke(): the catalog withdrew what this exchange was allowed; never retried.
        self.revoked = False
        self._pump_error: BaseException | None = None
        # Per exchange: which bodies went by splice (h11 never saw them), and whether each side
        # allows keep-alive; together they decide whether the connections live on (see _next_cycle).
        self._spliced_up = self._spliced_down = False
        self._req_keepalive = self._resp_keepalive = False

    def _new_h11(self) -> h11.Connection:
        return h11.Connection(h11.SERVER, max_incomplete_event_size=self.ctx.http.max_head_bytes)

    def revoke(self) -> None:
        """Cut the exchange or tunnel in flight: both sockets shut down (not closed, so no descriptor
        number is reused under a task still holding it); every wait on them ends, and the
        connection closes without another request."""
        self.revoked = True
        for sock in (self.stream.socket, self.upstream.stream.socket if self.upstream else None):
            if sock is not None:
                try:
                    sock.shutdown(stdlib_socket.SHUT_RDWR)
                except OSError:
                    pass
        if self.upstream is not None:
            self.upstream.expire("revoked")

    def close_idle(self) -> None:
        """Close a connection waiting between requests; its task gets ClosedResourceError and ends."""
        sock = self.stream.socket
        trio.lowlevel.notify_closing(sock)
        sock.close()

    # --- the connection loop --------------------------------------------------------------------

    async def run(self) -> None:
        STATS.http_active_connections += 1
        ctx = self.ctx
        http = ctx.http
        idle = ctx.idle
        fd = self.fd
        read_size = http.read_size
        max_bytes, max_fields = http.max_head_bytes, http.max_head_fields
        fast_lane = http.fast_lane
        wait_readable = trio.lowlevel.wait_readable
        checkpoint = trio.lowlevel.checkpoint
        read = sockio.read
        # A new connection gets head_timeout to start its first request; later waits keepalive_timeout.
        wait_for = http.head_timeout
        buf = b""
        try:
            while True:
                if not buf:
                    # Between requests with nothing buffered. Wait right here, in the shallowest frame,
                    # with no cancel scope and no h11 state: an idle keep-alive connection should cost
                    # little memory. The server's reaper closes those waiting past their time
                    # (wait_readable then raises ClosedResourceError). The last request's parsed head
                    # is let go first (~500 bytes per idle connection).
                    head = None
                    idle[self] = trio.current_time() + wait_for
                    try:
                        await wait_readable(fd)
                    finally:
                        del idle[self]
                    buf = await read(fd, read_size)
                    if not buf:  # closed by the client
                        break
                    wait_for = http.keepalive_timeout
                end = buf.find(b"\r\n\r\n")
                head = parse_request(buf, end, max_bytes, max_fields) if fast_lane and end >= 0 else None
                if head is not None and len(buf) >= head.end + head.length:
                    # A plain request, body and all: the fast lane (fastlane.py).
                    rest = await self._fast_exchange(head, buf)
                    if self.h is None:
                        if rest is None or ctx.draining or self.revoked:
                            break
                        buf = rest
                        if buf:
                            # Pipelined: the next request is already here. sockio does not checkpoint
                            # when a socket is ready, so yield once per exchange to keep the other
                            # connections fair.
                            await checkpoint()
                        continue
                else:
                    # Anything else is h11's, from the same bytes: it reads the rest of the head or the
                    # body as they come, and answers what is malformed.
                    self.h = self._new_h11()
                    self.h.receive_data(buf)
                    # h11 holds its own copy now: let ours go, or a partial head would cost twice
                    # its size while the rest of it is awaited.
                    buf = b""
                    STATS.http_h11_exchanges["request"] += 1
                    if not await self._exchange():
                        break
                # h11 holds this connection's state (it read the request, or took over mid-exchange).
                if ctx.draining or self.revoked or not self._next_cycle():
                    break
                buf = self.h.trailing_data[0]
                self.h = None
                if buf:
                    await checkpoint()
        except (Tunnelled, ClientMustClose, ClientGone):
            pass
        except GONE:
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
        self.h = self._new_h11()
        if pipelined:
            self.h.receive_data(pipelined)
        return True

    async def _close(self) -> None:
        h = self.h
        try:
            if h is not None and h.their_state is h11.SEND_BODY and h.our_state in (h11.DONE, h11.MUST_CLOSE):
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
        except GONE:
            pass
        finally:
            self.stream.socket.close()

    async def _read_request(self):
        """The next Request from the bytes run() gave h11 and what follows; None when the client closed."""
        h = self.h
        http = self.ctx.http
        event = h.next_event()
        if event is h11.NEED_DATA:
            # The rest of the head on the head clock (slowloris). trio's CancelScope is used directly:
            # fail_after's context-manager wrapper costs more than the scope on this path.
            with trio.CancelScope(deadline=trio.current_time() + http.head_timeout) as scope:
                event = await next_event(h, self.fd, http.read_size)
            if scope.cancelled_caught:
                raise RequestTimeout("The request head was not received in time")
        if type(event) is h11.ConnectionClosed:
            return None
        return event

    async def _exchange(self) -> bool:
        """Serve one request. False when the connection must end."""
        ctx = self.ctx
        ex = Exchange(clock())
        # Per-exchange state read by _next_cycle: reset before anything can end this exchange early.
        self._spliced_up = self._spliced_down = self._req_keepalive = False
        try:
            try:
                request = await self._read_request()
            except h11.RemoteProtocolError as exc:
                raise translate(exc) from None
            if request is None:
                return False
            ex.start = clock()
            ex.method = request.method
            # h11's Headers is a Sequence whose iteration costs a Python call per field: walk it once.
            ex.headers = list(request.headers)
            check_request(request, ex.headers, ctx.http.max_head_bytes, ctx.http.max_head_fields)
            await self._forward(request, ex)
        except EdgeError as exc:
            await self._send_error(exc, ex)
        except h11.RemoteProtocolError as exc:
            await self._send_error(translate(exc), ex)
        finally:
            if ex.headers is not None or ex.status:
                self._finish(ex)
        return True

    # --- answers of our own (routing and forwarding live in forward.py) ---------------------------------

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
        duration = clock() - ex.start
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


def _discard_buffered_body(h: h11.Connection) -> None:
    """Consume a request body that already sits in h11's buffer, so the connection may go on."""
    try:
        while h.their_state is h11.SEND_BODY:
            if h.next_event() is h11.NEED_DATA:
                return
    except h11.RemoteProtocolError:
        return
