"""Run `edge` as a real process, the way users do, and read back where it listens."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

_LISTEN = re.compile(r"^edge: (\w+) listening on (\S+)$")


def listening(line: str) -> tuple[str, str] | None:
    """(kind, address) from a listener's line: `edge: http listening on ADDR` (text log format) or
    `{"event": "listening", "kind": "http", "address": "ADDR", ...}` (json); None for any other line."""
    line = line.strip()
    m = _LISTEN.match(line)
    if m:
        return m.group(1), m.group(2)
    if line.startswith("{"):
        try:
            doc = json.loads(line)
        except ValueError:
            return None
        if isinstance(doc, dict) and doc.get("event") == "listening":
            return doc["kind"], doc["address"]
    return None


def workers_of(pid: int) -> list[int]:
    """The worker processes of the `edge serve` supervisor `pid` (its children running edge), oldest first."""
    kids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid and b"edge" in cmdline:
            kids.append(int(entry))
    return sorted(kids)


def worker_of(pid: int, timeout: float = 10.0) -> int:
    """The one worker of a `--workers 1` supervisor (the process that serves), waiting for it."""
    deadline = time.monotonic() + timeout
    while True:
        kids = workers_of(pid)
        if kids or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    if not kids:
        raise RuntimeError(f"edge supervisor {pid} has no worker")
    return kids[0]


class EdgeProcess:
    def __init__(self, args: list[str], env: dict[str, str], timeout: float = 15.0) -> None:
        if args and args[0] == "serve" and "--admin" not in args:
            args = [*args, "--admin", "127.0.0.1:0"]  # never the default port: tests run side by side
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "edge", *args],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
        )
        self.listening: dict[str, str] = {}
        self.lines: list[str] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError("edge exited before listening:\n" + "".join(self.lines))
            self.lines.append(line)
            found = listening(line)
            if found:
                self.listening[found[0]] = found[1]
            if "edge is up" in line:
                return
        self.stop()
        raise RuntimeError("edge did not come up:\n" + "".join(self.lines))

    def port(self, kind: str = "http") -> int:
        return int(self.listening[kind].rsplit(":", 1)[1])

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def worker_pid(self) -> int:
        """The (first) worker: the process that serves, whose memory and descriptors count."""
        return worker_of(self.pid)

    def peak_rss_kib(self) -> int:
        """VmHWM: the most resident memory the serving process ever had, in KiB."""
        for line in Path(f"/proc/{self.worker_pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
        raise RuntimeError("no VmHWM")

    def rss_kib(self) -> int:
        for line in Path(f"/proc/{self.worker_pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise RuntimeError("no VmRSS")

    def stop(self) -> str:
        """SIGTERM, wait, and return everything it printed."""
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            out, _ = self.proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, _ = self.proc.communicate()
        return "".join(self.lines) + (out or "")


def edge_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGE_")}
    env["EDGE_STATE_DIR"] = str(tmp_path / "state")
    env.update(extra)
    return env


def edge_cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edge", *args], env=env, capture_output=True, text=True, timeout=30)
