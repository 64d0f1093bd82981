"""A real redis-server (Debian's) for the tests: a free loopback port, a temp folder, no system service.

`RedisServer(dir).start()` runs `redis-server` with no config file, bound to 127.0.0.1 on a free
port, its files in `dir`; `persist=True` keeps an append-only file there so a restart finds its data
(`--appendfsync always`: a kill -9 loses nothing acknowledged), otherwise nothing is ever written to
disk. `kill()` is SIGKILL (Redis gone as in a crash); `start()` again brings it back on the same port.
The pytest fixture `redis_server` skips the test when redis-server is not installed (`make test`
installs it).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class RedisServer:
    def __init__(self, folder: Path, *, persist: bool = False, port: int = 0) -> None:
        self.folder = folder
        self.folder.mkdir(parents=True, exist_ok=True)
        self.persist = persist
        self.port = port or free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> RedisServer:
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        args = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.folder), "--save", ""]
        args += ["--appendonly", "yes", "--appendfsync", "always"] if self.persist else ["--appendonly", "no"]
        args += ["--daemonize", "no", "--logfile", str(self.folder / "redis.log")]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("redis-server exited:\n" + (self.folder / "redis.log").read_text())
            if self.ping():
                return self
            time.sleep(0.02)
        self.kill()
        raise RuntimeError("redis-server did not answer PING")

    def ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def kill(self) -> None:
        """SIGKILL: Redis gone at once, as in a crash."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.proc = None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


def have_redis_server() -> bool:
    return shutil.which("redis-server") is not None or Path("/usr/bin/redis-server").exists()


@pytest.fixture
def redis_server(tmp_path):
    if not have_redis_server():
        pytest.skip("redis-server is not installed (make test installs it: apt-get install redis-server)")
    server = RedisServer(tmp_path / "redis").start()
    yield server
    server.kill()
