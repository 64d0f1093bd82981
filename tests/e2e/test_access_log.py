"""The access log as deployed: `edge serve` with its defaults, a stdout pipe nobody reads, a file
rotated by logrotate's convention (rename, then SIGUSR1)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import trio

from tests.backends import Backend
from tests.proc import edge_cli, edge_env

pytestmark = pytest.mark.trio


class Serve:
    """`edge serve` whose stdout the test reads only when it wants to."""

    def __init__(self, tmp_path: Path, extra: list[str], config: str = "") -> None:
        self.env = edge_env(tmp_path, EDGE_ADMIN_TOKEN="t0ken")
        args = ["serve", "--http", "127.0.0.1:0", "--dns", "127.0.0.1:0", "--admin", "127.0.0.1:0", *extra]
        if config:
            conf = tmp_path / "edge.toml"
            conf.write_text(config)
            args += ["--config", str(conf)]
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "edge", *args], env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        self.ports: dict[str, int] = {}
        self.head = b""
        deadline = time.monotonic() + 20
        while b"edge is up" not in self.head:
            assert time.monotonic() < deadline, self.head
            line = self.proc.stdout.readline()
            assert line, self.head
            self.head += line
            if line.startswith(b"{") and b'"event":"listening"' in line:  # JSON mode (the default)
                doc = json.loads(line)
                self.ports[doc["kind"]] = int(doc["address"].rsplit(":", 1)[1])

    def stop(self) -> bytes:
        self.proc.send_signal(signal.SIGTERM)
        out, _ = self.proc.communicate(timeout=20)
        return out


async def _get_many(port: int, host: str, n: int, tag: str = "r") -> int:
    """n keep-alive GETs on one connection; returns how many were answered 200."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    ok = 0
    async with stream:
        buf = b""
        for i in range(n):
            await stream.send_all(f"GET /{tag}{i} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
            with trio.fail_after(5):
                while b"\r\n\r\n" not in buf:
                    buf += await stream.receive_some(65536)
                head, _, buf = buf.partition(b"\r\n\r\n")
                length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
                while len(buf) < length:
                    buf += await stream.receive_some(65536)
                buf = buf[length:]
            ok += head.startswith(b"HTTP/1.1 200")
    return ok


def _metric(port: int, name: str) -> float:
    import urllib.request

    req = urllib.request.Request(f"http://127.0.0.1:{port}/metrics", headers={"Authorization": "Bearer t0ken"})
    text = urllib.request.urlopen(req, timeout=5).read().decode()
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name))


async def test_a_stdout_pipe_nobody_reads_never_stops_serving(tmp_path, nursery):
    """Nobody reads the edge's stdout: every request is still answered, lines past the buffer are
    dropped and counted, and once the reader comes back new lines arrive again."""
    backend = await Backend("b").start(nursery, "127.0.0.2")
    edge = await trio.to_thread.run_sync(lambda: Serve(tmp_path, [], "access_log_buffer = 16384\n"))
    try:
        assert edge_cli(["sandbox", "add", "logs", "--address", "127.0.0.2"], edge.env).returncode == 0
        host = f"{backend.port}-logs.sandbox.localhost"
        await trio.sleep(0.5)  # the catalog poll
        # ~250 bytes a line: the 64 KiB pipe and the 16 KiB buffer are full after a few hundred.
        assert await _get_many(edge.ports["http"], host, 2000) == 2000
        dropped = _metric(edge.ports["admin"], "edge_access_log_dropped_total")
        assert dropped > 0
        # The reader comes back and keeps reading: a request made after that is logged again.
        os.set_blocking(edge.proc.stdout.fileno(), False)
        seen = bytearray()

        async def read_on() -> None:
            while True:
                try:
                    chunk = os.read(edge.proc.stdout.fileno(), 1 << 20)
                except BlockingIOError:
                    await trio.sleep(0.01)
                    continue
                if not chunk:
                    return
                seen.extend(chunk)

        async with trio.open_nursery() as reading:
            reading.start_soon(read_on)
            await trio.sleep(0.5)  # what was held back drains
            assert await _get_many(edge.ports["http"], host, 1, tag="after-") == 1
            with trio.fail_after(5):
                while b"/after-0" not in seen:
                    await trio.sleep(0.05)
            reading.cancel_scope.cancel()
    finally:
        os.set_blocking(edge.proc.stdout.fileno(), True)
        edge.stop()


async def test_a_rotated_file_is_reopened_on_sigusr1_and_no_line_is_lost(tmp_path, nursery):
    """--access-log FILE: rename it, SIGUSR1, and the new file gets the next lines; every request
    is in one of the two files once the edge stopped (shutdown flushes)."""
    backend = await Backend("b").start(nursery, "127.0.0.2")
    log = tmp_path / "access.log"
    edge = await trio.to_thread.run_sync(lambda: Serve(tmp_path, ["--access-log", str(log)]))
    try:
        assert edge_cli(["sandbox", "add", "logs", "--address", "127.0.0.2"], edge.env).returncode == 0
        host = f"{backend.port}-logs.sandbox.localhost"
        await trio.sleep(0.5)
        assert await _get_many(edge.ports["http"], host, 300, tag="one-") == 300
        with trio.fail_after(5):  # lines reach the file within a second at low traffic
            while not log.exists() or log.read_text().count("\n") < 300:
                await trio.sleep(0.05)
        log.rename(tmp_path / "access.log.1")
        edge.proc.send_signal(signal.SIGUSR1)
        await trio.sleep(0.3)
        assert await _get_many(edge.ports["http"], host, 300, tag="two-") == 300
    finally:
        edge.stop()
    old = [json.loads(x) for x in (tmp_path / "access.log.1").read_text().splitlines()]
    new = [json.loads(x) for x in log.read_text().splitlines()]
    assert len(old) + len(new) == 600
    assert all(line["path"].startswith("/one-") for line in old)
    assert sum(line["path"].startswith("/two-") for line in new) >= 290  # a batch in flight may land in the old
    assert {line["path"] for line in old + new} == {f"/one-{i}" for i in range(300)} | {f"/two-{i}" for i in range(300)}
