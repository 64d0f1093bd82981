"""The HTTP server: listeners, admission, one connection task per accepted socket, graceful stop.

`serve(config, live, *, task_status)` binds `config.http.listen` (and `config.https.listen` when
set), reports the bound addresses through `task_status.started()`, and serves until cancelled or
until `stop` is set. Beside the connections run the deadline sweep (deadlines.py), the pool's reaper,
and with HTTPS the certificate watcher (edge/tls/certs.py).

Admission: a new connection past `http.max_connections`, or past `max_connections_per_ip` from its
address, is closed at once and counted (ServerContext.admit); the limits count plain and TLS
connections together. Each admitted socket becomes a `ClientSide` over a `SocketTransport`, or over a
`TlsTransport` once its handshake is done, and conn.serve_connection takes it from there: the lanes
do not know which.
"""

from __future__ import annotations

import logging
import socket
import ssl
from functools import partial

import trio

from edge.accept import accept_loop
from edge.catalog.store import LiveCatalog
from edge.config import Config
from edge.errors import BadRequest, EdgeError
from edge.http import proxyproto
from edge.http.client import ClientSide, Listener, SocketTransport
from edge.http.conn import serve_connection
from edge.http.context import ServerContext
from edge.http.deadlines import Expired, Wait
from edge.http.listen import open_listeners
from edge.http.loop import OwnListeners
from edge.http.tls import TlsTransport
from edge.metrics import STATS
from edge.stopping import Stopping
from edge.tls.certs import CertStore

logger = logging.getLogger("edge.http")


async def _handle(
    ctx: ServerContext,
    listener: Listener,
    certs: CertStore | None,
    stream: trio.SocketStream,
    admitted: str | None = None,
) -> None:
    """Serve one accepted connection: PROXY header first where the listener expects one (and then
    admission), the TLS handshake on an HTTPS listener, then conn.serve_connection. `admitted`: the
    address accept_loop already counted in (listeners without the PROXY protocol)."""
    trio_sock = stream.socket
    if admitted is not None:
        peer = admitted
    else:
        try:
            peer = trio_sock.getpeername()[0]
        except OSError:  # reset before we got to it
            trio_sock.close()
            return
    raw = socket.socket(trio_sock.family, trio_sock.type, trio_sock.proto, fileno=trio_sock.detach())
    raw.setblocking(False)  # socket(fileno=) thinks it blocks: OpenSSL would then wait in poll()
    del stream, trio_sock  # the connection lives on as `raw`: idle connections should cost little
    ip = peer
    if listener.proxy_protocol:
        try:
            ip = await read_proxy_header(ctx, raw, peer)
        except (EdgeError, OSError, Expired) as exc:
            STATS.http_proxy_header_errors += 1
            logger.info("PROXY header from %s refused: %s", peer, exc)
            raw.close()
            return
    # Admitted when accepted (accept_loop), or here once the PROXY header named the client: past
    # http.max_connections or max_connections_per_ip a connection is closed at once.
    if listener.proxy_protocol and not ctx.admit(ip):
        raw.close()
        return
    io: SocketTransport | TlsTransport | None = None
    try:
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if certs is None:
            io = SocketTransport(raw, ctx.deadlines)
        else:
            io = TlsTransport(
                certs.listening.wrap_socket(raw, server_side=True, do_handshake_on_connect=False), ctx.deadlines
            )
            try:
                await io.handshake(ctx.config.https.handshake_timeout)
            except (OSError, Expired) as exc:
                # A silent client, a name we have no certificate for (it got unrecognized_name), a
                # protocol or version we refuse: counted, logged at debug, closed.
                STATS.tls_handshake_failures[_handshake_reason(exc)] += 1
                logger.debug("tls handshake from %s failed: %s", ip, exc)
                io.close()
                return
        client = ClientSide(io, ip.encode(), listener, ctx.http.max_head_bytes, ctx.trusts(peer))
        await serve_connection(ctx, client)
    except Exception:  # a bug must cost one connection, never the server
        logger.exception("connection handler failed")
        (io or raw).close()
    finally:
        ctx.leave(ip)


async def read_proxy_header(ctx: ServerContext, raw: socket.socket, peer: str) -> str:
    """The client address from the PROXY header this connection must start with (within head_timeout).

    Read by peeking, then taking exactly the header: what follows (HTTP, or a TLS ClientHello) stays
    on the socket. With http.trusted_proxies set, only those peers may send one."""
    if ctx.trusted and not ctx.trusts(peer):
        raise BadRequest(f"{peer} is not in http.trusted_proxies")
    w = Wait(raw.fileno())
    deadline = trio.current_time() + ctx.http.head_timeout
    want = proxyproto.PEEK
    while True:
        try:
            data = raw.recv(want, socket.MSG_PEEK)
        except BlockingIOError:
            await ctx.deadlines.readable(w, deadline, "head")
            continue
        if not data:
            raise BadRequest("closed before a PROXY header")
        result = proxyproto.parse(data)
        if result is None:
            if len(data) < want:
                await ctx.deadlines.readable(w, deadline, "head")
            else:
                want = min(want * 4, 16 + 65535)
            continue
        length, address = result
        raw.recv(length)  # exactly the header: it is all there (peeked)
        return address or peer


def _handshake_reason(exc: BaseException) -> str:
    if isinstance(exc, Expired):
        return "timeout"
    if isinstance(exc, ssl.SSLError):
        # Our SNI callback refusing a name shows up on this side as OpenSSL's CALLBACK_FAILED.
        return "unrecognized_name" if exc.reason in ("CALLBACK_FAILED", "UNRECOGNIZED_NAME") else "protocol"
    return "closed"


async def serve(
    config: Config,
    live: LiveCatalog,
    *,
    sockets: tuple[list[socket.socket], list[socket.socket]] | None = None,
    stop: Stopping | None = None,
    own: OwnListeners | None = None,
    certs: CertStore | None = None,
    task_status=trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve until cancelled, or until `stop` is set: then stop accepting, drain, and return.

    `sockets`: the (http, https) listening sockets bound by the supervisor (edge/sockets.py); without
    them, `config.http.listen` and `config.https.listen` are bound here (tests, `edge dns`).
    Reports [(kind, (host, port)), ...] for every listener ("http", "https").
    `own` collects the edge's listening addresses (a request to one of them is a loop: 508); the
    caller adds the admin and DNS listeners it binds later. Without it, the configured ones count.
    `certs` is the certificate store for HTTPS (made here when not given)."""
    if sockets is not None:
        listeners, tls_listeners = list(sockets[0]), list(sockets[1])
    else:
        listeners = open_listeners(config.http.listen)
        tls_listeners = []
        try:
            if config.https.listen is not None:
                tls_listeners = open_listeners(config.https.listen, what="https")
        except BaseException:
            for sock in listeners:
                sock.close()
            raise
    if own is None:
        own = OwnListeners()
    for listen in (*config.dns.listen.all(), *config.admin.listen.all()):
        own.add(listen.host, listen.port)
    bound = [("http", tuple(sock.getsockname()[:2])) for sock in listeners]
    bound += [("https", tuple(sock.getsockname()[:2])) for sock in tls_listeners]
    for _, (host, port) in bound:
        own.add(host, port)
    ctx = ServerContext(config, live, own)
    http_port = listeners[0].getsockname()[1]
    redirect_port = None
    if tls_listeners and config.https.redirect_http:
        https_port = config.public_url_port or tls_listeners[0].getsockname()[1]  # behind a port mapping: its port
        redirect_port = b"" if https_port == 443 else b":%d" % https_port
    plain = Listener(
        config.http.scheme.encode(),
        config.http.scheme == "https",
        str(http_port).encode(),
        redirect_port,
        config.http.proxy_protocol,
    )
    if tls_listeners and certs is None:
        certs = CertStore(config)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(ctx.pool.run_reaper)
            nursery.start_soon(ctx.deadlines.run)
            if tls_listeners:
                assert certs is not None
                nursery.start_soon(_watch_certs, certs)
            async with trio.open_nursery() as handlers:
                accepting: list[trio.CancelScope] = []

                async def accept(sock: socket.socket, handler, proxied: bool) -> None:
                    scope = trio.CancelScope()
                    accepting.append(scope)
                    with scope:
                        try:
                            await accept_loop(
                                sock,
                                handlers,
                                handler,
                                label="https" if sock in tls_listeners else "http",
                                # Behind the PROXY protocol the address that counts is in its header.
                                admit=None if proxied else ctx.admit,
                            )
                        except trio.ClosedResourceError:
                            pass  # the listener was closed: a graceful stop

                for sock in listeners:
                    handlers.start_soon(accept, sock, partial(_handle, ctx, plain, None), plain.proxy_protocol)
                for sock in tls_listeners:
                    secure = Listener(
                        b"https", True, str(sock.getsockname()[1]).encode(), proxy_protocol=config.https.proxy_protocol
                    )
                    handlers.start_soon(accept, sock, partial(_handle, ctx, secure, certs), secure.proxy_protocol)
                task_status.started(bound)
                if stop is None:
                    await trio.sleep_forever()
                    return
                await stop.wait()
                # No new connections (the listening sockets stay open in the supervisor and the next
                # generation: what waits in their queues is theirs); idle keep-alive connections
                # close now; busy ones answer with `Connection: close` and close after their exchange;
                # tunnels and streams run on. Whatever is left at the stop's deadline (shutdown_grace,
                # or drain_timeout during a deploy) is cancelled. With nothing in flight the handlers'
                # nursery ends at once.
                for scope in accepting:
                    scope.cancel()
                for sock in listeners + tls_listeners:
                    trio.lowlevel.notify_closing(sock)
                    sock.close()
                ctx.drain()
                logger.info(
                    "http: %s: draining %d connections for up to %.0f s",
                    stop.why,
                    STATS.http_active_connections,
                    stop.deadline - trio.current_time(),
                )
                stop.bound(handlers.cancel_scope)
            nursery.cancel_scope.cancel()
    finally:
        ctx.pool.close_all()
        for sock in listeners + tls_listeners:
            sock.close()


async def _watch_certs(certs: CertStore, every: float = 1.0) -> None:
    """New or renewed certificate files are used by new connections within a second."""
    while True:
        await trio.sleep(every)
        await trio.to_thread.run_sync(certs.reload)
