"""Deploys that drop nothing (issue 12): reload and upgrade under load, a failing new generation,
listening sockets that are never closed, systemd socket activation.

Each test runs `edge serve` as a real process (the supervisor) with real backends, and the load of
tests/deployload.py: keep-alive and new-connection GETs, SSE streams, WebSocket echo sessions and
100 MiB uploads, every failure recorded.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import trio

from tests import deployload
from tests.backends import Backend
from tests.proc import edge_cli, edge_env, listening

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
    """`edge serve` (the supervisor) as a real process whose output is read all along (a full pipe
    would stall it). `command` replaces `python -m edge serve ...` (a socket-activation wrapper)."""

    def __init__(self, args: list[str], env: dict[str, str], command: list[str] | None = None, **popen) -> None:
        self.env = env
        argv = ["serve", "--dns", "127.0.0.1:0", "--admin", "127.0.0.1:0", *args]
        self.proc = subprocess.Popen(
            command or [sys.executable, "-m", "edge", *argv],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
            **popen,
        )
        self.listening: dict[str, str] = {}
        self.lines: list[str] = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError("edge exited before it was up:\n" + self.output())
            self.lines.append(line)
            if found := listening(line):
                self.listening.setdefault(found[0], found[1])
            if "edge is up" in line:
                break
        else:
            self.stop()
            raise RuntimeError("edge did not come up:\n" + self.output())
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def port(self, kind: str = "http") -> int:
        return int(self.listening[kind].rsplit(":", 1)[1])

    def output(self) -> str:
        return "".join(self.lines)

    def stop(self) -> str:
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if hasattr(self, "_reader"):
            self._reader.join(timeout=5)
        return self.output()

    # -- what the supervisor says ------------------------------------------------------------------------

    async def status(self) -> dict:
        """GET /v1/status; {} while no admin worker answers (between generations, an upgrade's exec)."""
        try:
            async with httpx.AsyncClient(timeout=5) as client:
                res = await client.get(
                    f"http://127.0.0.1:{self.port('admin')}/v1/status", headers={"Authorization": f"Bearer {TOKEN}"}
                )
            return res.json() if res.status_code == 200 else {}
        except (httpx.HTTPError, ValueError):
            return {}

    async def supervisor(self) -> dict:
        with trio.fail_after(20):
            while not (doc := (await self.status()).get("supervisor")):
                await trio.sleep(0.1)
        return doc

    async def cli(self, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        """`edge ARGS --admin <this edge's admin>`, run without blocking the load."""
        return await trio.run_process(
            [sys.executable, "-m", "edge", *args, "--admin", f"127.0.0.1:{self.port('admin')}"],
            env=env or self.env,
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )

    def workers(self) -> set[int]:
        """The supervisor's child processes: its workers, of every generation still alive."""
        return children(self.pid)


def children(pid: int) -> set[int]:
    out = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid and b"resource_tracker" not in cmdline:
            out.add(int(entry))
    return out


async def start_edge(args: list[str], env: dict[str, str], **kw) -> Edge:
    return await trio.to_thread.run_sync(lambda: Edge(args, env, **kw))


@dataclass
class Deploy:
    kind: str  # "reload" or "upgrade"
    via: str  # "signal" or "cli"
    sent: float  # time.monotonic() when the signal or the command went
    served: float  # when the new generation was seen serving
    generation: int


SIGNALS = {"reload": signal.SIGHUP, "upgrade": signal.SIGUSR2}


async def deploy(edge: Edge, kind: str, via: str) -> Deploy:
    """One reload or upgrade, by signal or by the CLI; returns once the new generation serves."""
    before = (await edge.supervisor())["generation"]
    sent, sent_wall = time.monotonic(), time.time()
    if via == "signal":
        os.kill(edge.pid, SIGNALS[kind])
        with trio.fail_after(90):
            while True:
                sup = (await edge.status()).get("supervisor") or {}
                if sup.get("generation", before) > before:
                    break
                last = sup.get("last_deploy") or {}
                assert last.get("ok", True) or last.get("at", 0) < sent_wall - 1, f"{kind} failed: {last}"
                await trio.sleep(0.05)
        generation = sup["generation"]
    else:
        res = await edge.cli(kind)
        assert res.returncode == 0, (res.stdout, res.stderr)
        generation = before + 1
        assert f"generation {generation}" in res.stdout.decode() + res.stderr.decode(), res.stdout
    served = time.monotonic()
    assert generation == before + 1
    return Deploy(kind, via, sent, served, generation)


def write_config(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


# -- listening sockets, from /proc ---------------------------------------------------------------------


def _proc_net(kind: str) -> list[list[str]]:
    rows = []
    for name in (kind, kind + "6"):
        try:
            lines = Path(f"/proc/net/{name}").read_text().splitlines()[1:]
        except OSError:
            continue
        rows += [line.split() for line in lines]
    return rows


def listening_inodes(port: int, kind: str = "tcp") -> set[int]:
    """Inodes of the sockets bound to `port` that listen (tcp, state 0A) or are bound (udp, 07)."""
    state = "0A" if kind == "tcp" else "07"
    return {
        int(row[9])
        for row in _proc_net(kind)
        if int(row[1].rsplit(":", 1)[1], 16) == port and row[3] == state and row[9] != "0"
    }


def socket_inodes(pid: int) -> set[int]:
    """Inodes of the sockets process `pid` holds open."""
    out = set()
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return out
    for fd in fds:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            out.add(int(target[8:-1]))
    return out


def edge_listeners(edge: Edge) -> dict[str, set[int]]:
    """For each listener edge announced (http, dns over tcp and udp, admin): the inodes on its port."""
    return {
        "http": listening_inodes(edge.port("http")),
        "dns/tcp": listening_inodes(edge.port("dns")),
        "dns/udp": listening_inodes(edge.port("dns"), "udp"),
        "admin": listening_inodes(edge.port("admin")),
    }


def listening_tcp_held_by(pids: set[int]) -> set[int]:
    """Inodes of listening TCP sockets any of `pids` holds."""
    held = set().union(*(socket_inodes(p) for p in pids)) if pids else set()
    return {int(row[9]) for row in _proc_net("tcp") if row[3] == "0A" and int(row[9]) in held}


def report_text(report: deployload.Report) -> str:
    return json.dumps(report.summary(), indent=1)


async def test_the_load_harness_sees_nothing_dropped_by_a_steady_edge(sandboxes, tmp_path):
    """Without a deploy, the mixed load runs clean: every kind carries traffic and nothing fails."""
    edge = await start_edge(["--workers", "2", "--http", "127.0.0.1:0", "--no-access-log"], sandboxes.env)
    try:
        mix = deployload.Mix(upload_rate=64 << 20)
        async with deployload.running(sandboxes.target(edge.port()), mix) as load:
            await trio.sleep(5)
        report = load.report
        print(report_text(report))
        assert not report.failures, report_text(report)
        assert report.keepalive_requests > 100 and report.new_connection_requests > 50
        assert report.retries == 0
        assert len(report.sessions) == 6 and all(s.closed_by == "client" for s in report.sessions)
        assert all(s.messages > 20 and s.max_gap < 2.0 for s in report.sessions), report.sessions
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


# -- deploys under load --------------------------------------------------------------------------------

DRAIN = 5.0  # http.drain_timeout in the load test: an upload (2.5 s) in flight at a deploy finishes in it


async def sleep_until(at: float) -> None:
    await trio.sleep(max(0.0, at - time.monotonic()))


def drain_window(d: Deploy, drain: float) -> tuple[float, float]:
    """When the generation a deploy replaced closes its tunnels: its workers start draining after the
    deploy was asked for and by the time it was seen serving, then hold tunnels `drain` seconds."""
    return d.sent + drain - 0.5, d.served + drain + 2.0


def session_problem(s: deployload.Session, deploys: list[Deploy], drain: float, stopped: float) -> str | None:
    """Why `s` did not live as it should, or None. A session belongs to the generation that accepted it:
    the one serving when it opened, or, when it opened during a deploy, either of the two; that
    generation's tunnels are closed by the edge at the drain deadline of the deploy that replaced it."""
    first = next((j for j, d in enumerate(deploys) if d.sent > s.started), None)
    candidates: set[int | None] = {first}
    if first is not None and s.opened > deploys[first].sent:  # accepted during that deploy: maybe the new one's
        candidates.add(first + 1 if first + 1 < len(deploys) else None)
    previous = len(deploys) - 1 if first is None else first - 1
    if previous >= 0 and s.started < deploys[previous].served:  # started during the previous deploy
        candidates.add(previous)
    windows = [drain_window(deploys[j], drain) for j in candidates if j is not None]
    if s.closed_by == "edge":
        if s.how != "eof":
            return f"closed by the edge with a {s.how}"
        if not any(lo <= s.closed <= hi for lo, hi in windows):
            return f"closed at {s.closed:.2f}, outside its drain windows {windows}"
        return None
    if s.closed_by == "client":  # still open when the load stopped: it must not have been due
        if None in candidates or any(stopped < hi for _, hi in windows):
            return None
        return f"still open at the stop ({stopped:.2f}), past its drain windows {windows}"
    return f"closed by the {s.closed_by} ({s.how})"


def wall(monotonic: float) -> str:
    """A time.monotonic() reading as the UTC time of day the edge's log lines carry."""
    at = time.time() - (time.monotonic() - monotonic)
    return time.strftime("%H:%M:%S", time.gmtime(at)) + f".{int(at % 1 * 1000):03d}"


def describe(deploys: list[Deploy], t0: float) -> str:
    return "; ".join(
        f"{d.kind}/{d.via} gen {d.generation} at {d.sent - t0:.1f}+{d.served - d.sent:.1f}s" for d in deploys
    )


@pytest.mark.slow
async def test_ten_upgrades_and_ten_reloads_under_mixed_load_drop_nothing(sandboxes, tmp_path):
    """`edge serve --workers 2` under keep-alive and new-connection GETs, SSE, WebSocket echo and 100 MiB
    uploads: 10 upgrades and 10 reloads in a row (signals and CLI alike) fail no request, refuse and
    reset no connection; every stream and tunnel lives until the drain deadline of the deploy that
    replaced its generation and is then closed by the edge; every upload arrives whole; the supervisor
    keeps its PID, each deploy brings two new workers, and the old ones are gone after their drain."""
    conf = write_config(tmp_path / "edge.toml", f"access_log = false\n[http]\ndrain_timeout = {DRAIN}\n")
    edge = await start_edge(["--workers", "2", "--config", str(conf), "--http", "127.0.0.1:0"], sandboxes.env)
    try:
        assert (await edge.supervisor())["pid"] == edge.pid
        generations = [edge.workers()]
        assert len(generations[0]) == 2
        plan = [("upgrade", "signal"), ("reload", "signal"), ("upgrade", "cli"), ("reload", "cli")] * 5
        deploys: list[Deploy] = []
        mix = deployload.Mix(upload_rate=40 << 20)
        t0 = time.monotonic()
        async with deployload.running(sandboxes.target(edge.port()), mix) as load:
            await trio.sleep(2)
            for kind, via in plan:
                before = edge.workers()
                deploys.append(await deploy(edge, kind, via))
                new = edge.workers() - before
                assert len(new) == 2, (deploys[-1], before, new)
                generations.append(new)
                assert (await edge.supervisor())["pid"] == edge.pid
                await trio.sleep(1.0)  # streams and tunnels open in this generation too
            await trio.sleep(DRAIN + 2.5)  # the last old generation drains and ends
            final = edge.workers()
        report = load.report
        text = report_text(report) + "\ndeploys: " + describe(deploys, t0)
        print(text)
        wrong: list[str] = []  # every check, so one run tells all
        for category in ("failed", "refused", "reset"):
            if failures := report.of(category):
                when = [f"{f.client} at {f.at - t0:.2f}s ({wall(f.at)}): {f.detail}" for f in failures[:5]]
                wrong.append(f"{len(failures)} {category}: {when}")
        for s in report.sessions:
            if problem := session_problem(s, deploys, DRAIN, report.stopped):
                wrong.append(f"{s.kind} started {s.started - t0:.2f}s opened {s.opened - t0:.2f}s: {problem}")
        if len([s for s in report.sessions if s.closed_by == "edge"]) < 20:
            wrong.append("fewer streams and tunnels drained than deploys")
        if max(s.max_gap for s in report.sessions) >= 2.0:
            wrong.append("a stream or tunnel stalled for 2 s or more")  # they flow through every deploy
        if any(u.received != mix.upload_bytes for u in report.uploads):
            wrong.append("an upload arrived short")
        across = [u for u in report.uploads if u.finished and any(u.started < d.sent < u.finished for d in deploys)]
        if len(across) < 5:
            wrong.append(f"only {len(across)} uploads were in flight during a deploy")
        if report.keepalive_requests < 1000 or report.new_connection_requests < 300:
            wrong.append("too little traffic to tell")
        if wrong:  # what the edge said beside the counts: its warnings and errors
            log = [line for line in edge.output().splitlines() if '"level":"info"' not in line.replace(" ", "")]
            text += "\nedge log (not info):\n" + "\n".join(log[-40:])
        assert not wrong, "\n".join(wrong) + "\n" + text
        assert [d.generation for d in deploys] == list(range(2, 22))
        assert edge.proc.poll() is None and (await edge.supervisor())["pid"] == edge.pid
        assert final == generations[-1], (final, generations[-1])  # every old worker drained and ended
        seen: set[int] = set()
        for workers in generations:
            assert not workers & seen  # each generation is new processes
            seen |= workers
    finally:
        edge.stop()


# -- a deploy that fails -------------------------------------------------------------------------------

LIGHT = deployload.Mix(keepalive_paces=(0.02, 0.3), new_connection_clients=1, sse_streams=1, ws_sessions=1, uploads=0)


async def wait_for_workers(edge: Edge, expected: set[int], timeout: float = 10) -> None:
    with trio.move_on_after(timeout):
        while edge.workers() != expected:
            await trio.sleep(0.1)
    assert edge.workers() == expected


@pytest.mark.parametrize(
    "module",
    ["edge/http/server.py", "edge/supervisor.py", "edge/cli.py"],
    ids=["a-worker-module", "the-supervisor-module", "the-command-line"],
)
async def test_a_failing_new_generation_leaves_the_old_one_serving(sandboxes, tmp_path, module):
    """The edge runs from a copy of the package; a module of the copy that raises at import makes
    `edge upgrade` exit 1 with "upgrade failed", while the old workers (the same PIDs) serve every
    request; with the copy restored, the next upgrade brings new workers under the same supervisor."""
    pkg = tmp_path / "pkg"
    where = subprocess.run(  # the package `python -m edge` runs with this environment: the checkout's
        [sys.executable, "-c", "import edge, os; print(os.path.dirname(edge.__file__))"],
        env=sandboxes.env,
        capture_output=True,
        text=True,
        check=True,
    )
    shutil.copytree(where.stdout.strip(), pkg / "edge", ignore=shutil.ignore_patterns("__pycache__"))
    # The copy first on the path, and not the current folder (python -m puts it first otherwise).
    env = dict(sandboxes.env, PYTHONPATH=str(pkg), PYTHONSAFEPATH="1")
    edge = await start_edge(["--workers", "2", "--http", "127.0.0.1:0", "--no-access-log"], env)
    try:
        old = edge.workers()
        async with deployload.running(sandboxes.target(edge.port()), LIGHT) as load:
            await trio.sleep(1)
            broken = pkg / module
            original = broken.read_text()
            broken.write_text('raise RuntimeError("broken on purpose by test_deploys")\n' + original)
            res = await edge.cli("upgrade", env=sandboxes.env)  # the CLI itself is the repository's
            out = res.stdout.decode() + res.stderr.decode()
            assert res.returncode == 1, out
            assert "upgrade failed" in out, out
            sup = await edge.supervisor()
            assert sup["pid"] == edge.pid and sup["generation"] == 1, sup
            assert sup["last_deploy"]["ok"] is False and sup["last_deploy"]["error"], sup
            await wait_for_workers(edge, old)  # the failed generation's workers are gone; the old ones serve
            await trio.sleep(1)
            broken.write_text(original)
            await deploy(edge, "upgrade", "cli")
            new = edge.workers() - old
            assert len(new) == 2
            await trio.sleep(1)
        report = load.report
        print(report_text(report))
        assert not report.failures, report_text(report)
        assert report.keepalive_requests > 50 and report.new_connection_requests > 10, report_text(report)
        # Nothing was closed: the old generation drains for http.drain_timeout (an hour) after the good upgrade.
        assert all(s.closed_by == "client" for s in report.sessions), report_text(report)
        assert edge.proc.poll() is None and (await edge.supervisor())["pid"] == edge.pid
    finally:
        edge.stop()


async def test_a_bad_config_is_refused_on_reload_and_the_old_one_stays(sandboxes, tmp_path):
    """A config with an unknown key, then one that is no TOML: `edge reload` exits 1 with "reload
    refused" and the reason, the same workers serve on. A good config with a new domain and the access
    log on: reloaded, the new domain routes and requests are logged."""
    conf = write_config(tmp_path / "edge.toml", 'access_log = false\ndomains = ["sandbox.localhost"]\n')
    edge = await start_edge(["--workers", "2", "--config", str(conf), "--http", "127.0.0.1:0"], sandboxes.env)
    new_domain = f"{sandboxes.backend.port}-load.deploy.localhost:{edge.port()}"

    async def get(host: str, path: str) -> int:
        async with httpx.AsyncClient(timeout=10) as client:
            res = await client.get(f"http://127.0.0.1:{edge.port()}{path}", headers={"Host": host})
        return res.status_code

    try:
        assert await get(new_domain, "/before") != 200
        old = edge.workers()
        async with deployload.running(sandboxes.target(edge.port()), LIGHT) as load:
            await trio.sleep(1)
            for bad, reason in (
                ("access_log = false\n[http]\ndrain_timout = 5.0\n", "drain_timout"),
                ('access_log = "no\n', "edge.toml"),
            ):
                conf.write_text(bad)
                res = await edge.cli("reload")
                out = res.stdout.decode() + res.stderr.decode()
                assert res.returncode == 1, out
                assert "reload refused" in out and reason in out, out
                sup = await edge.supervisor()
                assert sup["generation"] == 1 and sup["last_deploy"]["ok"] is False, sup
                assert reason in sup["last_deploy"]["error"], sup
                assert edge.workers() == old
                await trio.sleep(0.5)
            conf.write_text('access_log = true\ndomains = ["sandbox.localhost", "deploy.localhost"]\n')
            d = await deploy(edge, "reload", "cli")
            assert d.generation == 2
            assert await get(new_domain, "/after-the-reload") == 200
            with trio.fail_after(5):
                while "/after-the-reload" not in edge.output():
                    await trio.sleep(0.1)
        report = load.report
        assert not report.failures, report_text(report)
        assert report.keepalive_requests > 50, report_text(report)
        assert "/before" not in edge.output()  # the access log was off in generation 1
    finally:
        edge.stop()


# -- one tunnel, precisely -------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["reload", "upgrade"])
async def test_a_tunnel_outlives_the_deploy_until_drain_timeout(sandboxes, tmp_path, kind):
    """With http.drain_timeout = 4 and one worker: a WebSocket session and an SSE stream opened before
    a deploy still carry messages at 3 s after it, are closed by the edge (a clean end of stream) by
    6 s; `edge status` counts them as draining meanwhile; sessions opened after the deploy live on."""
    drain = 4.0
    conf = write_config(tmp_path / "edge.toml", f"access_log = false\n[http]\ndrain_timeout = {drain}\n")
    edge = await start_edge(["--config", str(conf), "--http", "127.0.0.1:0"], sandboxes.env)
    mix = deployload.Mix(keepalive_paces=(), new_connection_clients=0, sse_streams=1, ws_sessions=1, uploads=0)
    try:
        async with deployload.running(sandboxes.target(edge.port()), mix) as load:
            await trio.sleep(1)
            first = list(load.report.sessions)
            assert sorted(s.kind for s in first) == ["sse", "ws"]
            d = await deploy(edge, kind, "cli")
            with trio.fail_after(max(0.5, d.sent + drain - 0.5 - time.monotonic())):  # seen while they drain
                while (await edge.supervisor()).get("draining_connections", 0) < 2:
                    await trio.sleep(0.2)  # workers report their counts every second
            status = await edge.cli("status")
            assert status.returncode == 0, status.stderr
            text = status.stdout.decode()
            assert re.search(r"generation\W+2\b", text), text
            draining = [line for line in text.splitlines() if "draining" in line]
            assert draining and any(int(n) >= 2 for n in re.findall(r"\d+", draining[0])), text
            await sleep_until(d.sent + drain - 1)
            for s in first:
                assert s.closed is None, s
                assert time.monotonic() - s.last < 1.5, s  # still moving, not just open
            await sleep_until(d.served + drain + 2)
            for s in first:
                assert s.closed_by == "edge" and s.how == "eof", s
                assert d.sent + drain - 0.5 <= s.closed, s
            later = [s for s in load.report.sessions if s.started > d.served]
            assert len(later) == 2 and all(s.closed is None for s in later), load.report.sessions
            with trio.fail_after(3):
                while (await edge.supervisor()).get("draining_connections", 0) != 0:
                    await trio.sleep(0.2)
        assert not load.report.failures, report_text(load.report)
    finally:
        edge.stop()


# -- listening sockets -----------------------------------------------------------------------------------


async def test_listening_sockets_are_never_closed_across_deploys(sandboxes, tmp_path):
    """Every listener (HTTP as one SO_REUSEPORT share per worker; DNS over UDP and TCP, admin as one
    socket) is held by the supervisor, and its inodes stay the same through upgrades and reloads:
    sampled every 10 ms, the HTTP port always has exactly those listening sockets."""
    edge = await start_edge(["--workers", "2", "--http", "127.0.0.1:0", "--no-access-log"], sandboxes.env)
    try:
        before = edge_listeners(edge)
        assert len(before["http"]) == 2, before  # a share per worker
        assert all(len(inodes) == 1 for kind, inodes in before.items() if kind != "http"), before
        held = socket_inodes(edge.pid)
        assert all(inodes <= held for inodes in before.values()), (before, held)
        samples: list[set[int]] = []

        async def watch() -> None:
            while True:
                samples.append(listening_inodes(edge.port()))
                await trio.sleep(0.01)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(watch)
            for kind, via in (("upgrade", "signal"), ("reload", "cli"), ("upgrade", "cli"), ("reload", "signal")):
                old = edge.workers()
                await deploy(edge, kind, via)
                assert edge_listeners(edge) == before, kind
                assert edge.workers() - old, "no new workers"
            nursery.cancel_scope.cancel()
        assert len(samples) > 50
        assert all(s == before["http"] for s in samples), [s for s in samples if s != before["http"]][:5]
        assert socket_inodes(edge.pid) >= set().union(*before.values())
    finally:
        edge.stop()


async def test_systemd_socket_activation_serves_on_the_passed_socket(sandboxes, tmp_path):
    """LISTEN_FDS=1, LISTEN_FDNAMES=http, the socket as descriptor 3: the edge serves HTTP on it and
    listens on no other HTTP socket, also after an upgrade."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    port = sock.getsockname()[1]
    passed = os.fstat(sock.fileno()).st_ino
    # systemd's way: descriptors from 3 on, LISTEN_PID the pid of the program (the shell execs it)
    script = 'exec 3<&0 0</dev/null; export LISTEN_PID=$$ LISTEN_FDS=1 LISTEN_FDNAMES=http; exec "$0" -m edge "$@"'
    argv = ["serve", "--workers", "2", "--dns", "127.0.0.1:0", "--admin", "127.0.0.1:0", "--no-access-log"]
    try:
        edge = await start_edge([], sandboxes.env, command=["sh", "-c", script, sys.executable, *argv], stdin=sock)
    finally:
        sock.close()  # the edge holds it now; were it not serving it, connections would queue unanswered
    try:
        assert edge.port() == port, edge.listening
        host = f"{sandboxes.backend.port}-load.sandbox.localhost:{port}"

        async def served() -> None:
            async with httpx.AsyncClient(timeout=10) as client:
                for i in range(10):
                    res = await client.get(f"http://127.0.0.1:{port}/activated/{i}", headers={"Host": host})
                    assert res.status_code == 200

        await served()
        others = {listening_inodes(edge.port("dns")).pop(), listening_inodes(edge.port("admin")).pop()}
        pids = {edge.pid} | edge.workers()
        assert listening_tcp_held_by(pids) == {passed} | others
        old = edge.workers()
        await deploy(edge, "upgrade", "signal")
        assert edge.workers() - old
        await served()
        assert listening_inodes(port) == {passed}
        assert listening_tcp_held_by({edge.pid} | edge.workers()) == {passed} | others
    finally:
        edge.stop()


async def test_a_connection_accepted_before_a_deploy_gets_its_first_request_answered(sandboxes, tmp_path):
    """A new connection the old generation accepted, whose request comes only after that generation
    began to drain, is answered (then closed), not dropped: its client reused nothing, so it may not
    retry (RFC 9112 section 9.3.1 is about reused connections). Only idle keep-alive connections close."""
    edge = await start_edge(["--http", "127.0.0.1:0", "--no-access-log"], sandboxes.env)
    try:
        target = sandboxes.target(edge.port())
        fresh = deployload.Client(await deployload.connect(target))
        await trio.sleep(0.5)  # accepted by generation 1's worker
        await deploy(edge, "reload", "cli")
        await trio.sleep(1)  # generation 1 drains
        with trio.fail_after(10):
            await fresh.send(
                deployload.h11.Request(method="GET", target="/first", headers=[("host", target.http_host)]),
                deployload.h11.EndOfMessage(),
            )
            head, _ = await fresh.response()
        assert head.status_code == 200
        await fresh.aclose()
    finally:
        edge.stop()
