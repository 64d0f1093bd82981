"""Every listening socket of an edge, bound once and handed down.

`edge serve` runs a supervisor (edge/supervisor.py) that binds every listener here, once: HTTP,
HTTPS, DNS (a UDP and a TCP socket per address), admin, egress. Its workers serve on those very
sockets, passed to them as inherited descriptors named in the EDGE_SOCKETS environment variable
(`Listeners.for_worker(...).describe()` in the supervisor, `Sockets.adopt()` in the worker). A reload
or an upgrade starts the new generation on the same sockets and only then lets the old one stop
accepting; no socket is closed, so no connection waiting in a queue is reset and no new one refused.

HTTP and HTTPS are bound as shares of one SO_REUSEPORT group per address, one share per worker
index: the kernel spreads new connections evenly over the shares (one shared socket would let
whichever worker wakes first take a whole burst), and worker i of every generation takes over share
i, so a share's queue is drained by the next generation's worker i and never dropped. A share is
never closed while the edge runs (with fewer workers after a reload, a worker takes several shares).
DNS, admin and egress are one socket per address, for worker 0.

systemd socket activation works too: sockets passed with LISTEN_FDS (and named with LISTEN_FDNAMES:
`http`, `https`, `dns`, `admin`, `egress`, or any name when the socket's address is one configured)
are used instead of binding (`activated()`); a passed HTTP socket is one share every worker accepts on.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import MutableMapping
from dataclasses import dataclass, field

from edge.config import Config, Listen
from edge.dns.server import bind_all as bind_dns
from edge.egress.server import open_listeners as open_egress
from edge.errors import ConfigError
from edge.http.listen import BACKLOG, open_listeners

log = logging.getLogger("edge.sockets")

#: The kinds of listener, in the order they are bound and listed.
KINDS = ("http", "https", "dns", "admin", "egress")

#: systemd's first passed descriptor (sd_listen_fds(3)).
SD_LISTEN_FDS_START = 3


@dataclass
class Sockets:
    """The listening sockets of one edge, by kind; DNS as (udp, tcp) pairs on one address each."""

    http: list[socket.socket] = field(default_factory=list)
    https: list[socket.socket] = field(default_factory=list)
    dns: list[tuple[socket.socket, socket.socket]] = field(default_factory=list)
    admin: list[socket.socket] = field(default_factory=list)
    egress: list[socket.socket] = field(default_factory=list)

    def all(self) -> list[socket.socket]:
        return [*self.http, *self.https, *(s for pair in self.dns for s in pair), *self.admin, *self.egress]

    def of(self, kind: str) -> list[socket.socket]:
        """The sockets of one kind (for DNS, the UDP ones: one per address)."""
        if kind == "dns":
            return [udp for udp, _ in self.dns]
        sockets: list[socket.socket] = getattr(self, kind)
        return sockets

    def listening(self) -> list[tuple[str, tuple]]:
        """(kind, (host, port)) for every address served, in KINDS order: what `edge: KIND listening
        on ADDR` lines and /v1/status list."""
        return [(kind, tuple(sock.getsockname()[:2])) for kind in KINDS for sock in self.of(kind)]

    def describe(self) -> str:
        """The descriptors by kind, for EDGE_SOCKETS: `http=5,6 https= dns=7/8 admin=9 egress=`."""
        return " ".join(f"{kind}={_fds_text(kind, getattr(self, kind))}" for kind in KINDS)

    def fds(self) -> list[int]:
        return [sock.fileno() for sock in self.all()]

    def close(self) -> None:
        for sock in self.all():
            sock.close()

    @classmethod
    def adopt(cls, text: str) -> Sockets:
        """The sockets a `describe()` string names, as inherited by this process."""
        out = cls()
        for part in text.split():
            kind, _, fds = part.partition("=")
            if kind not in KINDS:
                raise ConfigError(f"EDGE_SOCKETS: unknown kind {kind!r}")
            for one in filter(None, fds.split(",")):
                if kind == "dns":
                    udp, _, tcp = one.partition("/")
                    out.dns.append((_adopt(int(udp)), _adopt(int(tcp))))
                else:
                    getattr(out, kind).append(_adopt(int(one)))
        return out


def _fds_text(kind: str, sockets: list) -> str:
    """`5,6`, or for DNS `7/8,9/10` (udp/tcp pairs)."""
    if kind == "dns":
        return ",".join(f"{udp.fileno()}/{tcp.fileno()}" for udp, tcp in sockets)
    return ",".join(str(sock.fileno()) for sock in sockets)


def _adopt(fd: int) -> socket.socket:
    sock = socket.socket(fileno=fd)  # family and type read from the descriptor
    sock.setblocking(False)
    return sock


#: The kinds bound as SO_REUSEPORT shares, one per worker index.
SHARED = ("http", "https")


@dataclass
class Listeners:
    """The supervisor's sockets: HTTP and HTTPS as shares (each a socket per address, one share per
    worker index), DNS, admin and egress as one socket (pair) per address."""

    http: list[list[socket.socket]] = field(default_factory=list)
    https: list[list[socket.socket]] = field(default_factory=list)
    dns: list[tuple[socket.socket, socket.socket]] = field(default_factory=list)
    admin: list[socket.socket] = field(default_factory=list)
    egress: list[socket.socket] = field(default_factory=list)

    def all(self) -> list[socket.socket]:
        shared = [s for kind in SHARED for share in getattr(self, kind) for s in share]
        return [*shared, *(s for pair in self.dns for s in pair), *self.admin, *self.egress]

    def fds(self) -> list[int]:
        return [sock.fileno() for sock in self.all()]

    def close(self) -> None:
        for sock in self.all():
            sock.close()

    def listening(self) -> list[tuple[str, tuple]]:
        """(kind, (host, port)) of every address served (one share stands for its group)."""
        return self.for_worker(0, 1).listening()

    def for_worker(self, index: int, workers: int) -> Sockets:
        """What worker `index` of `workers` serves on: the shares k with k % workers == index (all of
        them for a single worker; share index % shares when there are fewer shares than workers, as
        with systemd's one socket); DNS, admin and egress for worker 0 only."""

        def pick(shares: list[list[socket.socket]]) -> list[socket.socket]:
            if not shares:
                return []
            if len(shares) < workers:
                return list(shares[index % len(shares)])
            return [sock for k, share in enumerate(shares) if k % workers == index for sock in share]

        first = index == 0
        return Sockets(
            http=pick(self.http),
            https=pick(self.https),
            dns=list(self.dns) if first else [],
            admin=list(self.admin) if first else [],
            egress=list(self.egress) if first else [],
        )

    def describe(self) -> str:
        """Every descriptor, for a re-executed supervisor: as Sockets.describe, shares separated by `;`."""
        parts = []
        for kind in KINDS:
            value = getattr(self, kind)
            text = ";".join(_fds_text(kind, share) for share in value) if kind in SHARED else _fds_text(kind, value)
            parts.append(f"{kind}={text}")
        return " ".join(parts)

    @classmethod
    def adopt(cls, text: str) -> Listeners:
        out = cls()
        for part in text.split():
            kind, _, fds = part.partition("=")
            if kind in SHARED:
                setattr(
                    out, kind, [[_adopt(int(fd)) for fd in share.split(",") if fd] for share in fds.split(";") if share]
                )
            elif kind in KINDS:
                flat = Sockets.adopt(part)
                setattr(out, kind, getattr(flat, kind))
            else:
                raise ConfigError(f"EDGE_SOCKETS: unknown kind {kind!r}")
        return out


def configured(config: Config, kind: str) -> Listen | None:
    """What the config asks `kind` to listen on (None: not served)."""
    if kind == "http":
        return config.http.listen
    if kind == "https":
        return config.https.listen
    if kind == "dns":
        return config.dns.listen
    if kind == "admin":
        return config.admin.listen
    return config.egress.listen


def bind(
    config: Config,
    kinds: tuple[str, ...],
    *,
    workers: int = 1,
    keep: tuple[Config, Listeners] | None = None,
    given: Sockets | None = None,
) -> tuple[Listeners, list[socket.socket]]:
    """The listeners for `kinds` under `config`: those in `given` (socket activation) first, then
    those of `keep` (the config and listeners serving now) whose configured address did not change
    (HTTP and HTTPS with more shares when `workers` grew); anything else is bound now. Returns them
    with the sockets of `keep` no longer used (the caller closes those once the generation serving
    on them is gone). On an error, what this call bound is closed again and the error raised (a
    ConfigError naming the listener)."""
    out = Listeners()
    fresh: list[socket.socket] = []
    try:
        for kind in kinds:
            listen = configured(config, kind)
            if given is not None and given.of(kind):
                got = list(getattr(given, kind))
                setattr(out, kind, [got] if kind in SHARED else got)  # shared: one share every worker accepts on
            elif (
                keep is not None and listen is not None and configured(keep[0], kind) == listen and _has(keep[1], kind)
            ):
                if kind in SHARED:
                    shares = [list(share) for share in getattr(keep[1], kind)]
                    while len(shares) < workers and _reuse_port(shares[0][0]):  # not systemd's one socket
                        shares.append(_another_share(shares[0], kind, fresh))
                    setattr(out, kind, shares)
                else:
                    setattr(out, kind, list(getattr(keep[1], kind)))
            elif listen is not None:
                if kind in SHARED:
                    first = open_listeners(listen, what=kind, reuse_port=True)
                    fresh += first
                    shares = [first]
                    while len(shares) < workers:
                        shares.append(_another_share(first, kind, fresh))
                    setattr(out, kind, shares)
                elif kind == "dns":
                    out.dns = [(udp, tcp) for udp, tcp, _ in bind_dns(listen)]
                    fresh += [s for pair in out.dns for s in pair]
                else:
                    bound = open_egress(listen) if kind == "egress" else open_listeners(listen, what=kind)
                    setattr(out, kind, bound)
                    fresh += bound
    except BaseException:
        for sock in fresh:
            sock.close()
        raise
    used = {sock.fileno() for sock in out.all()}
    unused = [sock for sock in keep[1].all() if sock.fileno() not in used] if keep is not None else []
    return out, unused


def _reuse_port(sock: socket.socket) -> bool:
    return bool(sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT))


def _has(listeners: Listeners, kind: str) -> bool:
    return bool(getattr(listeners, kind))


def _another_share(first: list[socket.socket], kind: str, fresh: list[socket.socket]) -> list[socket.socket]:
    """One more member of the SO_REUSEPORT group of each socket of `first`: same family, same address."""
    share = []
    for model in first:
        sock = socket.socket(model.family, socket.SOCK_STREAM)
        fresh.append(sock)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if model.family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(model.getsockname())
            sock.listen(BACKLOG)
            sock.setblocking(False)
        except OSError as exc:
            raise ConfigError(f"{kind}: cannot add a listener on {model.getsockname()[:2]}: {exc.strerror}") from None
        share.append(sock)
    return share


def activated(config: Config, environ: MutableMapping[str, str] = os.environ) -> Sockets | None:
    """The sockets systemd passed (LISTEN_PID is this process, LISTEN_FDS of them from descriptor 3),
    by kind: named after one (LISTEN_FDNAMES), or else found by their address among the configured
    ones. None without socket activation. The variables are removed, so no child takes them for its own."""
    if environ.get("LISTEN_PID") != str(os.getpid()):
        return None
    count = int(environ.get("LISTEN_FDS", "0") or 0)
    names = environ.get("LISTEN_FDNAMES", "").split(":")
    for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        environ.pop(name, None)
    if not count:
        return None
    out = Sockets()
    udp_by_addr: dict[tuple, socket.socket] = {}
    tcp_dns: list[socket.socket] = []
    for i in range(count):
        fd = SD_LISTEN_FDS_START + i
        os.set_inheritable(fd, False)
        sock = _adopt(fd)
        name = names[i] if i < len(names) else ""
        kind = name if name in KINDS else _kind_by_address(config, sock)
        if kind is None:
            log.warning("socket activation: descriptor %d (%r, %s) matches no listener; ignored", fd, name, _addr(sock))
            sock.close()
            continue
        if kind == "dns":
            if sock.type == socket.SOCK_DGRAM:
                udp_by_addr[_addr(sock)] = sock
            else:
                tcp_dns.append(sock)
        else:
            getattr(out, kind).append(sock)
    for tcp in tcp_dns:
        udp = udp_by_addr.pop(_addr(tcp), None)
        if udp is None:
            raise ConfigError(f"socket activation: DNS over TCP on {_addr(tcp)} has no UDP socket on that address")
        out.dns.append((udp, tcp))
    if udp_by_addr:
        raise ConfigError(f"socket activation: DNS over UDP on {next(iter(udp_by_addr))} has no TCP socket beside it")
    for kind in KINDS:
        if out.of(kind):
            log.info("%s: %d socket(s) from systemd", kind, len(out.of(kind)))
    return out


def _addr(sock: socket.socket) -> tuple:
    return tuple(sock.getsockname()[:2])


def _kind_by_address(config: Config, sock: socket.socket) -> str | None:
    host, port = _addr(sock)
    for kind in KINDS:
        listen = configured(config, kind)
        if listen is not None and any(one.host == host and one.port == port for one in listen.all()):
            return kind
    return None


def inheritable(sockets: Listeners) -> list[int]:
    """Mark every descriptor inheritable (for an exec) and return them."""
    fds = sockets.fds()
    for fd in fds:
        os.set_inheritable(fd, True)
    return fds
