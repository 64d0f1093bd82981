"""Fleet liveness: which edges sharing a Redis catalog are up and serving, for DNS to answer with.

Theory of operation
-------------------
Every edge (the process that serves DNS) writes a heartbeat every `fleet.beat` seconds:

    edge:node:<id>   JSON {id, addresses, state: serving|draining, version}, expiring after fleet.ttl
    edge:nodes       SET of the ids that beat (so the fleet is read without scanning the keyspace)

and in the same beat reads the fleet back: the members of `edge:nodes`, their keys in one MGET (an
id whose key expired is removed from the set). The addresses of the edges that are `serving` are
what this edge's DNS answers for the sandbox names (edge/dns/fleet.py replaces the zones' wildcard
A/AAAA records with them). An edge whose beats stop (killed, frozen, cut off) is dropped from every
edge's answers within `ttl` plus one `beat`.

Never an empty answer: when no edge is serving (all draining), or the fleet cannot be read (Redis
away), the last set read that had an edge in it stays; before any, nothing is replaced and the zone
file answers. A stopping edge calls `drain()` first: it beats once as `draining` at once, so every
edge's DNS leaves it out within a beat, and waits `fleet.drain_wait` seconds (resolvers' caches
expire) before it stops accepting; at the very end `leave()` deletes its key.

Liveness is kept by Redis's own expiry, so no two edges' clocks are ever compared.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import trio

from edge import __version__
from edge.catalog.redis import RedisStore
from edge.catalog.store import LiveCatalog, Store
from edge.config import Config
from edge.errors import CatalogError

log = logging.getLogger("edge.fleet")

NODE = "edge:node:"
NODES = "edge:nodes"


@dataclass(frozen=True)
class Node:
    id: str
    addresses: tuple[str, ...]
    state: str  # "serving" or "draining"
    version: str = ""

    def to_json(self) -> str:
        doc = {"id": self.id, "addresses": list(self.addresses), "state": self.state, "version": self.version}
        return json.dumps(doc, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> Node | None:
        try:
            doc = json.loads(text)
            addresses = tuple(str(ipaddress.ip_address(a)) for a in doc.get("addresses", ()))
            return cls(str(doc["id"]), addresses, str(doc.get("state", "serving")), str(doc.get("version", "")))
        except (TypeError, ValueError, KeyError):
            return None


def public_addresses(config: Config) -> tuple[str, ...]:
    """fleet.public_addresses, else the HTTP and HTTPS listeners' own addresses that are not wildcards."""
    if config.fleet.public_addresses:
        return tuple(str(ipaddress.ip_address(a)) for a in config.fleet.public_addresses)
    found: list[str] = []
    listens = [config.http.listen, *([config.https.listen] if config.https.listen else [])]
    for listen in listens:
        for one in listen.all():
            try:
                ip = ipaddress.ip_address(one.host)
            except ValueError:  # "localhost"
                continue
            if not ip.is_unspecified and str(ip) not in found:
                found.append(str(ip))
    return tuple(found)


def serving_addresses(nodes: tuple[Node, ...]) -> tuple[str, ...]:
    """The addresses of the serving edges, each once, in order (IPv4 before IPv6). Pure."""
    found = {a for node in nodes if node.state == "serving" for a in node.addresses}
    return tuple(sorted(found, key=lambda a: (ipaddress.ip_address(a).version, ipaddress.ip_address(a))))


class Fleet:
    """This edge's heartbeat and the fleet as last read. `addresses` is what DNS answers with (empty:
    the zone file's); listeners registered with `on_change` hear when it changes."""

    def __init__(self, config: Config, store: RedisStore) -> None:
        self.config = config.fleet
        self.store = store
        self.addresses_own = public_addresses(config)
        first = self.addresses_own[0] if self.addresses_own else str(os.getpid())
        self.node_id = self.config.node_id or f"{socket.gethostname()}-{first}"
        self.state = "serving"
        #: The edges read at the last beat that read the fleet.
        self.nodes: tuple[Node, ...] = ()
        #: What DNS answers with: the serving edges' addresses, never emptied once known.
        self.addresses: tuple[str, ...] = ()
        #: Why the last beat failed, or None.
        self.problem: str | None = None
        self._listeners: list[Callable[[tuple[str, ...]], None]] = []
        self._none_serving = False  # the last beat read no serving edge (warned once)
        self._beating: trio.CancelScope | None = None
        self.handed_over = False  # a deploy: the next generation beats for this edge now

    def on_change(self, listener: Callable[[tuple[str, ...]], None]) -> None:
        self._listeners.append(listener)

    # --- Redis, in worker threads -------------------------------------------------------------------

    def _beat(self) -> tuple[Node, ...]:
        """Write this edge's heartbeat and read the fleet: one pipeline each way."""
        me = Node(self.node_id, self.addresses_own, self.state, __version__)
        client = self.store.client

        def beat() -> list[Any]:
            pipe = client.pipeline(transaction=True)
            pipe.set(NODE + self.node_id, me.to_json(), px=int(self.config.ttl * 1000))
            pipe.sadd(NODES, self.node_id)
            pipe.smembers(NODES)
            return pipe.execute()

        ids = sorted(self.store.call("heartbeat", beat)[2])
        values = self.store.call("fleet", lambda: client.mget([NODE + i for i in ids])) if ids else []
        gone = [i for i, v in zip(ids, values, strict=True) if v is None]
        if gone:
            self.store.call("fleet", lambda: client.srem(NODES, *gone))
        nodes = (Node.from_json(v) for v in values if v is not None)
        return tuple(n for n in nodes if n is not None)

    def _leave(self) -> None:
        client = self.store.client

        def leave() -> None:
            pipe = client.pipeline(transaction=True)
            pipe.delete(NODE + self.node_id)
            pipe.srem(NODES, self.node_id)
            pipe.execute()

        self.store.call("leave", leave)

    # --- the task ------------------------------------------------------------------------------------

    async def beat_once(self) -> None:
        try:
            nodes = await trio.to_thread.run_sync(self._beat, abandon_on_cancel=True)
        except CatalogError as exc:
            if self.problem is None:
                log.error("fleet heartbeat failed; DNS keeps answering with %s: %s", self._shown(), exc.message)
            self.problem = exc.message
            return
        if self.problem is not None:
            log.warning("fleet heartbeat back")
        self.problem = None
        self.nodes = nodes
        serving = serving_addresses(nodes)
        if serving and serving != self.addresses:
            log.info("fleet: %d edge(s) serving at %s", sum(n.state == "serving" for n in nodes), ", ".join(serving))
            self.addresses = serving
            for listener in self._listeners:
                listener(serving)
        elif not serving and not self._none_serving:
            log.warning("fleet: no edge serving; DNS keeps answering with %s", self._shown())
        self._none_serving = not serving

    def _shown(self) -> str:
        return ", ".join(self.addresses) if self.addresses else "the zone file's addresses"

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Beat every `beat` seconds until cancelled; started after the first beat."""
        if not self.addresses_own:
            log.warning(
                "fleet: node %s has no public address (the HTTP listener is a wildcard): set fleet.public_addresses"
                " for the other edges' DNS to name it",
                self.node_id,
            )
        await self.beat_once()
        log.info(
            "fleet: node %s at %s, heartbeat every %g s", self.node_id, ", ".join(self.addresses_own), self.config.beat
        )
        task_status.started()
        try:
            with trio.CancelScope() as self._beating:
                while True:
                    await trio.sleep(self.config.beat)
                    await self.beat_once()
        finally:
            if not self.handed_over:  # else the key is the next generation's now: leave it
                with trio.CancelScope(shield=True), trio.move_on_after(1.0):
                    try:
                        await trio.to_thread.run_sync(self._leave, abandon_on_cancel=True)
                    except CatalogError:
                        pass  # its key expires by itself within ttl

    def hand_over(self) -> None:
        """A reload or an upgrade: the new generation's worker beats for this edge (same node id) from
        now on; this one stops beating and leaves the key where it is (deleting it would drop a
        serving edge from every DNS answer until the next beat)."""
        self.handed_over = True
        if self._beating is not None:
            self._beating.cancel()

    async def drain(self) -> None:
        """Stopping: beat as draining now (DNS everywhere leaves this edge out within a beat), then
        wait fleet.drain_wait seconds before the caller stops accepting."""
        if self.state == "draining":
            return
        self.state = "draining"
        log.info("fleet: node %s draining; it stops accepting in %g s", self.node_id, self.config.drain_wait)
        with trio.move_on_after(max(self.config.beat, 1.0)):
            await self.beat_once()
        await trio.sleep(self.config.drain_wait)

    def health(self) -> dict[str, Any]:
        """For /healthz and /v1/status: this node, its state, the serving addresses, the last failure."""
        return {
            "node": self.node_id,
            "state": self.state,
            "addresses": list(self.addresses_own),
            "serving": list(self.addresses),
            "edges": [{"id": n.id, "state": n.state, "addresses": list(n.addresses)} for n in self.nodes],
            "problem": self.problem,
        }


async def join(config: Config, store: Store, live: LiveCatalog, nursery: trio.Nursery) -> Fleet | None:
    """Join the fleet when the catalog is Redis (lifecycle.serve, in the process that serves DNS):
    beat, and hang the fleet on `live` for the DNS server and the admin API. None with SQLite."""
    if not isinstance(store, RedisStore):
        return None
    fleet = Fleet(config, store)
    live.fleet = fleet
    await nursery.start(fleet.run)
    return fleet


def health_report(live: LiveCatalog) -> tuple[int, dict[str, Any]]:
    """/healthz: (HTTP status, document).

    200 `ok`; 200 `degraded` with the reasons when the catalog cannot be read (the edge serves its
    last snapshot: taking it out of a load balancer would turn a catalog outage into a traffic
    outage) or its heartbeat fails; 503 `draining` once it is stopping (a load balancer then stops
    sending new connections, as DNS does)."""
    reasons = []
    if live.problem is not None:
        reasons.append(f"catalog: {live.problem} (serving the snapshot of {live.stale_seconds():.1f} s ago)")
    fleet: Fleet | None = live.fleet
    if fleet is not None and fleet.problem is not None:
        reasons.append(f"fleet heartbeat: {fleet.problem}")
    doc: dict[str, Any] = {"status": "degraded" if reasons else "ok"}
    if reasons:
        doc["reasons"] = reasons
        doc["catalog_stale_seconds"] = round(live.stale_seconds(), 3)
    if fleet is not None:
        doc["fleet"] = fleet.health()
        if fleet.state == "draining":
            doc["status"] = "draining"
            return 503, doc
    return 200, doc
