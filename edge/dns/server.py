"""The DNS server: UDP and TCP on one port, zone reloads, rate limiting. The only DNS module with I/O.

Theory of operation
-------------------
`serve(config)` loads the zones (a bad file refuses the start with FILE:LINE: reason), binds UDP,
then TCP on the port UDP got, and runs four tasks: the UDP loop, the TCP listener, a poller of the
zones folder and, in the main thread only, a SIGHUP receiver. A reload builds new zones and new
templates and swaps them in as one snapshot; a file that fails to load keeps its previous zone.

The UDP loop is the hot path. trio's `sock.recvfrom` costs a trip through the scheduler per packet,
so the loop owns a non-blocking stdlib socket instead: it waits once for readability, then drains the
socket (recvfrom until BlockingIOError, at most BATCH packets before it lets other tasks run),
answering each packet in turn: templates first (edge.dns.fastpath), dnslib when they do not apply
(edge.dns.answer), then the rate limiter, then sendto. Nothing is logged per query.

TCP (RFC 7766): one task per connection, messages length-prefixed and possibly split across reads or
pipelined several to a read; each complete message is answered in order, the replies of one read sent
together. A connection idle for `tcp_idle_timeout` is closed; past `max_tcp_connections`, new
connections are closed at once. TCP is exempt from rate limiting (its source cannot be spoofed).
"""

from __future__ import annotations

import errno
import logging
import signal
import socket
import threading
import time
from functools import partial

import trio

from edge.accept import accept_loop
from edge.config import Config, Listen
from edge.dns.answer import answer, truncate
from edge.dns.fastpath import FastPath
from edge.dns.rrl import DROP, RateLimiter
from edge.dns.zone import Zones
from edge.dns.zonefile import load_zones, zone_path
from edge.errors import EdgeError
from edge.metrics import STATS

logger = logging.getLogger("edge.dns")

#: Packets answered in a row before the UDP loop lets other tasks (TCP, reloads) run.
BATCH = 512
#: Largest UDP query read; anything longer is cut and answered FORMERR.
MAX_UDP_QUERY = 4096
#: Seconds between two warnings about malformed packets (the ones between are counted).
WARN_EVERY = 10.0


class _State:
    """The zones being served, as one snapshot swapped whole on reload, plus the server's counters."""

    def __init__(self, config: Config) -> None:
        self.config = config
        dns = config.dns
        self.edns_size = max(512, min(dns.edns_udp_size, 65535))  # RFC 6891 6.2.5: below 512 means 512
        self.limiter = (
            RateLimiter(dns.rrl_rate, dns.rrl_slip, dns.rrl_ipv4_prefix, dns.rrl_ipv6_prefix)
            if dns.rrl_rate
            else None
        )
        self.tcp_open = 0
        self._warned_at = -WARN_EVERY
        self._unwarned = 0
        self.signature = self._signature()
        self._install(load_zones(config.domains, dns.zones, config.http.listen.host))

    def _install(self, zones: Zones) -> None:
        # One tuple, read once per batch of packets: a reload never mixes old templates and new zones.
        self.snapshot = (FastPath.build(zones, self.edns_size).answer, zones)
        self.zones = zones

    def _signature(self) -> tuple:
        sig = []
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
        dns = self.config.dns
        try:
            zones = load_zones(
                self.config.domains, dns.zones, self.config.http.listen.host, previous=self.zones
            )
        except Exception as exc:  # e.g. the folder became unreadable: keep serving what we have
            logger.error("zones not reloaded, keeping the previous ones: %r", exc)
            return
        self._install(zones)

    def malformed(self, addr, problem: str) -> None:
        now = time.monotonic()
        if now - self._warned_at < WARN_EVERY:
            self._unwarned += 1
            return
        more = f" ({self._unwarned} more since the last warning)" if self._unwarned else ""
        logger.warning("malformed DNS packet from %s: %s%s", addr[0], problem, more)
        self._warned_at, self._unwarned = now, 0


async def serve(config: Config, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
    """Serve DNS on config.dns.listen (UDP and TCP) until cancelled; report [(host, port)] when bound."""
    state = _State(config)
    udp, tcp, bound = _bind(config.dns.listen)
    with udp, tcp:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_udp_loop, udp, state)
            # Connections run in this nursery; the loop takes a whole burst per wake-up (edge/accept.py).
            nursery.start_soon(partial(accept_loop, tcp, nursery, partial(_tcp_connection, state=state), label="dns"))
            nursery.start_soon(_watch_folder, state)
            if threading.current_thread() is threading.main_thread() and hasattr(signal, "SIGHUP"):
                await nursery.start(_watch_sighup, state)  # installed before we report being up
            task_status.started([bound])


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
    recvfrom, sendto = sock.recvfrom, sock.sendto
    wait_readable = trio.lowlevel.wait_readable
    monotonic = time.monotonic
    edns_size = state.edns_size
    stats = STATS
    answers = stats.dns_answers
    while True:
        await wait_readable(sock)
        fast, zones = state.snapshot
        limiter = state.limiter
        now = monotonic()
        for _ in range(BATCH):
            try:
                data, addr = recvfrom(MAX_UDP_QUERY)
            except BlockingIOError:
                break
            except OSError:  # e.g. an ICMP error reported on the socket: nothing to answer
                continue
            try:
                result = fast(data)
            except Exception as exc:  # a bug in the templates must not take the server down
                state.malformed(addr, f"fast path: {exc!r}")
                result = None
            if result is None:
                result = answer(data, zones, edns_size=edns_size)  # never raises
                if result[2] is not None:
                    state.malformed(addr, result[2])
            reply = result[0]
            if reply is None:
                continue
            if limiter is not None:
                verdict = limiter.check(addr[0], result[1], now)
                if verdict:
                    stats.dns_rate_limited += 1
                    if verdict == DROP:
                        continue
                    reply = truncate(reply)  # SLIP: TC=1 and no records, so a real client retries on TCP
            answers[reply[3] & 15] += 1
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


async def _tcp_connection(stream: trio.SocketStream, state: _State) -> None:
    dns = state.config.dns
    if state.tcp_open >= dns.max_tcp_connections:
        await stream.aclose()
        return
    state.tcp_open += 1
    try:
        buf = bytearray()
        deadline = 0.0
        while True:
            # Between messages the clock restarts; inside one it does not: a message must arrive
            # whole within tcp_idle_timeout of its first byte, so a client trickling a byte at a time
            # cannot hold a connection slot for ever (RFC 7766 6.2.3 leaves the policy to servers).
            if not buf:
                deadline = trio.current_time() + dns.tcp_idle_timeout
            chunk = b""
            with trio.move_on_at(deadline):
                chunk = await stream.receive_some(65536)
            if not chunk:  # EOF, or idle (or trickling) for too long
                return
            buf += chunk
            replies = []
            close = False
            while len(buf) >= 2:
                size = (buf[0] << 8) | buf[1]
                if len(buf) < 2 + size:
                    break
                message = bytes(buf[2 : 2 + size])
                del buf[: 2 + size]
                fast, zones = state.snapshot
                try:
                    result = fast(message)
                except Exception as exc:  # a bug in the templates must not take the server down
                    state.malformed(("tcp",), f"fast path: {exc!r}")
                    result = None
                if result is None:
                    result = answer(message, zones, tcp=True, edns_size=state.edns_size)  # never raises
                if result[2] is not None:
                    state.malformed(stream.socket.getpeername(), result[2])
                if result[0] is None:  # nothing we can answer: the stream may be out of step, close it
                    close = True
                    break
                STATS.dns_answers[result[0][3] & 15] += 1
                replies.append(len(result[0]).to_bytes(2, "big") + result[0])
            if replies:
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
        with trio.CancelScope(shield=True):
            await stream.aclose()


async def _watch_folder(state: _State) -> None:
    while True:
        await trio.sleep(state.config.dns.zones_poll)
        if state.changed():
            state.reload("a zone file changed")


async def _watch_sighup(state: _State, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
    # Only called in the main thread: trio delivers signals there only.
    with trio.open_signal_receiver(signal.SIGHUP) as signals:
        task_status.started()
        async for _ in signals:
            state.reload("SIGHUP")
