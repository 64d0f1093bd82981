"""Descriptors as deployed: the soft limit raised to the hard one at start, and accept errors (out
of descriptors) said once per 10 s with a count, not every 100 ms."""

from __future__ import annotations

import resource
import socket
import subprocess
import sys
import time

from tests.proc import edge_env


def _limits(soft: int, hard: int):
    def set_limits() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

    return set_limits


def _start(tmp_path, soft: int, hard: int, config: str = "") -> tuple[subprocess.Popen, int, str]:
    args = [
        sys.executable,
        "-m",
        "edge",
        "serve",
        "--http",
        "127.0.0.1:0",
        "--dns",
        "127.0.0.1:0",
        "--admin",
        "127.0.0.1:0",
        "--log-format",
        "text",
    ]
    if config:
        (tmp_path / "edge.toml").write_text(config)
        args += ["--config", str(tmp_path / "edge.toml")]
    proc = subprocess.Popen(
        args, env=edge_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, preexec_fn=_limits(soft, hard)
    )
    port = 0
    seen = ""
    deadline = time.monotonic() + 20
    while True:
        assert time.monotonic() < deadline
        line = proc.stdout.readline().decode()
        assert line, "edge exited:\n" + seen
        seen += line
        if "http listening on" in line:
            port = int(line.rsplit(":", 1)[1])
        if "edge is up" in line:
            return proc, port, seen


def _soft_limit(pid: int) -> int:
    for line in open(f"/proc/{pid}/limits"):
        if line.startswith("Max open files"):
            return int(line.split()[3])
    raise AssertionError("no limit line")


def test_soft_descriptor_limit_is_raised_to_the_hard_one(tmp_path):
    """Started with soft 256 and hard 4096 (systemd's 1024/524288, smaller): edge runs with 4096."""
    proc, _, started = _start(tmp_path, 256, 4096)
    try:
        assert _soft_limit(proc.pid) == 4096
    finally:
        proc.terminate()
        proc.communicate(timeout=10)
    assert "descriptor limit: 4096" in started


def test_accept_errors_are_logged_once_per_ten_seconds_with_a_count(tmp_path):
    """Out of descriptors (hard limit 64, no connection cap to protect it): clients keep coming for
    3 s; the error is said once, not thirty times, and the edge serves again once they leave."""
    proc, port, _ = _start(tmp_path, 64, 64, "[http]\nmax_connections = 100000\nmax_connections_per_ip = 100000\n")
    held = []
    try:
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            try:
                held.append(socket.create_connection(("127.0.0.1", port), timeout=1))
            except OSError:
                time.sleep(0.05)
            if len(held) > 200:
                time.sleep(0.05)
        for s in held:
            s.close()
        held.clear()
        time.sleep(0.5)
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(b"GET / HTTP/1.1\r\nHost: nosuch\r\nConnection: close\r\n\r\n")
            assert s.recv(100).startswith(b"HTTP/1.1 400")  # serving again
    finally:
        for s in held:
            s.close()
        proc.terminate()
        out = proc.communicate(timeout=10)[0].decode()
    reports = [ln for ln in out.splitlines() if "accept failed" in ln]
    assert 1 <= len(reports) <= 2, reports
