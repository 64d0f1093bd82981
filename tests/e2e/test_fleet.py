"""Several edges, one catalog: a real redis-server and three `edge serve` processes on 127.0.0.11,
.12 and .13 (each its own state folder, admin token and listeners), the way a fleet runs.

Fleet timings are shortened for the tests (beat 0.2 s, heartbeat expiry 1 s, DNS TTL 1 s, drain
wait 0.5 s); the behaviour is the same at the defaults.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import dns.message
import dns.query
import httpx
import pytest
import trio

from tests.backends import Backend
from tests.proc import EdgeProcess, edge_cli, edge_env
from tests.redis_server import RedisServer, have_redis_server

pytestmark = pytest.mark.skipif(not have_redis_server(), reason="redis-server is not installed (make test installs it)")

ADDRESSES = ("127.0.0.11", "127.0.0.12", "127.0.0.13")
FLEET = """\
[fleet]
beat = 0.2
ttl = 1.0
dns_ttl = 1
drain_wait = 0.5
"""
BEAT, TTL = 0.2, 1.0


class Edge:
    """One `edge serve` of the fleet: its address, ports, admin token, and its output read on a thread."""

    def __init__(self, address: str, redis_url: str, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "fleet.toml").write_text(FLEET)
        self.address = address
        self.env = edge_env(folder, EDGE_ADMIN_TOKEN=f"token-{address}")
        self.token = f"token-{address}"
        args = ["serve", "--config", str(folder / "fleet.toml"), "--catalog", redis_url, "--log-format", "text"]
        args += ["--http", f"{address}:0", "--dns", f"{address}:0", "--admin", f"{address}:0", "--no-access-log"]
        self.proc = EdgeProcess(args, self.env)
        self.http, self.dns, self.admin = (self.proc.port(kind) for kind in ("http", "dns", "admin"))
        # Keep reading its output, so a full pipe never stalls it.
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.proc.stdout:
            self.proc.lines.append(line)

    def output(self) -> str:
        return "".join(self.proc.lines)

    def pids(self) -> list[int]:
        """The supervisor and its workers (the heartbeat runs in worker 0)."""
        pid = self.proc.pid
        kids = []
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    stat = Path(f"/proc/{entry}/stat").read_text()
                except OSError:
                    continue
                if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                    kids.append(int(entry))
        return [pid, *kids]

    def signal_all(self, signum: int) -> None:
        for pid in self.pids():
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                pass

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=f"http://{self.address}:{self.admin}", headers={"Authorization": f"Bearer {self.token}"}
        )

    def stop(self) -> str:
        self.signal_all(signal.SIGCONT)
        return self.proc.stop()


async def get_status(edge: Edge, host: str, headers: dict[str, str] | None = None) -> int:
    """One GET through `edge` with Host `host`: the status code (0 if the connection failed)."""
    head = f"GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items()) + "\r\n"
    try:
        with trio.fail_after(2):
            stream = await trio.open_tcp_stream(edge.address, edge.http)
            async with stream:
                await stream.send_all(head.encode())
                data = b""
                while b"\r\n" not in data:
                    chunk = await stream.receive_some(4096)
                    if not chunk:
                        return 0
                    data += chunk
        return int(data.split(b" ", 2)[1])
    except (OSError, trio.TooSlowError):
        return 0


def dns_a(edge: Edge, name: str = "3000-anything.sandbox.localhost") -> list[str]:
    reply = dns.query.udp(dns.message.make_query(name, "A"), edge.address, port=edge.dns, timeout=1)
    return sorted(rd.to_text() for rrset in reply.answer for rd in rrset)


@pytest.fixture
async def fleet(tmp_path, nursery):
    redis = RedisServer(tmp_path / "redis").start()
    backend = await Backend("fleet").start(nursery, "127.0.0.2")
    edges: list[Edge] = []
    try:
        for i, address in enumerate(ADDRESSES):
            edges.append(await trio.to_thread.run_sync(Edge, address, redis.url, tmp_path / f"edge{i}"))
        # Every edge's DNS names all three once each has read the others' first beats.
        with trio.fail_after(5):
            while not all(dns_a(e) == list(ADDRESSES) for e in edges):
                await trio.sleep(0.05)
        yield redis, backend, edges
    finally:
        for edge in edges:
            await trio.to_thread.run_sync(edge.stop)
        redis.kill()


async def _put(edge: Edge, sandbox_id: str, doc: dict) -> httpx.Response:
    async with edge.client() as c:
        return await c.put(f"/v1/sandboxes/{sandbox_id}", json=doc)


async def test_a_sandbox_added_through_one_edge_is_routed_by_all_three_within_100ms(fleet):
    """PUT on edge 1's admin API; from its answer, every edge routes the sandbox within 100 ms."""
    redis, backend, edges = fleet
    host = f"{backend.port}-fresh.sandbox.localhost"
    assert [await get_status(e, host) for e in edges] == [502, 502, 502]
    r = await _put(edges[0], "fresh", {"address": "127.0.0.2"})
    answered = trio.current_time()
    assert r.status_code == 200
    took = {}
    with trio.fail_after(2):
        while len(took) < 3:
            for edge in edges:
                if edge.address not in took and await get_status(edge, host) == 200:
                    took[edge.address] = trio.current_time() - answered
    assert max(took.values()) < 0.1, took


async def test_a_token_rotated_on_one_edge_is_refused_by_all_within_a_second(fleet):
    """Rotate on edge 2: the old token gets 403 on all three within a second, the new one 200."""
    redis, backend, edges = fleet
    r = await _put(edges[0], "private", {"address": "127.0.0.2", "public": False})
    old = r.json()["traffic_access_token"]
    host = f"{backend.port}-private.sandbox.localhost"
    with trio.fail_after(1):
        while [await get_status(e, host, {"X-Edge-Access-Token": old}) for e in edges] != [200] * 3:
            await trio.sleep(0.01)
    async with edges[1].client() as c:
        r = await c.post("/v1/sandboxes/private/token")
    rotated = trio.current_time()
    new = r.json()["traffic_access_token"]
    with trio.fail_after(1):
        while [await get_status(e, host, {"X-Edge-Access-Token": old}) for e in edges] != [403] * 3:
            await trio.sleep(0.01)
    assert trio.current_time() - rotated < 1.0
    assert [await get_status(e, host, {"X-Edge-Access-Token": new}) for e in edges] == [200] * 3


async def test_redis_away_every_edge_serves_what_it_knew_then_converges_when_it_is_back(fleet, tmp_path):
    """Redis killed: known sandboxes still routed everywhere, /healthz degraded, writes refused clearly
    (API 503, CLI one line); restarted empty: every edge serves the empty catalog, then the refill."""
    redis, backend, edges = fleet
    await _put(edges[0], "known", {"address": "127.0.0.2"})
    host = f"{backend.port}-known.sandbox.localhost"
    with trio.fail_after(1):
        while [await get_status(e, host) for e in edges] != [200] * 3:
            await trio.sleep(0.01)
    redis.kill()
    for edge in edges:
        with trio.fail_after(5):
            while True:
                async with edge.client() as c:
                    health = await c.get("/healthz")
                if health.json()["status"] == "degraded":
                    break
                await trio.sleep(0.05)
        assert health.status_code == 200 and "catalog" in health.json()["reasons"][0]
    await trio.sleep(0.5)
    assert [await get_status(e, host) for e in edges] == [200] * 3  # served from the snapshot
    r = await _put(edges[2], "during", {"address": "127.0.0.2"})
    assert r.status_code == 503 and r.json()["code"] == "catalog_unavailable" and "unreachable" in r.json()["message"]
    cli = await trio.to_thread.run_sync(
        lambda: edge_cli(["sandbox", "add", "during", "--address", "127.0.0.2", "--catalog", redis.url], edges[0].env)
    )
    assert cli.returncode == 1 and "Redis is unreachable" in cli.stderr and len(cli.stderr.splitlines()) == 1
    async with edges[0].client() as c:
        metrics = (await c.get("/metrics")).text
    stale = next(line for line in metrics.splitlines() if line.startswith("edge_catalog_stale_seconds"))
    assert float(stale.split()[1]) > 0.3

    redis.start()  # same port, no data: the edges converge on the empty catalog
    with trio.fail_after(5):
        while [await get_status(e, host) for e in edges] != [502] * 3:
            await trio.sleep(0.05)
    await _put(edges[1], "known", {"address": "127.0.0.2"})  # refilled
    with trio.fail_after(1):
        while [await get_status(e, host) for e in edges] != [200] * 3:
            await trio.sleep(0.01)
    for edge in edges:
        async with edge.client() as c:
            assert (await c.get("/healthz")).json()["status"] == "ok"


async def test_an_edge_whose_heartbeat_stops_leaves_the_dns_answers_within_ttl_and_a_beat(fleet):
    """SIGSTOP edge 3 (all its processes): edges 1 and 2 stop naming it within ttl + a beat; SIGCONT: back."""
    redis, backend, edges = fleet
    edges[2].signal_all(signal.SIGSTOP)
    stopped = time.monotonic()
    try:
        with trio.fail_after(5):
            while any("127.0.0.13" in dns_a(e) for e in edges[:2]):
                await trio.sleep(0.02)
        left = time.monotonic() - stopped
        # its key expires TTL after its last beat (at most a beat before the stop), read within a beat
        assert left < TTL + BEAT + 0.3, left
        assert dns_a(edges[0]) == ["127.0.0.11", "127.0.0.12"]
    finally:
        edges[2].signal_all(signal.SIGCONT)
    with trio.fail_after(5):
        while dns_a(edges[0]) != list(ADDRESSES):
            await trio.sleep(0.05)


async def test_a_stopping_edge_leaves_the_dns_answers_before_it_stops_accepting(fleet):
    """SIGTERM edge 2: the others' DNS drops it while it still answers HTTP (it drains first)."""
    redis, backend, edges = fleet
    await _put(edges[0], "drain", {"address": "127.0.0.2"})
    host = f"{backend.port}-drain.sandbox.localhost"
    with trio.fail_after(1):
        while await get_status(edges[1], host) != 200:
            await trio.sleep(0.01)
    os.kill(edges[1].proc.pid, signal.SIGTERM)
    with trio.fail_after(2):
        while "127.0.0.12" in dns_a(edges[0]) + dns_a(edges[2]):
            await trio.sleep(0.02)
    assert await get_status(edges[1], host) == 200  # dropped from DNS, still accepting
    assert dns_a(edges[0]) == dns_a(edges[2]) == ["127.0.0.11", "127.0.0.13"]
    async with edges[0].client() as c:
        assert {n["id"] for n in (await c.get("/healthz")).json()["fleet"]["edges"]} >= {f"{os.uname()[1]}-127.0.0.11"}
