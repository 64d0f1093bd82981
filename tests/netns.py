"""Network namespaces for tests: made by the test, removed after it, also when it fails.

A `Lab` creates namespaces named `edget-<pid>-<role>` (a crashed run's leftovers, whose pid is gone,
are removed by the next one), veth pairs between them (created inside the namespaces: nothing is ever
added to the machine's own namespace), addresses, routes, nftables tables and processes; `close()`
ends the processes it started (by their id) and deletes the namespaces, which takes their interfaces,
routes and nftables tables with them.

`inside(name)` moves the calling thread into a namespace for the block (setns(2), per thread), so a
test can run a server in-process whose sockets all live in a namespace: sockets keep the namespace
they were made in. Subprocesses are started with `ip netns exec`.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import subprocess
from collections.abc import Iterator

CLONE_NEWNET = 0x40000000
PREFIX = "edget-"
_libc = ctypes.CDLL(None, use_errno=True)


def unavailable() -> str | None:
    """Why namespace tests cannot run here (a reason to skip), or None."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    for tool in ("ip", "nft"):
        if shutil.which(tool) is None:
            return f"`{tool}` is not installed (Debian: iproute2, nftables)"
    name = f"{PREFIX}{os.getpid()}-probe"
    probe = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True)
    if probe.returncode != 0:
        return f"cannot create a network namespace: {probe.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", name], capture_output=True)
    return None


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


@contextlib.contextmanager
def inside(name: str) -> Iterator[None]:
    """The calling thread is in namespace `name` for the block, and back in its own after."""
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    target = os.open(f"/run/netns/{name}", os.O_RDONLY)
    try:
        _setns(target)
        try:
            yield
        finally:
            _setns(own)
    finally:
        os.close(own)
        os.close(target)


def remove_leftovers() -> None:
    """Namespaces of earlier runs whose process is gone."""
    listing = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    for line in listing.splitlines():
        name = line.split()[0] if line.strip() else ""
        if not name.startswith(PREFIX):
            continue
        pid = name[len(PREFIX) :].split("-", 1)[0]
        if pid.isdigit() and not os.path.exists(f"/proc/{pid}"):
            subprocess.run(["ip", "netns", "del", name], capture_output=True)


class Lab:
    """Namespaces, links and processes of one test set-up; `close()` removes them all."""

    def __init__(self) -> None:
        remove_leftovers()
        self.namespaces: list[str] = []
        self.processes: list[subprocess.Popen] = []

    def namespace(self, role: str) -> str:
        name = f"{PREFIX}{os.getpid()}-{role}"
        subprocess.run(["ip", "netns", "del", name], capture_output=True)  # this pid's own leftover
        self.sh(None, "ip", "netns", "add", name)
        self.namespaces.append(name)
        self.sh(name, "ip", "link", "set", "lo", "up")
        return name

    def sh(self, ns: str | None, *cmd: str, input: str | None = None) -> str:
        """Run `cmd` (in namespace `ns`); its stdout. Fails loudly with its stderr."""
        argv = ["ip", "netns", "exec", ns, *cmd] if ns else list(cmd)
        done = subprocess.run(argv, capture_output=True, text=True, input=input, timeout=30)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)}: exit {done.returncode}: {done.stderr.strip()}")
        return done.stdout

    def link(self, a_ns: str, a_if: str, b_ns: str, b_if: str) -> None:
        """A veth pair from `a_if` in a_ns to `b_if` in b_ns, both up (made inside a_ns)."""
        self.sh(a_ns, "ip", "link", "add", a_if, "type", "veth", "peer", "name", b_if, "netns", b_ns)
        self.sh(a_ns, "ip", "link", "set", a_if, "up")
        self.sh(b_ns, "ip", "link", "set", b_if, "up")

    def addr(self, ns: str, ifname: str, *cidrs: str) -> None:
        for cidr in cidrs:
            flags = ["nodad"] if ":" in cidr else []  # IPv6: usable at once, no duplicate detection wait
            self.sh(ns, "ip", "addr", "add", cidr, "dev", ifname, *flags)

    def route(self, ns: str, *spec: str) -> None:
        family = ["-6"] if any(":" in s for s in spec) else []
        self.sh(ns, "ip", *family, "route", "add", *spec)

    def start(self, ns: str, *cmd: str, **kw) -> subprocess.Popen:
        """A process in namespace `ns`, in a process group of its own (ended by close())."""
        proc = subprocess.Popen(["ip", "netns", "exec", ns, *cmd], start_new_session=True, **kw)
        self.processes.append(proc)
        return proc

    def close(self) -> None:
        for proc in self.processes:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(5)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(5)
        for name in reversed(self.namespaces):
            subprocess.run(["ip", "netns", "del", name], capture_output=True)
        self.namespaces.clear()
