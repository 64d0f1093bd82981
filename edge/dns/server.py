"""The DNS server: UDP and TCP on one port, zone reloads, rate limiting. The only DNS module with I/O.

Theory of operation
-------------------
`serve(config)` loads the zones (a bad file refuses the start with FILE:LINE: reason, and so does a
domain with neither a file nor a zone it may synthesize), binds UDP, then TCP on the port UDP got, and
runs four tasks: the UDP loop, the TCP listener, a poller of the zones folder and, in the main thread
only, a SIGHUP receiver. A reload builds new zones and new templates and swaps them in as one snapshot;
a file that fails to load, or that is gone, keeps its previous zone (edge.dns.zonefile.load_zones).

The UDP loop is the hot path. trio's `sock.recvfrom` costs a trip through the scheduler per packet,
so the loop owns a non-blocking stdlib socket instead: it waits once for readability, then drains the
socket (recvfrom until BlockingIOError), answering each packet in turn with edge.dns.respond (the
templates, else edge.dns.answer; the rate limiter before an answer is packed), then sendto. TCP
answers with the same function, without the rate limiter. Nothing is logged per query.

ACME DNS-01 values come from the live catalog (`serve(config, live)`): the zones from the files and
the catalog's challenges are merged into the zones served (edge.dns.challenges) at the start, on
each catalog change that touches a challenge, on each zone reload, and when a value expires. Nothing
of this is on the query path: a query reads the merged zones like any other.

A batch (one wake-up) stops at BATCH packets or BATCH_SECONDS of work, whichever comes first; the
packets left wait in the kernel for the next round. The HTTP server runs in the same thread: however
packets arrive, it waits at most one batch for its turn. TCP connections take the same budget per
round of pipelined messages.

TCP (RFC 7766): one task per connection, messages length-prefixed and possibly split across reads or
pipelined several to a read; complete messages are answered in order, the replies of one round sent
together. A connection idle for `tcp_idle_timeout` is closed; past `max_tcp_connections`, or past
`max_tcp_connections_per_ip` from one client address (IPv6: one /64), new connections are closed at
once. TCP is exempt from rate limiting (its source cannot be spoofed).
"""

from __future__ import annotations

import errno
import logging
import signal
import socket
import threading
import time
from contextlib import ExitStack
from functools import partial

import trio

from edge.accept import accept_loop
from edge.catalog.model import Snapshot
from edge.catalog.store import LiveCatalog
from edge.config import Config, Listen
from edge.dns.challenges import with_challenges
from edge.dns.fastpath import FastPath
from edge.dns.fleet import with_fleet
from edge.dns.respond import respond
from edge.dns.rrl import RateLimiter
from edge.dns.zone import Zones
from edge.dns.zonefile import load_zones, zone_path
from edge.errors import EdgeError
from edge.metrics import STATS
from edge.stopping import Stopping

logger = logging.getLogger("edge.dns")

#: Packets answered in a row, at most, before the UDP loop lets other tasks (HTTP, TCP, reloads) run.
BATCH = 512
#: Seconds of answering in a row, at most, before a loop lets other tasks run: the longest an HTTP
#: request can wait behind one round of DNS (a wildcard answer takes ~5 us, any other ~40 us).
BATCH_SECONDS = 0.002
#: Largest UDP query read; anything longer is cut and answered FORMERR.
MAX_UDP_QUERY = 4096
#: Seconds between two warnings about malformed packets (the ones between are counted).
WARN_EVERY = 10.0


class _State:
    """The zones being served, as one snapshot swapped whole on reload, plus the server's counters."""

    def __init__(self, config: Config, live: LiveCatalog | None = None) -> None:
        self.config = config
        self.challenges = live.snapshot.challenges if live is not None else ()
        # Several edges on a Redis catalog: the wildcard answers with the serving edges (edge/dns/fleet.py).
        self.fleet = live.fleet if live is not None else None
        self.fleet_addresses: tuple[str, ...] = self.fleet.addresses if self.fleet is not None else ()
        if self.fleet is not None:
            self.fleet.on_change(self.fleet_changed)
        #: When the first challenge value served expires (time.time()); None: none is served.
        self.challenges_expire: float | None = None
        dns = config.dns
        self.edns_size = max(512, min(dns.edns_udp_size, 65535))  # RFC 6891 6.2.5: below 512 means 512
        self.limiter = (
            RateLimiter(dns.rrl_rate, dns.rrl_slip, dns.rrl_ipv4_prefix, dns.rrl_ipv6_prefix, exempt=dns.rrl_exempt)
            if dns.rrl_rate
            else None
        )
        self.tcp_open = 0
        self.tcp_by_client: dict[str | bytes, int] = {}
        self._warned_at = -WARN_EVERY
        self._unwarned = 0
        self.signature = self._signature()
        self.loaded = load_zones(config)
        self._install(self.loaded.zones)

    def _install(self, zones: Zones) -> None:
        """Serve `zones` (from the files) with the current challenge values merged in."""
        self.zones = zones  # the files' zones, without challenges: what a reload keeps on error
        fleet = with_fleet(zones, self.fleet_addresses, self.fleet.config.dns_ttl) if self.fleet is not None else zones
        served, self.challenges_expire = with_challenges(fleet, self.challenges, time.time())
        # One tuple, read once per batch of packets: a reload never mixes old templates and new zones.
        self.snapshot = (FastPath.build(served, self.edns_size).answer, served)

    def catalog_changed(self, old: Snapshot, new: Snapshot) -> None:
        """LiveCatalog listener: merge again when the challenge values changed."""
        if new.challenges != self.challenges:
            self.challenges = new.challenges
            logger.info("serving %d ACME challenge value(s)", len(new.challenges))
            self._install(self.zones)

    def fleet_changed(self, addresses: tuple[str, ...]) -> None:
        """Fleet listener: the serving edges changed; answer with them."""
        self.fleet_addresses = addresses
        self._install(self.zones)

    def expire_challenges(self, now: float) -> None:
        if self.challenges_expire is not None and now >= self.challenges_expire:
            self._install(self.zones)

    def _signature(self) -> tuple[object, ...]:
        sig: list[tuple[object, ...]] = []
        for domain in self.config.domains:
            try:
                st = zone_path(self.config.dns.zones, domain).stat()
                sig.append((domain, st.st_mtime_ns, st.st_size, st.st_ino))
            except OSError:
                sig.append((domain, None))
        return tuple(sig)

    def changed(self) -> bool:
        return self._signature() != self.signature

    def reload(self, why: str) -> None:
        self.signature = self._signature()  # before reading, so an edit during the load is seen next time
        logger.info("reloading zones (%s)", why)
        try:
            loaded = load_zones(self.config, previous=self.loaded)
        except Exception as exc:  # e.g. the folder became unreadable: keep serving what we have
            logger.error("zones not reloaded, keeping the previous ones: %r", exc)
            return
        self.loaded = loaded
        self._install(loaded.zones)

    def malformed(self, addr, problem: str) -> None:
        now = time.monotonic()
        if now - self._warned_at < WARN_EVERY:
            self._unwarned += 1
            return
        more = f" ({self._unwarned} more since the last warning)" if self._unwarned else ""
        logger.warning("malformed DNS packet from %s: %s%s", addr[0], problem, more)
        self._warned_at, self._unwarned = now, 0


async def serve(
    config: Config,
    live: LiveCatalog | None = None,
    *,
    sockets: list[tuple[socket.socket, socket.socket]] | None = None,
    stop: Stopping | None = None,
    task_status=trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve DNS on config.dns.listen (UDP and TCP) until cancelled; report [(host, port)] when bound.

    `live`: the catalog, whose ACME challenge values are served as TXT records (none without it).
    `sockets`: (udp, tcp) pairs bound by the supervisor (edge/sockets.py); without them the
    configured addresses are bound here. When `stop` is set, the loops stop reading and accepting
    at once (what waits in the sockets is the next generation's); TCP connections open then finish
    their messages, each bounded by dns.tcp_idle_timeout."""
    state = _State(config, live)
    if live is not None:
        live.on_change(state.catalog_changed)
    if sockets is None:
        pairs = [(udp, tcp) for udp, tcp, _ in bind_all(config.dns.listen)]
    else:
        pairs = list(sockets)
    bound = [tuple(udp.getsockname()[:2]) for udp, _ in pairs]
    with ExitStack() as owned:
        for udp, tcp in pairs:
            owned.enter_context(udp)
            owned.enter_context(tcp)
        async with trio.open_nursery() as nursery:
            loops = trio.CancelScope()

            async def run_loops(*, task_status=trio.TASK_STATUS_IGNORED) -> None:
                with loops:
                    async with trio.open_nursery() as inner:
                        for udp, tcp in pairs:
                            inner.start_soon(_udp_loop, udp, state)
                            # Connections run in the outer nursery, so they outlive the loops at a
                            # stop; the loop takes a bounded batch per scheduler round (edge/accept.py).
                            inner.start_soon(
                                partial(accept_loop, tcp, nursery, partial(_tcp_connection, state=state), label="dns")
                            )
                        inner.start_soon(_watch_folder, state)
                        if threading.current_thread() is threading.main_thread() and hasattr(signal, "SIGHUP"):
                            await inner.start(_watch_sighup, state)  # installed before we report being up
                        task_status.started()

            await nursery.start(run_loops)
            task_status.started(bound)
            if stop is not None:
                await stop.wait()
                loops.cancel()


def bind_all(listen: Listen) -> list[tuple[socket.socket, socket.socket, tuple[str, int]]]:
    """A UDP and a TCP socket for every address of `listen` (IPv4 and IPv6 together); with port 0
    the first address picks the port and the others follow it."""
    pairs: list[tuple[socket.socket, socket.socket, tuple[str, int]]] = []
    port = listen.port
    try:
        for one in listen.all():
            pair = _bind(Listen(one.host, port or one.port))
            pairs.append(pair)
            port = port or pair[2][1]
    except BaseException:
        for udp, tcp, _ in pairs:
            udp.close()
            tcp.close()
        raise
    return pairs


def _bind(listen: Listen):
    """UDP first (port 0 picks one), then TCP on the same port; if that port's TCP side is taken, retry."""
    host = "127.0.0.1" if listen.host == "localhost" else listen.host
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    for _ in range(20):
        udp = socket.socket(family, socket.SOCK_DGRAM)
        tcp = socket.socket(family, socket.SOCK_STREAM)
        try:
            udp.setblocking(False)
            try:  # room for bursts while the loop answers (the kernel caps it at net.core.rmem_max)
                udp.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
            except OSError:
                pass
            udp.bind((host, listen.port))
            port = udp.getsockname()[1]
            tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            tcp.bind((host, port))
            tcp.listen(1024)
            tcp.setblocking(False)
            return udp, tcp, (host, port)
        except OSError as exc:
            udp.close()
            tcp.close()
            if listen.port == 0 and exc.errno == errno.EADDRINUSE:
                continue
            raise EdgeError(f"dns: cannot listen on {listen}: {exc.strerror}") from None
    raise EdgeError(f"dns: no port free for both UDP and TCP on {host}")


async def _udp_loop(sock: socket.socket, state: _State) -> None:
    wait_readable = trio.lowlevel.wait_readable
    while True:
        await wait_readable(sock)
        await _udp_batch(sock, state)


async def _udp_batch(sock: socket.socket, state: _State, budget: float = BATCH_SECONDS) -> int:
    """Answer the packets waiting on `sock` until it is empty, BATCH were read, or `budget` seconds
    have passed; return how many were read. The rest waits in the kernel for the next round."""
    recvfrom, sendto = sock.recvfrom, sock.sendto
    monotonic = time.monotonic
    edns_size = state.edns_size
    stats = STATS
    answers = stats.dns_answers
    fast, zones = state.snapshot
    limiter = state.limiter
    now = monotonic()
    deadline = now + budget
    read = 0
    while read < BATCH:
        if read:
            now = monotonic()
            if now >= deadline:
                break
        read += 1
        try:
            data, addr = recvfrom(MAX_UDP_QUERY)
        except BlockingIOError:
            read -= 1
            break
        except OSError:  # e.g. an ICMP error reported on the socket: nothing to answer
            continue
        out = respond(data, fast, zones, edns_size=edns_size, limiter=limiter, client=addr[0], now=now)
        if out.problem is not None:
            state.malformed(addr, out.problem)
        if out.limited:
            stats.dns_rate_limited += 1
        reply = out.reply
        if reply is None:
            continue
        answers[out.rcode] += 1
        try:
            sendto(reply, addr)
        except BlockingIOError:
            await trio.lowlevel.wait_writable(sock)
            try:
                sendto(reply, addr)
            except OSError:
                pass
        except OSError:
            pass
    return read


def _client_of(host: str) -> str | bytes:
    """What the per-client TCP connection cap counts by: the address, or for IPv6 its /64 (one host
    commonly holds a whole /64)."""
    if ":" not in host or (host.startswith("::ffff:") and "." in host):
        return host
    try:
        return socket.inet_pton(socket.AF_INET6, host.partition("%")[0])[:8]
    except OSError:
        return host


async def _tcp_connection(stream: trio.SocketStream, state: _State) -> None:
    dns = state.config.dns
    try:
        peer = stream.socket.getpeername()
    except OSError:  # gone already
        await stream.aclose()
        return
    client = _client_of(peer[0])
    open_here = state.tcp_by_client.get(client, 0)
    if state.tcp_open >= dns.max_tcp_connections or open_here >= dns.max_tcp_connections_per_ip:
        await stream.aclose()
        return
    state.tcp_open += 1
    state.tcp_by_client[client] = open_here + 1
    try:
        buf = bytearray()
        deadline = trio.current_time() + dns.tcp_idle_timeout
        while True:
            if not _whole_message(buf):
                # Between messages the clock restarts; inside one it does not: a message must arrive
                # whole within tcp_idle_timeout of its first byte, so a client trickling a byte at a
                # time cannot hold a connection slot for ever (RFC 7766 6.2.3 leaves the policy to
                # servers).
                if not buf:
                    deadline = trio.current_time() + dns.tcp_idle_timeout
                chunk = b""
                with trio.move_on_at(deadline):
                    chunk = await stream.receive_some(65536)
                if not chunk:  # EOF, or idle (or trickling) for too long
                    return
                buf += chunk
                continue
            replies, close = _tcp_batch(buf, state, peer)
            # The next message's clock starts now at the latest (its first bytes may be in buf).
            deadline = trio.current_time() + dns.tcp_idle_timeout
            if replies:  # sending yields: other tasks run between two rounds of one connection
                with trio.move_on_after(dns.tcp_idle_timeout) as scope:
                    await stream.send_all(b"".join(replies))
                if scope.cancelled_caught:
                    return
            if close:
                return
    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
        pass
    finally:
        state.tcp_open -= 1
        left = state.tcp_by_client.pop(client) - 1
        if left:
            state.tcp_by_client[client] = left
        with trio.CancelScope(shield=True):
            await stream.aclose()


def _whole_message(buf: bytearray) -> bool:
    return len(buf) >= 2 and len(buf) >= 2 + ((buf[0] << 8) | buf[1])


def _tcp_batch(buf: bytearray, state: _State, peer: tuple, budget: float = BATCH_SECONDS) -> tuple[list[bytes], bool]:
    """Answer the whole messages at the start of `buf`, removing them, until none is left or `budget`
    seconds have passed. Returns the framed replies, and True when the connection must close (a
    message we cannot answer: the stream may be out of step)."""
    deadline = time.monotonic() + budget
    replies: list[bytes] = []
    fast, zones = state.snapshot
    edns_size = state.edns_size
    while _whole_message(buf):
        if replies and time.monotonic() >= deadline:
            break
        size = (buf[0] << 8) | buf[1]
        message = bytes(buf[2 : 2 + size])
        del buf[: 2 + size]
        # TCP is exempt from rate limiting: its source cannot be spoofed.
        out = respond(message, fast, zones, edns_size=edns_size, tcp=True)
        if out.problem is not None:
            state.malformed(peer, out.problem)
        if out.reply is None:
            return replies, True
        STATS.dns_answers[out.rcode] += 1
        replies.append(len(out.reply).to_bytes(2, "big") + out.reply)
    return replies, False


async def _watch_folder(state: _State) -> None:
    while True:
        await trio.sleep(state.config.dns.zones_poll)
        if state.changed():
            state.reload("a zone file changed")
        state.expire_challenges(time.time())


async def _watch_sighup(state: _State, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
    # Only called in the main thread: trio delivers signals there only.
    with trio.open_signal_receiver(signal.SIGHUP) as signals:
        task_status.started()
        async for _ in signals:
            state.reload("SIGHUP")
