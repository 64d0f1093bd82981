"""What every connection of one HTTP server shares. Built once per server; read per request.

It owns the server-wide state: the deadline table (deadlines.py), the sandbox connection pool, the
counts behind the connection caps and the per-sandbox limits, and the exchanges in flight, which a
catalog change may revoke.
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import os
import socket

from edge.catalog.model import Sandbox, Snapshot
from edge.catalog.store import LiveCatalog
from edge.config import Config
from edge.http.deadlines import Deadlines
from edge.http.exchange import Exchange
from edge.http.limits import connection_limits, revokes
from edge.http.loop import OwnListeners
from edge.http.route import Router
from edge.http.upstream import Pool
from edge.metrics import STATS

logger = logging.getLogger("edge.http")


def via_token(config: Config) -> bytes:
    """The edge's own Via token: the same in every worker of one edge (they share the listener),
    different for another edge (another host or listener), so a loop through either is caught."""
    seed = f"{socket.gethostname()} {config.http.listen}".encode()
    return b"edge-" + hashlib.sha256(seed).hexdigest()[:8].encode()


#: The waits for a request between exchanges: "first" on a new connection, "idle" on a kept-alive one.
WAITING = ("first", "idle")


class ServerContext:
    __slots__ = (
        "config",
        "http",
        "router",
        "live",
        "pool",
        "deadlines",
        "access_log",
        "own",
        "via",
        "via_entry",
        "max_open",
        "max_per_ip",
        "open",
        "per_ip",
        "active",
        "inflight",
        "draining",
        "trusted",
        "_id_prefix",
        "_id_count",
    )

    def __init__(self, config: Config, live: LiveCatalog, own: OwnListeners) -> None:
        http = self.http = config.http
        self.config = config
        self.router = Router(config.domains)
        self.live = live
        self.deadlines = Deadlines(http, config.https.handshake_timeout)
        self.pool = Pool(http, self.deadlines)
        self.access_log = config.access_log
        #: The edge's own listeners: a sandbox target among them is a loop (508).
        self.own = own
        self.via = via_token(config)
        self.via_entry = b"1.1 " + self.via
        #: Client connections at most, in all and per client address; `open` and `per_ip` count
        #: those admitted.
        self.max_open, self.max_per_ip = connection_limits(http)
        self.open = 0
        self.per_ip: dict[str, int] = {}
        #: In-flight exchanges and tunnels per sandbox with a max_connections limit (limits.SandboxSlot).
        self.active: dict[str, int] = {}
        #: Exchanges in flight -> the sandbox record they were authorised against (limits.SandboxSlot).
        self.inflight: dict[Exchange, Sandbox] = {}
        #: Set when the server stops: connections end after their current exchange.
        self.draining = False
        #: http.trusted_proxies, parsed once.
        self.trusted = tuple(ipaddress.ip_network(c, strict=False) for c in http.trusted_proxies)
        #: Request ids made here: a random prefix per process and a counter (cheap, unique enough to
        #: find one request in the logs of a fleet).
        self._id_prefix = os.urandom(6).hex().encode()
        self._id_count = 0
        live.on_change(self.revoke_changed)

    def trusts(self, peer: str) -> bool:
        """Is this peer one of http.trusted_proxies (its X-Forwarded-For is extended)?"""
        if not self.trusted:
            return False
        try:
            address = ipaddress.ip_address(peer)
        except ValueError:
            return False
        return any(address in net for net in self.trusted)

    def new_request_id(self) -> bytes:
        self._id_count += 1
        return b"%s-%x" % (self._id_prefix, self._id_count)

    def admit(self, ip: str) -> bool:
        """Count a new client connection in, or refuse it (the caller closes it at once).

        At the total cap, connections that are only waiting (for a first request or between
        requests) are closed to make room, oldest deadline first, as nginx reuses its idle keep-alive
        connections: otherwise idle sockets from a handful of addresses would lock every new client
        out until head_timeout."""
        n = self.per_ip.get(ip, 0)
        if n >= self.max_per_ip:
            STATS.http_connections_rejected["per_ip"] += 1
            return False
        if self.open >= self.max_open and not self._reclaim_idle():
            STATS.http_connections_rejected["total"] += 1
            return False
        self.per_ip[ip] = n + 1
        self.open += 1
        return True

    def _reclaim_idle(self, batch: int = 16) -> bool:
        """Close up to `batch` waiting connections (they end within this scheduler round)."""
        deadlines = self.deadlines
        idle = sorted((when, id(w), w) for w, when in deadlines.table.items() if w.kind in WAITING)[:batch]
        for _, _, w in idle:
            deadlines.expire(w, w.kind)
        STATS.http_idle_reclaimed += len(idle)
        return bool(idle)

    def leave(self, ip: str) -> None:
        self.open -= 1
        n = self.per_ip[ip] - 1
        if n:
            self.per_ip[ip] = n
        else:
            del self.per_ip[ip]

    def drain(self) -> None:
        """Stop keep-alive: connections waiting for their next request close now, busy ones after their
        exchange. One still to send its first request is served: its client reused nothing, so it
        would not retry a close (its wait, kind "first", ends by head_timeout as ever)."""
        self.draining = True
        deadlines = self.deadlines
        for w in [w for w in deadlines.table if w.kind == "idle"]:
            deadlines.expire(w, "idle")

    def revoke_changed(self, old: Snapshot, new: Snapshot) -> None:
        """A new catalog snapshot: cut the exchanges and tunnels it revokes (removed sandbox, new
        address, made private, token rotated). Keep-alive requests are checked anew anyway."""
        if not self.inflight:
            return
        for ex, was in list(self.inflight.items()):
            why = revokes(was, new.get(was.id))
            if why is not None:
                logger.info("sandbox %s: %s; closing an open connection", was.id, why)
                STATS.http_revoked += 1
                self.revoke(ex)

    def revoke(self, ex: Exchange) -> None:
        """Cut one exchange or tunnel: both sockets shut down (not closed, so no descriptor number is
        reused under a task still holding it), so every wait on them ends; nothing is retried."""
        ex.revoked = True
        try:
            ex.client.io.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        up = ex.upstream
        if up is not None:
            try:
                up.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self.deadlines.expire(up.rd, "revoked")
