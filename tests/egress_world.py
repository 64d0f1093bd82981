"""A sandbox, a host running edge's egress listener, and an internet: three network namespaces.

    sandbox ns                     host ns (edge runs here)                  internet ns
    eth0 10.77.0.2-.9/24  <-veth->  sbx0 10.77.0.1/24   net0 203.0.113.1/24  <-veth->  up0 203.0.113.2/24
         fd77::2/64                      fd77::1/64          2001:db8:113::1/64           2001:db8:113::2/64
         default via .1, fd77::1    nftables (edge/egress/nft.py):                  2001:db8:10::10
                                                                                    192.0.2.10, .11
         resolv.conf:                 sandbox TCP -> REDIRECT :15001                198.51.100.10, .11, .20, .21
           203.0.113.53               UDP dropped but DNS to 203.0.113.53           203.0.113.10 (echo), .53 (DNS)
                                    edge's egress listener [::]:15001,              172.31.99.10 (private)
                                      one dual-stack socket for both families
                                    routes to the internet's ranges via .2          169.254.169.254 (metadata)

Why three namespaces and not the machine's own as the host: the machine's own network may be anything
(this one's is 192.0.2.0/24, a documentation range, with a real gateway in it), and a route added
there could send test traffic out. Here every address lives in a namespace the test made, and nothing
in the machine's own namespace changes. edge runs in the test process: the test's thread is moved into
the host namespace (`netns.inside`) for the whole test, so every socket edge makes (the listener, its
connections out, its DNS queries) is in the host namespace, where REDIRECT delivers to `0.0.0.0:15001`
(REDIRECT rewrites the destination to the primary address of the interface the packet came in on,
10.77.0.1, and conntrack keeps the original for SO_ORIGINAL_DST). The host forwards nothing but the
sandbox's DNS (ip_forward on, the ruleset's forward chain drops the rest).

The internet's servers run in a subprocess there (tests/egress_internet.py). The sandbox's clients
(curl, openssl, dig, python) run with `ip netns exec`, their names resolved by the internet's DNS
through /etc/netns/<sandbox ns>/resolv.conf (which `ip netns exec` mounts over /etc/resolv.conf).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import trio

from edge.catalog.model import Sandbox, Snapshot
from edge.catalog.store import LiveCatalog
from edge.config import Listen
from edge.egress.config import EgressConfig
from edge.egress.nft import ruleset
from edge.egress.server import serve
from tests.netns import Lab, inside
from tests.tlsutil import TestCA

REPO = Path(__file__).resolve().parent.parent
PORT = 15001
HOST_SANDBOX_SIDE = "10.77.0.1"
RESOLVER = "203.0.113.53"
#: Source addresses in the sandbox namespace: each may be registered as a sandbox; NOT_A_SANDBOX never is.
SANDBOX_ADDRESSES = [f"10.77.0.{i}" for i in range(2, 10)]
NOT_A_SANDBOX = "10.77.0.99"
SANDBOX_V6 = "fd77::2"
INTERNET_ADDRESSES = [
    "192.0.2.10/24",
    "192.0.2.11/24",
    "198.51.100.10/24",
    "198.51.100.11/24",
    "198.51.100.20/24",
    "198.51.100.21/24",
    "203.0.113.10/24",
    "203.0.113.53/24",
    "172.31.99.10/24",
    "169.254.169.254/16",
]


class World:
    def __init__(self, lab: Lab, folder: Path) -> None:
        self.lab = lab
        self.folder = folder
        self.sandbox_ns = lab.namespace("sbx")
        self.host_ns = lab.namespace("host")
        self.internet_ns = lab.namespace("net")
        self.live = LiveCatalog(Snapshot([], 1))
        self.logs: list[dict] = []
        self.ca = TestCA(folder)
        self._scope: trio.CancelScope | None = None
        self._resolv = Path("/etc/netns") / self.sandbox_ns

    def build(self, exclude: tuple[str, ...] = ()) -> None:
        """Everything but edge. `exclude`: destinations the ruleset leaves alone (forwarded directly)."""
        lab = self.lab
        lab.link(self.host_ns, "sbx0", self.sandbox_ns, "eth0")
        lab.link(self.host_ns, "net0", self.internet_ns, "up0")
        lab.addr(self.sandbox_ns, "eth0", *(f"{a}/24" for a in [*SANDBOX_ADDRESSES, NOT_A_SANDBOX]))
        lab.addr(self.sandbox_ns, "eth0", f"{SANDBOX_V6}/64")
        lab.route(self.sandbox_ns, "default", "via", HOST_SANDBOX_SIDE)
        lab.route(self.sandbox_ns, "default", "via", "fd77::1")
        lab.addr(self.host_ns, "sbx0", f"{HOST_SANDBOX_SIDE}/24", "fd77::1/64")
        lab.addr(self.host_ns, "net0", "203.0.113.1/24", "2001:db8:113::1/64")
        for net in ("192.0.2.0/24", "198.51.100.0/24", "172.31.99.0/24", "169.254.0.0/16"):
            lab.route(self.host_ns, net, "via", "203.0.113.2")
        lab.route(self.host_ns, "2001:db8:10::/64", "via", "2001:db8:113::2")
        lab.addr(
            self.internet_ns, "up0", "203.0.113.2/24", *INTERNET_ADDRESSES, "2001:db8:113::2/64", "2001:db8:10::10/64"
        )
        lab.route(self.internet_ns, "default", "via", "203.0.113.1")
        lab.route(self.internet_ns, "default", "via", "2001:db8:113::1")
        lab.sh(self.host_ns, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1")
        lab.sh(
            self.host_ns,
            "nft",
            "-f",
            "-",
            input=ruleset(["10.77.0.0/24", "fd77::/64"], PORT, exclude=exclude, resolver=(RESOLVER, 53)),
        )
        self._resolv.mkdir(parents=True, exist_ok=True)
        (self._resolv / "resolv.conf").write_text(f"nameserver {RESOLVER}\noptions timeout:1 attempts:2\n")
        cert, key = self.ca.issue(_cert_names(), "internet")
        proc = lab.start(
            self.internet_ns,
            sys.executable,
            "-m",
            "tests.egress_internet",
            str(cert),
            str(key),
            cwd=REPO,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout is not None
        if proc.stdout.readline().strip() != "ready":
            raise RuntimeError("the internet's servers did not start")

    def close(self) -> None:
        shutil.rmtree(self._resolv, ignore_errors=True)
        self.lab.close()

    # --- edge --------------------------------------------------------------------------------------

    async def start_edge(self, nursery: trio.Nursery, **config) -> None:
        """(Re)start the egress server in the host namespace (the calling thread is there)."""
        if self._scope is not None:
            self._scope.cancel()
            await trio.sleep(0.05)
        cfg = EgressConfig(listen=Listen("::", PORT), resolver=RESOLVER, **config)  # both families

        async def run(task_status=trio.TASK_STATUS_IGNORED) -> None:
            with trio.CancelScope() as scope:
                self._scope = scope
                await serve(cfg, self.live, log=self.logs.append, task_status=task_status)

        await nursery.start(run)

    def sandbox(self, sandbox_id: str, address: str = SANDBOX_ADDRESSES[0], **policy) -> None:
        """Register (or replace) a sandbox at `address` with a policy: the change is live at once."""
        current = [s for s in self.live.snapshot.by_id.values() if s.id != sandbox_id]
        record = Sandbox(sandbox_id, address, **{k: tuple(v) if isinstance(v, list) else v for k, v in policy.items()})
        self.live.swap(Snapshot([*current, record], self.live.snapshot.version + 1))

    # --- clients in the sandbox --------------------------------------------------------------------

    async def run(self, *cmd: str, timeout: float = 20) -> subprocess.CompletedProcess:
        with trio.fail_after(timeout):
            return await trio.run_process(
                ["ip", "netns", "exec", self.sandbox_ns, *cmd], capture_stdout=True, capture_stderr=True, check=False
            )

    async def curl(self, url: str, *args: str, source: str = SANDBOX_ADDRESSES[0]) -> subprocess.CompletedProcess:
        return await self.run(
            "curl", "-sS", "--max-time", "10", "--interface", source, "--cacert", str(self.ca.path), *args, url
        )

    async def python(self, code: str, *args: str) -> subprocess.CompletedProcess:
        return await self.run(sys.executable, "-c", code, *args)

    async def log(self, **match) -> dict:
        """The last log line with these fields. A line is written when its connection ends, which may
        be a moment after the client in the sandbox has finished: waited for, up to 3 s."""
        with trio.move_on_after(3):
            while True:
                for doc in reversed(self.logs):
                    if all(doc.get(k) == v for k, v in match.items()):
                        return doc
                await trio.sleep(0.01)
        raise AssertionError(f"no egress log line with {match}: {self.logs[-3:]}")


def _cert_names() -> list[str]:
    from tests.egress_internet import CERT_NAMES

    return CERT_NAMES


@contextlib.asynccontextmanager
async def egress_world(folder: Path, exclude: tuple[str, ...] = ()):
    """The world, built; the calling thread inside the host namespace until the block ends."""
    world = World(Lab(), folder)
    try:
        world.build(exclude)
        with inside(world.host_ns):
            yield world
    finally:
        if world._scope is not None:
            world._scope.cancel()
        world.close()


def skip_reason() -> str | None:
    from tests.netns import unavailable

    reason = unavailable()
    for tool, package in (("curl", "curl"), ("openssl", "openssl"), ("dig", "dnsutils")):
        if reason is None and shutil.which(tool) is None:
            reason = f"`{tool}` is not installed (Debian: {package})"
    if reason is None and not os.path.exists("/proc/thread-self/ns/net"):
        reason = "no /proc/thread-self"
    return reason
