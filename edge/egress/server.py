"""The egress listener: sandboxes' outbound TCP, redirected here by nftables, decided, then spliced.

`serve(config, live, *, task_status)` binds `config.listen`, reports [("egress", (host, port))], and
serves until cancelled or until `stop` is set (then connections in flight get `shutdown_grace`).

One connection, in order (each step a function below):

  1. whence: the original destination (SO_ORIGINAL_DST, original.py), refused (reset) when the
     connection was not redirected; the sandbox whose catalog address is the peer's address, refused
     (reset) when there is none.
  2. sniff: on port 80 the request head (host.py), on 443 the ClientHello (sni.py), read without
     consuming, within `sniff_timeout`; only when the answer can depend on the name (the policy has a
     domain entry) or the connection is denied anyway (to refuse it in a form people can read).
  3. decide: the sandbox's policy (policy.py) on (name, original destination address).
  4. refuse (403 page, TLS access_denied alert, or reset: refusal.py), or
  5. dial: a name allowed by a domain entry is resolved by edge (resolve.py), else the original
     address is dialled; an address in the always-denied ranges never is (policy.always_denied);
  6. splice: what was sniffed first, then both directions by splice(2) (edge.http.splice.Tunnel),
     EOF becoming a half-close, every write bounded by `send_timeout`.

Every wait goes through one deadline table (edge.http.deadlines): the sniff ("head"), the connect,
the DNS replies, every write. One log line per connection (record.py), counters in stats.EGRESS.
The catalog is read once per connection (`live.snapshot`): a policy change applies to the next
connection, with no restart.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import socket
import struct
from collections.abc import Callable
from functools import partial

import trio

from edge.accept import accept_loop
from edge.accesslog import ACCESS_LOG
from edge.catalog.model import Sandbox, Snapshot
from edge.catalog.store import LiveCatalog
from edge.config import HttpConfig, Listen
from edge.egress.config import EgressConfig, parse_resolver, private_exceptions
from edge.egress.host import Head, read_head
from edge.egress.original import original_dst
from edge.egress.policy import Compiled, always_denied, policy_of
from edge.egress.record import EgressRecord, json_line
from edge.egress.refusal import EgressDenied, http_forbidden, tls_alert
from edge.egress.resolve import ResolveError, Resolver
from edge.egress.sni import NEED_MORE, Hello, read_hello
from edge.egress.stats import EGRESS
from edge.errors import ConfigError
from edge.http.client import SocketTransport, Transport
from edge.http.deadlines import LINGER, Deadlines, Expired, Wait
from edge.http.listen import BACKLOG
from edge.http.listen import open_listeners as open_http_listeners
from edge.http.splice import BrokenBody, Tunnel, move
from edge.stopping import Stopping

logger = logging.getLogger("edge.egress")

Log = Callable[[dict[str, object]], None]
_RESET = struct.pack("ii", 1, 0)


def write_line(doc: dict[str, object]) -> None:
    """The default sink: the access log's batched writer when it runs, else the edge.egress logger."""
    line = json_line(doc)
    if not ACCESS_LOG.append(line):
        logger.info("%s", line.decode().rstrip())


class EgressContext:
    """What one egress server's connections share: config, deadlines, resolver, the catalog view."""

    __slots__ = (
        "config",
        "live",
        "log",
        "deadlines",
        "resolver",
        "exceptions",
        "_snapshot",
        "_by_address",
        "_compiled",
    )

    def __init__(self, config: EgressConfig, live: LiveCatalog, log: Log) -> None:
        self.config = config
        self.live = live
        self.log = log
        timeouts = HttpConfig(
            head_timeout=config.sniff_timeout,
            keepalive_timeout=config.sniff_timeout,
            connect_timeout=config.connect_timeout,
            send_timeout=config.send_timeout,
        )
        self.deadlines = Deadlines(timeouts, config.dns_timeout)
        self.resolver = Resolver(parse_resolver(config.resolver), config.dns_timeout, self.deadlines)
        self.exceptions = private_exceptions(config.allow_private)
        self._snapshot: Snapshot | None = None
        self._by_address: dict[str, Sandbox] = {}
        self._compiled: dict[str, Compiled] = {}

    def _current(self) -> None:
        snapshot = self.live.snapshot
        if snapshot is not self._snapshot:  # a new catalog: indexes made again, lazily, once per swap
            self._snapshot = snapshot
            self._by_address = {_normal(s.address): s for s in snapshot.by_id.values()}
            self._compiled = {}

    def sandbox_for(self, address: str) -> Sandbox | None:
        self._current()
        return self._by_address.get(address)

    def compiled(self, sandbox: Sandbox) -> Compiled:
        policy = self._compiled.get(sandbox.id)
        if policy is None:
            policy = self._compiled[sandbox.id] = Compiled(policy_of(sandbox))
        return policy


def _normal(address: str) -> str:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ip)


#: Bytes a direction copies through Python before it switches to splice(2): a pipe and its four
#: syscalls per trip cost more than a copy for the short exchanges most connections are (an API call).
SPLICE_AFTER = 64 * 1024


class _CountedTunnel(Tunnel):
    """A Tunnel whose bytes also count in the process's egress counters as they move, and which
    splices a direction only once it has carried SPLICE_AFTER bytes."""

    __slots__ = ()

    async def _one_way(
        self,
        d: Deadlines,
        src: Transport,
        dst: Transport,
        pending: bytes,
        up: bool,
        read_size: int,
        scope: trio.CancelScope,
    ) -> None:
        count = self._count_up if up else self._count_down
        try:
            if pending:
                await dst.send(pending)
                count(len(pending))
            copied = len(pending)
            while copied < SPLICE_AFTER:
                data = await src.recv(read_size, None, "tunnel")
                if not data:
                    break
                await dst.send(data)
                count(len(data))
                copied += len(data)
            else:
                await move(
                    d,
                    src,
                    dst,
                    None,
                    read_timeout=None,
                    read_kind="tunnel",
                    read_size=read_size,
                    count=count,
                    splice_min=1,
                )
            dst.shutdown(socket.SHUT_WR)  # EOF from src: the other direction may still be talking
        except (BrokenBody, OSError, Expired):
            scope.cancel()  # a reset, a closed socket, or a side that stopped reading ends both

    def _count_up(self, n: int) -> None:
        self.bytes_up += n
        EGRESS.bytes_out += n

    def _count_down(self, n: int) -> None:
        self.bytes_down += n
        EGRESS.bytes_in += n


async def _handle(ctx: EgressContext, stream: trio.SocketStream) -> None:
    trio_sock = stream.socket
    sock = socket.socket(trio_sock.family, trio_sock.type, trio_sock.proto, fileno=trio_sock.detach())
    sock.setblocking(False)
    rec = EgressRecord("", trio.current_time())
    EGRESS.active += 1
    try:
        await _serve(ctx, sock, rec)
    except Exception as exc:  # a bug must cost one connection, never the server
        logger.exception("egress connection handler failed")
        rec.decision, rec.error = "error", f"internal: {type(exc).__name__}"
        _reset(sock)
    finally:
        EGRESS.active -= 1
        sock.close()
        rec.duration_ms = (trio.current_time() - rec.started) * 1000
        EGRESS.connections[rec.decision] = EGRESS.connections.get(rec.decision, 0) + 1
        ctx.log(rec.to_dict())


async def _serve(ctx: EgressContext, sock: socket.socket, rec: EgressRecord) -> None:
    config = ctx.config
    # 1. whence
    try:
        rec.client = _normal(sock.getpeername()[0])
        dst, port = original_dst(sock)
        local = sock.getsockname()
    except OSError as exc:
        rec.rule, rec.error = "not redirected", f"SO_ORIGINAL_DST: {exc.strerror or exc}"
        _reset(sock)
        return
    rec.dst, rec.port = dst, port
    if (dst, port) == (_normal(local[0]), local[1]):
        rec.rule = "not redirected"  # made to the listener itself: dialling it would loop
        _reset(sock)
        return
    sandbox = ctx.sandbox_for(rec.client)
    if sandbox is None:
        rec.rule = "no sandbox"
        _reset(sock)
        return
    rec.sandbox = sandbox.id
    if config.max_connections and EGRESS.active > config.max_connections:
        rec.decision, rec.error = "error", "egress.max_connections"
        _reset(sock)
        return
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    client = SocketTransport(sock, ctx.deadlines)
    policy = ctx.compiled(sandbox)
    ip = ipaddress.ip_address(dst)

    # 2. sniff, 3. decide
    seen = Sniffed()
    if port in (80, 443) and (policy.needs_name or not policy.decide(None, ip).allowed):
        seen = await _sniff(ctx, client, port, rec)
    verdict = policy.decide(rec.name, ip)
    rec.rule = verdict.rule
    if not verdict.allowed:
        await _refuse(ctx, client, rec, seen)
        return

    # 5. dial
    if verdict.by_name:
        assert rec.name is not None
        try:
            addresses = await ctx.resolver.lookup(rec.name)
        except ResolveError as exc:
            rec.decision, rec.error = "error", f"resolve: {exc}"
            _reset(sock)
            return
    else:
        addresses = [dst]
    usable, refusal = [], None
    for address in addresses:
        why = always_denied(ipaddress.ip_address(address), ctx.exceptions)
        if why is None:
            usable.append(address)
        else:
            refusal = refusal or f"{why} ({address})"
    if not usable:
        assert refusal is not None
        if port in (80, 443) and not seen.read:
            seen = await _sniff(ctx, client, port, rec)  # to refuse in a form people can read
        rec.rule = refusal
        await _refuse(ctx, client, rec, seen)
        return
    upstream = await _connect(ctx, usable, port, rec)
    if upstream is None:
        rec.decision = "error"
        _reset(sock)
        return

    # 6. splice
    rec.decision = "allow"
    tunnel = _CountedTunnel()
    try:
        await tunnel.run(ctx.deadlines, client, upstream, seen.data, b"", config.read_size)
    finally:
        upstream.close()
        rec.bytes_out, rec.bytes_in = tunnel.bytes_up, tunnel.bytes_down


class Sniffed:
    """What was read before deciding: the bytes (sent on first when allowed) and the refusal's form:
    "http" (a 403 page, with the request fields it needs), "tls" (an alert, in the client's
    version) or "tcp" (a reset)."""

    __slots__ = ("read", "data", "form", "headers", "version")

    def __init__(self) -> None:
        self.read = False
        self.data = b""
        self.form = "tcp"
        self.headers: tuple[tuple[bytes, bytes], ...] = ()
        self.version = 0x0303


async def _sniff(ctx: EgressContext, client: SocketTransport, port: int, rec: EgressRecord) -> Sniffed:
    """Read the request head (port 80) or the ClientHello (443), within sniff_timeout; the name it
    gives goes to `rec`. A client that goes quiet or closes first leaves no name (decided by CIDR)."""
    config = ctx.config
    parse = read_head if port == 80 else read_hello
    deadline = trio.current_time() + config.sniff_timeout
    seen = Sniffed()
    seen.read = True
    buf = bytearray()
    found: object = None
    while True:
        try:
            data = await client.recv(config.read_size, deadline, "head")
        except (Expired, OSError):
            break
        if not data:
            break
        buf += data
        found = parse(buf, config.max_sniff_bytes)
        if found is not NEED_MORE:
            break
    seen.data = bytes(buf)
    if isinstance(found, Head):
        rec.via, rec.name = "host", found.name
        seen.form, seen.headers = "http", found.headers
    elif isinstance(found, Hello):
        rec.via, rec.name = "sni", found.name
        seen.form, seen.version = "tls", found.version
    elif seen.data[:1] == b"\x16":
        seen.form = "tls"
    return seen


async def _refuse(ctx: EgressContext, client: SocketTransport, rec: EgressRecord, seen: Sniffed) -> None:
    rec.decision = "deny"
    if seen.form == "tcp":
        _reset(client.sock)
        return
    if seen.form == "http":
        assert rec.port is not None
        exc = EgressDenied(rec.sandbox, rec.name or rec.dst or "?", rec.port, rec.rule)
        answer = http_forbidden(exc, seen.headers)
    else:
        answer = tls_alert(seen.version)
    try:
        await client.send(answer)
        rec.bytes_in = len(answer)
        # Half-close, then read what the client still sends for a moment: closing with unread bytes
        # would reset the connection and could destroy the answer in flight (nginx's lingering close).
        client.shutdown(socket.SHUT_WR)
        deadline = trio.current_time() + LINGER
        drained = 0
        while drained < 1 << 16:
            data = await client.recv(ctx.config.read_size, deadline, "linger")
            if not data:
                break
            drained += len(data)
    except (OSError, Expired):
        pass


async def _connect(ctx: EgressContext, addresses: list[str], port: int, rec: EgressRecord) -> SocketTransport | None:
    """The first of `addresses` that accepts, each within connect_timeout; None (and rec.error) if none."""
    errors = []
    for address in addresses:
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            err = sock.connect_ex((address, port))
            if err == errno.EINPROGRESS:
                w = Wait(sock.fileno())
                await ctx.deadlines.writable(w, trio.current_time() + ctx.config.connect_timeout, "connect")
                err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        except Expired:
            err = errno.ETIMEDOUT
        except BaseException:
            sock.close()
            raise
        if not err:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            rec.upstream = address
            return SocketTransport(sock, ctx.deadlines)
        sock.close()
        errors.append(f"{address}: {errno.errorcode.get(err, err)}")
    rec.error = "connect " + ", ".join(errors)
    return None


def open_listeners(listen: Listen) -> list[socket.socket]:
    """`[::]:PORT` is one dual-stack socket: sandboxes of both families redirected to one port (the
    ruleset redirects both to the same one). Any other address: edge.http.listen's sockets."""
    if listen.host != "::":
        return open_http_listeners(listen, what="egress")
    sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind(("::", listen.port))
        sock.listen(BACKLOG)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        raise ConfigError(f"egress: cannot listen on {listen}: {exc.strerror}") from None
    return [sock]


def _reset(sock: socket.socket) -> None:
    """Close with a TCP reset (SO_LINGER 0): the client sees "Connection reset by peer"."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET)
    except OSError:
        pass
    sock.close()


async def serve(
    config: EgressConfig,
    live: LiveCatalog,
    *,
    log: Log | None = None,
    sockets: list[socket.socket] | None = None,
    stop: Stopping | None = None,
    task_status=trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve until cancelled, or until `stop` is set: then stop accepting and give the connections in
    flight egress.shutdown_grace seconds (or less, if the stop's own deadline is nearer).
    `sockets`: bound by the supervisor (edge/sockets.py); else `config.listen` is bound here.
    Reports [("egress", (host, port)), ...]."""
    if sockets is not None:
        listeners = list(sockets)
    elif config.listen is None:
        raise ConfigError("egress.listen: no address to listen on")
    else:
        listeners = open_listeners(config.listen)
    try:
        ctx = EgressContext(config, live, log or write_line)
        bound = [("egress", tuple(sock.getsockname()[:2])) for sock in listeners]
        async with trio.open_nursery() as nursery:
            nursery.start_soon(ctx.deadlines.run)
            async with trio.open_nursery() as handlers:
                accepting: list[trio.CancelScope] = []

                async def accept(sock: socket.socket) -> None:
                    scope = trio.CancelScope()
                    accepting.append(scope)
                    with scope:
                        try:
                            await accept_loop(sock, handlers, partial(_handle, ctx), label="egress")
                        except trio.ClosedResourceError:
                            pass

                for sock in listeners:
                    handlers.start_soon(accept, sock)
                task_status.started(bound)
                if stop is None:
                    await trio.sleep_forever()
                    return
                await stop.wait()
                for scope in accepting:
                    scope.cancel()
                for sock in listeners:
                    trio.lowlevel.notify_closing(sock)
                    sock.close()
                handlers.cancel_scope.deadline = trio.current_time() + config.shutdown_grace
                stop.bound(handlers.cancel_scope)
            nursery.cancel_scope.cancel()
    finally:
        for sock in listeners:
            sock.close()
