"""`edge serve --workers N`: several processes on one HTTP port, one catalog, one /metrics."""

from __future__ import annotations

import os
import signal
import time

import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families

from tests.backends import Backend
from tests.conftest import curl
from tests.proc import EdgeProcess, edge_cli, edge_env


def _cmdline(pid: int) -> str:
    try:
        return open(f"/proc/{pid}/cmdline").read().replace("\0", " ")
    except OSError:
        return ""


def _workers(pid: int) -> list[int]:
    """Worker processes of the supervisor (`python -m edge serve ...` processes whose parent is `pid`)."""
    kids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = open(f"/proc/{entry}/stat").read()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == pid and "edge" in _cmdline(int(entry)):
            kids.append(int(entry))
    return kids


@pytest.fixture
async def workers(tmp_path, nursery):
    env = edge_env(tmp_path, EDGE_ADMIN_TOKEN="admin-test-token")
    backend = await Backend("w").start(nursery, "127.0.0.2")
    edge_cli(["sandbox", "add", "multi", "--address", "127.0.0.2"], env)
    proc = await trio.to_thread.run_sync(
        lambda: EdgeProcess(
            [
                "serve",
                "--workers",
                "2",
                "--http",
                "127.0.0.1:0",
                "--dns",
                "127.0.0.1:0",
                "--admin",
                "127.0.0.1:0",
                "--no-access-log",
            ],
            env,
            timeout=60,
        )
    )
    yield proc, backend
    proc.stop()


async def test_two_workers_share_the_port_and_both_serve(workers):
    """Connections spread over both workers: each opens its own pooled upstream connection."""
    proc, backend = workers
    assert len(_workers(proc.pid)) == 2
    url = f"http://{backend.port}-multi.sandbox.localhost:{proc.port()}/echo"
    for _ in range(24):
        res = await curl("-o", "/dev/null", "-w", "%{http_code}", url)
        assert res.stdout == b"200"
    # One upstream connection per worker that served (each worker pools its own): both did.
    assert backend.connections == 2


async def test_metrics_add_up_across_workers(workers):
    """The supervisor's /metrics counts the requests every worker served."""
    proc, backend = workers
    url = f"http://{backend.port}-multi.sandbox.localhost:{proc.port()}/echo"
    for _ in range(10):
        await curl(url)
    await trio.sleep(1.5)  # workers hand their counters over every second
    res = await curl("-H", "Authorization: Bearer admin-test-token", f"http://127.0.0.1:{proc.port('admin')}/metrics")
    total = 0
    for fam in text_string_to_metric_families(res.stdout.decode()):
        for s in fam.samples:
            if s.name == "edge_sandbox_requests_total" and s.labels.get("sandbox") == "multi":
                total += s.value
    assert total == 10


async def test_a_worker_that_dies_is_started_again(workers):
    """Killing a worker: within a few seconds there are two again, and the port keeps answering."""
    proc, backend = workers
    victim = _workers(proc.pid)[0]
    os.kill(victim, signal.SIGKILL)
    with trio.fail_after(10):
        while True:
            now = _workers(proc.pid)
            if len(now) == 2 and victim not in now:
                break
            await trio.sleep(0.2)
    res = await curl(f"http://{backend.port}-multi.sandbox.localhost:{proc.port()}/echo")
    assert b'"backend": "w"' in res.stdout


async def test_sigterm_stops_the_supervisor_and_every_worker(workers):
    """No worker outlives its supervisor."""
    proc, _ = workers
    kids = _workers(proc.pid)
    proc.proc.send_signal(signal.SIGTERM)
    assert await trio.to_thread.run_sync(lambda: proc.proc.wait(timeout=15)) == 0
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(os.path.exists(f"/proc/{k}") and "edge" in _cmdline(k) for k in kids):
        await trio.sleep(0.1)
    assert not any(os.path.exists(f"/proc/{k}") and "edge" in _cmdline(k) for k in kids)


async def test_removing_a_sandbox_cuts_its_tunnels_in_every_worker(tmp_path, nursery):
    """Eight tunnels spread over two workers: `edge sandbox rm` closes every one within about a second."""
    from tests.scripted import Scripted

    env = edge_env(tmp_path)
    sandbox = await Scripted().start(nursery)
    sandbox.scripts = [
        [b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\nConnection: upgrade\r\n\r\n", 60.0] for _ in range(8)
    ]
    edge_cli(["sandbox", "add", "tun", "--address", "127.0.0.4"], env)
    proc = await trio.to_thread.run_sync(
        lambda: EdgeProcess(
            ["serve", "--workers", "2", "--http", "127.0.0.1:0", "--dns", "127.0.0.1:0", "--no-access-log"],
            env,
            timeout=60,
        )
    )
    try:
        streams = []
        for _ in range(8):
            stream = await trio.open_tcp_stream("127.0.0.1", proc.port())
            await stream.send_all(
                f"GET / HTTP/1.1\r\nHost: {sandbox.port}-tun.sandbox.localhost\r\n"
                "Connection: upgrade\r\nUpgrade: echo\r\n\r\n".encode()
            )
            with trio.fail_after(5):
                assert (await stream.receive_some(1024)).startswith(b"HTTP/1.1 101")
            streams.append(stream)
        assert edge_cli(["sandbox", "rm", "tun"], env).returncode == 0
        t0 = time.monotonic()
        with trio.fail_after(3):
            for stream in streams:
                try:
                    while await stream.receive_some(1024):
                        pass
                except trio.BrokenResourceError:
                    pass
        assert time.monotonic() - t0 < 1.5  # catalog_poll (0.25 s) + the cut
    finally:
        proc.stop()


async def test_workers_serve_https_on_one_shared_port(tmp_path, nursery):
    """--workers 2 with --https: both workers take TLS connections on the one port the supervisor reserved."""
    from tests.tlsutil import TestCA

    ca = TestCA(tmp_path)
    cert, key = ca.issue(["*.sandbox.localhost"], "w")
    conf = tmp_path / "edge.toml"
    conf.write_text(f'[https]\ncerts = [{{cert = "{cert}", key = "{key}"}}]\n')
    env = edge_env(tmp_path)
    backend = await Backend("w").start(nursery, "127.0.0.2")
    edge_cli(["sandbox", "add", "multi", "--address", "127.0.0.2"], env)
    proc = await trio.to_thread.run_sync(
        lambda: EdgeProcess(
            [
                "serve",
                "--config",
                str(conf),
                "--workers",
                "2",
                "--http",
                "127.0.0.1:0",
                "--https",
                "127.0.0.1:0",
                "--dns",
                "127.0.0.1:0",
                "--no-access-log",
            ],
            env,
            timeout=60,
        )
    )
    try:
        port = proc.port("https")
        host = f"{backend.port}-multi.sandbox.localhost"
        for _ in range(6):
            res = await curl(
                "--cacert", str(ca.path), "--resolve", f"{host}:{port}:127.0.0.1", f"https://{host}:{port}/echo"
            )
            assert b'"backend": "w"' in res.stdout
        assert len(_workers(proc.pid)) == 2
    finally:
        proc.stop()


def _requests_total(admin_port: int) -> float:
    import urllib.request

    request = urllib.request.Request(
        f"http://127.0.0.1:{admin_port}/metrics", headers={"Authorization": "Bearer admin-test-token"}
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        text = response.read().decode()
    return sum(
        s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
        if s.name == "edge_http_requests_total"
    )


async def test_counters_never_go_back_when_workers_restart(workers):
    """Both workers killed and started again: edge_http_requests_total keeps what they had counted
    (Prometheus reads a counter that goes down as a reset)."""
    proc, backend = workers
    url = f"http://{backend.port}-multi.sandbox.localhost:{proc.port()}/echo"
    for _ in range(12):
        await curl(url)
    await trio.sleep(1.5)  # workers hand their counters over every second
    before = await trio.to_thread.run_sync(_requests_total, proc.port("admin"))
    assert before >= 12
    victims = _workers(proc.pid)
    for pid in victims:
        os.kill(pid, signal.SIGKILL)
    with trio.fail_after(15):
        while len(now := _workers(proc.pid)) != 2 or set(now) & set(victims):
            await trio.sleep(0.2)
    await trio.sleep(1.5)  # the new workers' first snapshots are in
    assert await trio.to_thread.run_sync(_requests_total, proc.port("admin")) >= before
    await curl(url)
    await trio.sleep(1.5)
    assert await trio.to_thread.run_sync(_requests_total, proc.port("admin")) >= before + 1


async def test_an_admin_write_is_served_by_every_worker_when_it_is_answered(tmp_path, nursery):
    """With --workers 2 and catalog_poll 1 s, a PUT's answer waits until both workers serve the sandbox:
    requests right after it, on fresh connections (either worker), all get it; so does `edge sandbox add`."""
    import httpx

    conf = tmp_path / "edge.toml"
    conf.write_text("catalog_poll = 1.0\n")
    env = edge_env(tmp_path, EDGE_ADMIN_TOKEN="admin-test-token")
    backend = await Backend("w").start(nursery, "127.0.0.2")
    proc = await trio.to_thread.run_sync(
        lambda: EdgeProcess(
            [
                "serve",
                "--config",
                str(conf),
                "--workers",
                "2",
                "--http",
                "127.0.0.1:0",
                "--dns",
                "127.0.0.1:0",
                "--no-access-log",
            ],
            env,
            timeout=60,
        )
    )
    admin = f"127.0.0.1:{proc.port('admin')}"
    try:
        async with httpx.AsyncClient(
            base_url=f"http://{admin}", headers={"Authorization": "Bearer admin-test-token"}
        ) as c:
            for i in range(3):
                assert (await c.put(f"/v1/sandboxes/p{i}", json={"address": "127.0.0.2"})).status_code == 200
                for _ in range(6):
                    res = await curl(
                        "-o",
                        "/dev/null",
                        "-w",
                        "%{http_code}",
                        f"http://{backend.port}-p{i}.sandbox.localhost:{proc.port()}/echo",
                    )
                    assert res.stdout == b"200", i
        res = await trio.to_thread.run_sync(
            edge_cli, ["sandbox", "add", "cli", "--address", "127.0.0.2", "--admin", admin], env
        )
        assert res.returncode == 0 and res.stderr == "", res.stderr
        for _ in range(6):
            res = await curl(
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                f"http://{backend.port}-cli.sandbox.localhost:{proc.port()}/echo",
            )
            assert res.stdout == b"200"
    finally:
        proc.stop()
