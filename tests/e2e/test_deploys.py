"""Deploys that drop nothing (issue 12): reload and upgrade under load, a failing new generation,
listening sockets that are never closed, systemd socket activation.

Each test runs `edge serve` as a real process (the supervisor) with real backends, and the load of
tests/deployload.py: keep-alive and new-connection GETs, SSE streams, WebSocket echo sessions and
100 MiB uploads, every failure recorded.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

import pytest
import trio

from tests import deployload
from tests.backends import Backend
from tests.proc import EdgeProcess, edge_cli, edge_env

REPO = Path(__file__).resolve().parents[2]
TOKEN = "deploy-test-token"


@dataclass
class Sandboxes:
    """The backend (GETs, SSE, uploads) as sandbox `load`, the WebSocket echo server as `ws`."""

    backend: Backend
    ws_port: int
    env: dict[str, str]

    def target(self, edge_port: int) -> deployload.Target:
        return deployload.Target(
            edge_port,
            f"{self.backend.port}-load.sandbox.localhost:{edge_port}",
            f"{self.ws_port}-ws.sandbox.localhost:{edge_port}",
        )


@pytest.fixture
async def sandboxes(nursery, tmp_path):
    backend = await Backend("deploy").start(nursery, "127.0.0.2")
    ws = subprocess.Popen(
        [sys.executable, "-m", "tests.ws_echo", "127.0.0.3"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,  # a tunnel the edge cuts is a traceback there: expected here
        text=True,
    )
    try:
        ws_port = int(ws.stdout.readline())
        env = edge_env(tmp_path, EDGE_ADMIN_TOKEN=TOKEN)
        for sandbox, address in (("load", "127.0.0.2"), ("ws", "127.0.0.3")):
            res = edge_cli(["sandbox", "add", sandbox, "--address", address, "--no-wait"], env)
            assert res.returncode == 0, res.stderr
        yield Sandboxes(backend, ws_port, env)
    finally:
        ws.terminate()
        ws.wait(timeout=10)


class Edge:
    """`edge serve` as a real process whose output is read all along (a full pipe would stall it)."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.env = env
        self.process = EdgeProcess(["serve", "--dns", "127.0.0.1:0", "--admin", "127.0.0.1:0", *args], env, timeout=60)
        self.lines = list(self.process.lines)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.process.proc.stdout:
            self.lines.append(line)

    @property
    def pid(self) -> int:
        return self.process.pid

    def port(self, kind: str = "http") -> int:
        return self.process.port(kind)

    def output(self) -> str:
        return "".join(self.lines)

    def stop(self) -> str:
        proc = self.process.proc
        if proc.poll() is None:
            proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        self._reader.join(timeout=5)
        return self.output()


async def start_edge(args: list[str], env: dict[str, str]) -> Edge:
    return await trio.to_thread.run_sync(lambda: Edge(args, env))


def report_text(report: deployload.Report) -> str:
    import json

    return json.dumps(report.summary(), indent=1)


async def test_the_load_harness_sees_nothing_dropped_by_a_steady_edge(sandboxes, tmp_path):
    """Without a deploy, the mixed load runs clean: every kind carries traffic and nothing fails."""
    edge = await start_edge(["--workers", "2", "--http", "127.0.0.1:0", "--no-access-log"], sandboxes.env)
    try:
        mix = deployload.Mix(upload_rate=64 << 20)
        async with deployload.running(sandboxes.target(edge.port()), mix) as load:
            await trio.sleep(8)
        report = load.report
        print(report_text(report))
        assert not report.failures, report_text(report)
        assert report.keepalive_requests > 100 and report.new_connection_requests > 50
        assert report.retries == 0
        assert len(report.sessions) == 6 and all(s.closed_by == "client" for s in report.sessions)
        assert all(s.messages > 50 and s.max_gap < 1.0 for s in report.sessions), report.sessions
        assert report.uploads and all(u.received == mix.upload_bytes for u in report.uploads)
    finally:
        edge.stop()


async def test_the_load_harness_counts_what_a_restart_drops(sandboxes, tmp_path):
    """The harness is not blind: a stop and a start on the same port (what a deploy without this feature
    is) shows up as refused connections and as streams and tunnels closed by the edge."""
    edge = await start_edge(["--http", "127.0.0.1:0", "--no-access-log"], sandboxes.env)
    port = edge.port()
    try:
        async with deployload.running(sandboxes.target(port)) as load:
            await trio.sleep(2)
            await trio.to_thread.run_sync(edge.stop)
            await trio.sleep(0.5)
            edge = await start_edge(["--http", f"127.0.0.1:{port}", "--no-access-log"], sandboxes.env)
            await trio.sleep(2)
        report = load.report
        print(report_text(report))
        assert report.refused, report_text(report)
        assert [s for s in report.sessions if s.closed_by == "edge"], report_text(report)
        assert any(f.client == "upload" for f in report.failures), report_text(report)
        assert max(f.at for f in report.failures) < report.stopped - 1  # and then it served again
    finally:
        edge.stop()
