"""`edge serve` as a supervisor (edge/supervisor.py): what systemd hears, what `edge status` shows."""

from __future__ import annotations

import os
import signal
import socket
import time

import trio

from tests.proc import EdgeProcess, edge_cli, edge_env, workers_of
from tests.scripted import Scripted


def _notes(sock: socket.socket, until: str, timeout: float = 30.0) -> list[str]:
    """The sd_notify datagrams received, up to and including one containing `until`."""
    got: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sock.settimeout(max(0.1, deadline - time.monotonic()))
        try:
            got.append(sock.recv(4096).decode())
        except TimeoutError:
            break
        if until in got[-1]:
            return got
    raise AssertionError(f"no {until!r} from the supervisor; got {got}")


def test_systemd_hears_ready_then_reloading_and_ready_then_stopping(tmp_path):
    """Type=notify: READY=1 with the supervisor's PID once generation 1 serves; RELOADING=1 then
    READY=1 around a reload; STOPPING=1 on SIGTERM. Workers never speak to systemd."""
    path = str(tmp_path / "notify")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(path)
    env = edge_env(tmp_path, NOTIFY_SOCKET=path)
    proc = EdgeProcess(["serve", "--http", "127.0.0.1:0", "--dns", "127.0.0.1:0", "--no-access-log"], env, timeout=60)
    try:
        ready = _notes(listener, "READY=1")
        assert f"MAINPID={proc.pid}" in ready[-1] and "generation 1 serving" in ready[-1]
        os.kill(proc.pid, signal.SIGHUP)
        reload = _notes(listener, "READY=1")
        assert reload[0].startswith("RELOADING=1") and "MONOTONIC_USEC=" in reload[0]
        assert "generation 2 serving" in reload[-1]
        proc.proc.send_signal(signal.SIGTERM)
        assert "STOPPING=1" in _notes(listener, "STOPPING=1")[-1]
        assert proc.proc.wait(timeout=20) == 0
    finally:
        proc.stop()
        listener.close()


async def test_status_shows_the_generation_and_the_old_one_draining_its_tunnel(tmp_path, nursery):
    """A tunnel open through generation 1, then a reload: `edge status` says generation 2 serves and
    generation 1 still drains one connection; at http.drain_timeout the tunnel is closed and the
    old generation is gone."""
    sandbox = await Scripted().start(nursery)
    sandbox.scripts = [[b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\nConnection: upgrade\r\n\r\n", 60.0]]
    conf = tmp_path / "edge.toml"
    conf.write_text("[http]\ndrain_timeout = 3.0\nshutdown_grace = 6.0\n")
    env = edge_env(tmp_path)
    edge_cli(["sandbox", "add", "tun", "--address", "127.0.0.4"], env)
    proc = await trio.to_thread.run_sync(
        lambda: EdgeProcess(
            ["serve", "--config", str(conf), "--http", "127.0.0.1:0", "--dns", "127.0.0.1:0", "--no-access-log"],
            env,
            timeout=60,
        )
    )
    try:
        admin = ["--admin", proc.listening["admin"]]
        stream = await trio.open_tcp_stream("127.0.0.1", proc.port())
        await stream.send_all(
            f"GET / HTTP/1.1\r\nHost: {sandbox.port}-tun.sandbox.localhost\r\nConnection: upgrade\r\n"
            "Upgrade: echo\r\n\r\n".encode()
        )
        with trio.fail_after(5):
            assert (await stream.receive_some(1024)).startswith(b"HTTP/1.1 101")
        old = workers_of(proc.pid)
        done = await trio.to_thread.run_sync(lambda: edge_cli(["reload", "--config", str(conf), *admin], env))
        assert done.returncode == 0, done.stderr
        assert "reload: generation 2 serving" in done.stdout
        reloaded = time.monotonic()
        await trio.sleep(1.2)  # a worker's counters reach the others within a second
        status = await trio.to_thread.run_sync(lambda: edge_cli(["status", *admin], env))
        assert "generation:  2 since" in status.stdout, status.stdout
        assert "draining:    generation 1: 1 connections still open" in status.stdout, status.stdout
        assert "last deploy: reload at" in status.stdout and ": ok" in status.stdout
        with trio.fail_after(10):  # the tunnel runs on, then drain_timeout closes it
            try:
                while await stream.receive_some(1024):
                    pass
            except trio.BrokenResourceError:
                pass
        assert 2.5 < time.monotonic() - reloaded < 5.0  # drain_timeout, not shutdown_grace
        with trio.fail_after(10):
            while set(old) & set(workers_of(proc.pid)):
                await trio.sleep(0.1)
        status = await trio.to_thread.run_sync(lambda: edge_cli(["status", "--json", *admin], env))
        assert '"draining": []' in status.stdout and '"draining_connections": 0' in status.stdout
    finally:
        proc.stop()
