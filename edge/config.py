"""Configuration: frozen dataclasses, loaded in one place.

Sources, later ones winning: the defaults below, a TOML file (`--config FILE` or EDGE_CONFIG),
environment variables (EDGE_CATALOG, EDGE_STATE_DIR), then command-line flags. An unknown key in the
file is an error naming the key, never a silently ignored typo. Units are in the field names' comments:
durations are seconds (float), sizes are bytes.

A TOML file mirrors the dataclasses:

    domains = ["sandbox.localhost"]
    catalog = "sqlite:////var/lib/edge/catalog.db"

    [http]
    listen = "0.0.0.0:80"
    head_timeout = 10.0
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from edge.errors import ConfigError

#: The zones shipped with edge: package data (edge/zones/), so a wheel install has them too.
SHIPPED_ZONES = Path(__file__).resolve().parent / "zones"


# A DNS label as edge accepts it in a domain it serves (underscores allowed, as in _acme-challenge).
_LABEL = re.compile(r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9])?\Z")


def normalize_domain(domain: str) -> str:
    """A domain edge serves, lower case without a trailing dot. At least one label."""
    d = domain.strip().rstrip(".").lower()
    labels = d.split(".")
    if not d or len(d) > 253 or not all(_LABEL.match(label) for label in labels):
        raise ConfigError(f"domain: {domain!r} is not a domain name")
    return d


@dataclass(frozen=True)
class Listen:
    """An address to listen on, written `ADDR:PORT` or `[V6ADDR]:PORT`. Port 0 picks a free port.

    A service may listen on several addresses (IPv4 and IPv6 together): in the config a list,
    `listen = ["0.0.0.0:80", "[::]:80"]`, on the command line `--http 0.0.0.0:80,[::]:80`. `host` and
    `port` are the first; `also` the others; `all()` every one, in order."""

    host: str
    port: int
    also: tuple[Listen, ...] = ()

    def all(self) -> tuple[Listen, ...]:
        return (Listen(self.host, self.port), *self.also)

    @classmethod
    def parse_many(cls, text: str | list[str], what: str = "address") -> Listen:
        """One address, a comma-separated list, or a list of them."""
        items = [t.strip() for t in (text.split(",") if isinstance(text, str) else text) if t.strip()]
        if not items:
            raise ConfigError(f"{what}: no address given")
        first, *rest = (cls.parse(t, what) for t in items)
        return cls(first.host, first.port, tuple(rest))

    @classmethod
    def parse(cls, text: str, what: str = "address") -> Listen:
        host, sep, port_text = text.rpartition(":")
        if not sep or not host:
            raise ConfigError(f"{what}: {text!r} is not ADDR:PORT")
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
        try:
            ipaddress.ip_address(host)
        except ValueError:
            if host != "localhost":
                raise ConfigError(f"{what}: {host!r} is not an IP address") from None
        if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
            raise ConfigError(f"{what}: port {port_text!r} is not a number from 0 to 65535")
        return cls(host, int(port_text))

    def __str__(self) -> str:
        one = f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"
        return ", ".join([one, *(str(a) for a in self.also)])


def default_state_dir() -> Path:
    """EDGE_STATE_DIR, else $XDG_STATE_HOME/edge, else ~/.local/state/edge."""
    if os.environ.get("EDGE_STATE_DIR"):
        return Path(os.environ["EDGE_STATE_DIR"])
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "edge"


@dataclass(frozen=True)
class HttpConfig:
    listen: Listen = Listen("127.0.0.1", 8080)
    #: X-Forwarded-Proto sent upstream ("https" when a TLS terminator sits in front of edge).
    scheme: str = "http"
    #: Seconds a client has to send a whole request head (slowloris defence): 408 after it.
    head_timeout: float = 10.0
    #: Seconds a keep-alive client connection may sit idle between requests.
    keepalive_timeout: float = 60.0
    #: Seconds to wait for a request-body read to make progress (bodies may stream for hours).
    body_idle_timeout: float = 300.0
    #: Seconds for one TCP connect to a sandbox; past it, 504.
    connect_timeout: float = 5.0
    #: Seconds a refused port keeps being retried (a server still starting), as E2B's edge does.
    connect_retry: float = 1.0
    #: Seconds to wait for the sandbox's response head after the request was sent; past it, 504.
    response_head_timeout: float = 300.0
    #: Seconds a write to a client or to a sandbox (splice included) may make no progress; past it
    #: the exchange (or tunnel) ends and its connections close. nginx's send_timeout is 60 s too.
    send_timeout: float = 60.0
    #: Seconds an idle pooled upstream connection is kept.
    upstream_idle_timeout: float = 15.0
    #: Idle upstream connections kept per (sandbox, address, port).
    upstream_pool_size: int = 1024
    #: Limits on a request head: 431 past either.
    max_head_bytes: int = 65536
    max_head_fields: int = 100
    #: Bytes asked of the socket per read.
    read_size: int = 65536
    #: Bodies with a Content-Length of at least this many bytes still to come move by zero-copy
    #: splice(2) between the sockets instead of through Python; 0 turns splicing off.
    splice_threshold: int = 262144
    #: Plain exchanges skip h11 (edge/http/fastlane.py); false sends every exchange through h11, a
    #: safety valve and the reference the fast lane is tested against.
    fast_lane: bool = True
    #: Seconds the handlers get to finish when the server stops (SIGTERM, SIGINT).
    shutdown_grace: float = 5.0
    #: Seconds an old generation's connections get after a reload or an upgrade (edge/supervisor.py):
    #: requests finish, keep-alive connections close after their current response, tunnels and
    #: streams run on until this deadline and are then closed.
    drain_timeout: float = 3600.0
    #: Client connections open at once; past it a new connection is closed at once (counted in
    #: edge_http_connections_rejected_total). 0: sized to the descriptor limit, (soft RLIMIT_NOFILE - 64) / 3.
    max_connections: int = 0
    #: Client connections open at once from one address. 0: a quarter of max_connections. Behind a
    #: load balancer every client shares its address: set it to max_connections there.
    max_connections_per_ip: int = 0
    #: CIDRs of proxies in front of the edge (a load balancer): their X-Forwarded-For is extended
    #: with their address instead of replaced, and only they may send a PROXY header when set.
    trusted_proxies: tuple[str, ...] = ()
    #: Connections to this listener start with a PROXY protocol header (v1 or v2), as from HAProxy,
    #: an AWS NLB or nginx's proxy_protocol: its address becomes the client's.
    proxy_protocol: bool = False


@dataclass(frozen=True)
class SynthesizedZone:
    """A zone made up for a domain that has no zone file: SOA, NS and `*` at `addresses`."""

    domain: str
    addresses: tuple[str, ...]


@dataclass(frozen=True)
class DnsConfig:
    listen: Listen = Listen("127.0.0.1", 5353)
    #: Folder of `<domain>.zone` files in BIND format.
    zones: Path = SHIPPED_ZONES
    #: Response rate limiting: answers per second per (client /24 or /56, wildcard or name); 0 turns it off.
    #: 200, as NSD's default: a spoofed flood is cut to 200 answers/s per victim network and answer kind.
    rrl_rate: int = 200
    #: Of the answers over the rate, every `rrl_slip`-th is sent truncated (TC=1) instead of dropped;
    #: 0 drops them all.
    rrl_slip: int = 2
    #: Client prefix lengths (bits) that share one RRL budget.
    rrl_ipv4_prefix: int = 24
    rrl_ipv6_prefix: int = 56
    #: Clients never rate limited (BIND's exempt-clients): loopback, where a local resolver forwards.
    rrl_exempt: tuple[str, ...] = ("127.0.0.0/8", "::1/128")
    #: Seconds a TCP connection may sit idle between queries (RFC 7766 section 6.2.3).
    tcp_idle_timeout: float = 10.0
    #: Open TCP connections at most; connections past it are closed at once.
    max_tcp_connections: int = 256
    #: Open TCP connections at most from one client address (IPv6: one /64); past it, closed at once.
    max_tcp_connections_per_ip: int = 16
    #: Bytes: the EDNS0 UDP payload size we advertise and the largest UDP answer we send (RFC 6891;
    #: 1232 avoids IP fragmentation, per DNS Flag Day 2020).
    edns_udp_size: int = 1232
    #: Seconds between checks of the zones folder for changed files (a change reloads the zones).
    zones_poll: float = 1.0
    #: Zones made up for configured domains without a zone file, and where their `*` points:
    #: `[dns.synthesize]` `"sandbox.example.com" = ["192.0.2.10", "2001:db8::10"]`. Domains under
    #: `localhost` get one at loopback unasked; any other domain without a file or an entry here
    #: refuses the start (edge/dns/README.md).
    synthesize: tuple[SynthesizedZone, ...] = ()


@dataclass(frozen=True)
class CertFiles:
    """A certificate chain and its private key, PEM files."""

    cert: Path
    key: Path


@dataclass(frozen=True)
class HttpsConfig:
    #: The HTTPS listener, e.g. "0.0.0.0:443"; empty: no HTTPS listener.
    listen: Listen | None = None
    #: Static certificate pairs, [{cert = "fullchain.pem", key = "privkey.pem"}]: each serves the names
    #: its certificate carries, and is reloaded when its files change on disk.
    certs: tuple[CertFiles, ...] = ()
    #: The HTTP listener answers 308 to the https URL for sandbox hosts.
    redirect_http: bool = False
    #: Seconds a new TLS connection has to finish its handshake (a silent one is closed after it).
    handshake_timeout: float = 10.0
    #: Ask OpenSSL for kernel TLS (kTLS): with it, large bodies and tunnels keep moving by splice(2)
    #: into the TLS socket. Used only where the kernel has it; never needed for correctness.
    ktls: bool = True
    #: Connections to the HTTPS listener start with a PROXY protocol header (before the TLS handshake).
    proxy_protocol: bool = False


@dataclass(frozen=True)
class AcmeConfig:
    #: ACME directory URL (e.g. Let's Encrypt's); empty: no automatic certificates.
    directory: str = ""
    #: Contact address given to the CA.
    email: str = ""
    #: Extra trust (a PEM bundle) for the directory's own TLS: a private or test CA.
    ca_bundle: str = ""


@dataclass(frozen=True)
class AdminConfig:
    listen: Listen = Listen("127.0.0.1", 8081)
    #: Bearer token for the admin API. Empty: EDGE_ADMIN_TOKEN, else generated once into
    #: <state_dir>/admin-token (mode 0600). A non-loopback listen address requires one configured.
    token: str = ""
    #: Largest request body the API reads, in bytes (its bodies are small JSON records); past it, 413.
    max_body_bytes: int = 65536


@dataclass(frozen=True)
class EgressConfig:
    """The `[egress]` section: the egress router for sandboxes' outbound TCP (edge/egress/README.md)."""

    #: The transparent listener sandboxes' outbound TCP is redirected to; None: no egress listener.
    listen: Listen | None = None
    #: DNS server (`ADDR` or `ADDR:PORT`, `[V6]:PORT`) edge asks for the names it dials; empty: the
    #: system's resolver (getaddrinfo: /etc/hosts, /etc/resolv.conf).
    resolver: str = ""
    #: CIDRs inside the always-denied ranges (private, loopback, link-local, CGNAT, unique-local)
    #: that edge may dial all the same, when a sandbox's policy allows the destination.
    allow_private: tuple[str, ...] = ()
    #: Seconds to read the request head (port 80) or the ClientHello (port 443). Past it, the
    #: connection is decided without a name (by CIDR only).
    sniff_timeout: float = 5.0
    #: Bytes of a request head or ClientHello read at most before deciding without a name.
    max_sniff_bytes: int = 65536
    #: Seconds for one TCP connect to a destination.
    connect_timeout: float = 5.0
    #: Seconds for one DNS query to `resolver` (asked twice before giving up).
    dns_timeout: float = 2.0
    #: Seconds a write (either way) may make no progress before the connection is closed.
    send_timeout: float = 60.0
    #: Bytes per socket read where bytes are copied (splice(2) moves the rest).
    read_size: int = 65536
    #: Egress connections open at once; past it a new one is reset. 0: no limit but the descriptors.
    max_connections: int = 0
    #: Seconds the connections in flight get when the server stops.
    shutdown_grace: float = 5.0


def parse_resolver(text: str) -> tuple[str, int] | None:
    """`ADDR`, `ADDR:PORT` or `[V6ADDR]:PORT` -> (address, port); "" -> None (the system's)."""
    if not text:
        return None
    host, port = text, 53
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ConfigError(f"egress.resolver: {text!r} is not ADDR[:PORT]")
        if rest:
            port = _resolver_port(rest[1:], text)
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
        port = _resolver_port(port_text, text)
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        raise ConfigError(f"egress.resolver: {host!r} is not an IP address") from None
    return str(ip), port


def _resolver_port(text: str, whole: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise ConfigError(f"egress.resolver: {whole!r}: port {text!r} is not a number from 1 to 65535")
    return int(text)


def private_exceptions(cidrs: tuple[str, ...]) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    """`egress.allow_private` as networks; a bad CIDR is a ConfigError naming it."""
    out = []
    for cidr in cidrs:
        try:
            out.append(ipaddress.ip_network(cidr))
        except ValueError as exc:
            raise ConfigError(f"egress.allow_private: {cidr!r} is not a CIDR ({exc})") from None
    return tuple(out)


def check_egress(config: EgressConfig) -> None:
    """The `[egress]` checks the loader cannot do from types alone (edge/egress/README.md)."""
    parse_resolver(config.resolver)
    private_exceptions(config.allow_private)
    for name in ("sniff_timeout", "connect_timeout", "dns_timeout", "send_timeout"):
        if getattr(config, name) <= 0:
            raise ConfigError(f"egress.{name}: give a number of seconds above 0")
    if config.read_size < 1024 or config.max_sniff_bytes < 1024:
        raise ConfigError("egress.read_size and egress.max_sniff_bytes: 1024 bytes at least")


@dataclass(frozen=True)
class FleetConfig:
    """The `[fleet]` section: several edges sharing a Redis catalog (edge/catalog/README.md#several-edges).

    Used only with a `redis://` catalog, by the process that serves DNS."""

    #: This edge's name in the fleet (`edge:node:<id>`). Empty: `<hostname>-<first public address>`.
    node_id: str = ""
    #: The addresses clients reach this edge at, which every edge's DNS answers with while this one
    #: serves. Empty: the HTTP and HTTPS listeners' addresses that are not a wildcard (0.0.0.0, ::).
    public_addresses: tuple[str, ...] = ()
    #: Seconds between two heartbeats (and two reads of the fleet).
    beat: float = 1.0
    #: Seconds a heartbeat lasts: an edge not heard from for this long leaves every edge's DNS answers.
    ttl: float = 5.0
    #: Seconds resolvers may cache the A/AAAA answers that name the fleet's edges.
    dns_ttl: int = 2
    #: Seconds an edge that stops stays up after marking itself draining, before it stops accepting:
    #: the other edges' DNS drops it within a beat, resolvers' caches within dns_ttl (3 = 2 + 1).
    drain_wait: float = 3.0


@dataclass(frozen=True)
class Config:
    #: Domains served: `<port>-<sandbox>.<domain>`.
    domains: tuple[str, ...] = ("sandbox.localhost",)
    #: Where state lives (the default catalog, generated tokens).
    state_dir: Path = field(default_factory=default_state_dir)
    #: Catalog URL: `sqlite:///ABSOLUTE/PATH` (default: catalog.db in state_dir).
    catalog: str = ""
    #: Seconds between checks of the catalog for changes made by other processes.
    catalog_poll: float = 0.25
    #: "json" (one JSON object per line) or "text".
    log_format: str = "json"
    #: One line per request (edge/accesslog.py): batched, never waited for, dropped and counted when
    #: the sink does not keep up.
    access_log: bool = True
    #: Where access lines go: "-" is stdout; a path is opened in append mode and reopened on SIGUSR1.
    access_log_file: str = "-"
    #: Bytes of access lines held in memory while the sink is slow; past it lines are dropped and
    #: counted (edge_access_log_dropped_total), and serving goes on.
    access_log_buffer: int = 4 * 1024 * 1024
    #: Worker processes under the supervisor (edge/supervisor.py), each with its SO_REUSEPORT share of the
    #: HTTP and HTTPS ports; worker 0 also runs DNS, the admin API and egress. 1: one worker does it all.
    workers: int = 1
    #: The port clients use in sandbox URLs (`edge host`, the 308 to https) when it is not the
    #: listener's: behind a load balancer or a port mapping. 0: the listener's own port.
    public_url_port: int = 0
    http: HttpConfig = HttpConfig()
    https: HttpsConfig = HttpsConfig()
    acme: AcmeConfig = AcmeConfig()
    dns: DnsConfig = DnsConfig()
    admin: AdminConfig = AdminConfig()
    egress: EgressConfig = EgressConfig()
    fleet: FleetConfig = FleetConfig()

    @property
    def catalog_url(self) -> str:
        return self.catalog or f"sqlite:///{self.state_dir / 'catalog.db'}"

    @property
    def public_scheme(self) -> str:
        """The scheme of sandbox URLs: https with an HTTPS listener, else http.scheme (a TLS terminator)."""
        return "https" if self.https.listen is not None else self.http.scheme

    @property
    def public_port(self) -> int:
        """The port of sandbox URLs: public_url_port, else the HTTPS listener's, else the HTTP one's."""
        if self.public_url_port:
            return self.public_url_port
        return self.https.listen.port if self.https.listen is not None else self.http.listen.port


# --- loading -----------------------------------------------------------------------------------------


def _convert(value: object, typ: object, key: str) -> object:
    if typ is Listen:
        if value == "" and key.endswith(("https.listen", "egress.listen")):
            return None  # optional listener: empty means none
        if isinstance(value, Listen):
            return value
        if isinstance(value, str) or (isinstance(value, list) and all(isinstance(v, str) for v in value)):
            return Listen.parse_many(value, key)
    elif typ is Path:
        if isinstance(value, str | Path):
            return Path(value).expanduser()
    elif typ is bool:
        if isinstance(value, bool):
            return value
    elif typ is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            if value < 0:
                raise ConfigError(f"{key}: {value!r} is negative; give a number of seconds, 0 or more")
            return float(value)
    elif typ is int:
        if isinstance(value, int) and not isinstance(value, bool):
            if value < 0:
                raise ConfigError(f"{key}: {value!r} is negative; give a whole number, 0 or more")
            return value
    elif typ is str:
        if isinstance(value, str):
            return value
    elif typing.get_origin(typ) is tuple and typing.get_args(typ)[0] is SynthesizedZone:
        if isinstance(value, Mapping):
            return tuple(_synthesized(domain, v, f'{key}."{domain}"') for domain, v in value.items())
        if isinstance(value, tuple) and all(isinstance(v, SynthesizedZone) for v in value):
            return value
    elif typing.get_origin(typ) is tuple and typing.get_args(typ)[0] is CertFiles:
        if isinstance(value, list | tuple):
            return tuple(_convert(v, CertFiles, f"{key}[{i}]") for i, v in enumerate(value))
    elif typing.get_origin(typ) is tuple:
        if isinstance(value, str):
            value = [value]
        if isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
            return tuple(value)
    elif isinstance(typ, type) and dataclasses.is_dataclass(typ) and isinstance(value, Mapping):
        return _build(typ, value, key + ".")
    expected = _EXPECTED.get(typ) or f"a valid value (expected {getattr(typ, '__name__', typ)})"
    raise ConfigError(f"{key}: {value!r} is not {expected}")


#: What a value of each type looks like, for the error naming a value of the wrong type.
_EXPECTED: dict[object, str] = {
    Listen: "an address, ADDR:PORT",
    Path: "a path",
    bool: "true or false",
    float: "a number (seconds, 0 or more)",
    int: "a whole number (0 or more)",
    str: "a string",
}


def _synthesized(domain: str, value: object, key: str) -> SynthesizedZone:
    """`"example.com" = ["192.0.2.10", "2001:db8::10"]`: one or more IP addresses (a string for one)."""
    addresses = [value] if isinstance(value, str) else value
    if not isinstance(addresses, list | tuple) or not addresses or not all(isinstance(a, str) for a in addresses):
        raise ConfigError(f"{key}: {value!r} is not a list of IP addresses")
    for address in addresses:
        try:
            ipaddress.ip_address(address)
        except ValueError:
            raise ConfigError(f"{key}: {address!r} is not an IP address") from None
    return SynthesizedZone(domain, tuple(str(ipaddress.ip_address(a)) for a in addresses))


def _build(cls: type, raw: Mapping[str, object], prefix: str = "") -> object:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - names)
    if unknown:
        raise ConfigError(f"unknown config key {prefix}{unknown[0]} (known: {', '.join(sorted(names))})")
    for f in dataclasses.fields(cls):
        if f.name not in raw and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"{prefix}{f.name} is required")
    kwargs = {}
    for name, value in raw.items():
        typ = hints[name]
        if isinstance(typ, types.UnionType):
            typ = next(t for t in typing.get_args(typ) if t is not type(None))
        kwargs[name] = _convert(value, typ, prefix + name)
    return cls(**kwargs)


def _merge(base: dict, extra: Mapping) -> dict:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def load(
    file: str | Path | None = None,
    *,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, object] | None = None,
) -> Config:
    """Build the Config from the file, the environment and flag overrides (`{"http": {"listen": ...}}`)."""
    env = os.environ if env is None else env
    raw: dict = {}
    file = file or env.get("EDGE_CONFIG") or None
    if file:
        try:
            with open(file, "rb") as fh:
                raw = tomllib.load(fh)
        except OSError as exc:
            raise ConfigError(f"config file {file}: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {file}: {exc}") from None
    if env.get("EDGE_STATE_DIR"):
        raw["state_dir"] = env["EDGE_STATE_DIR"]
    if env.get("EDGE_CATALOG"):
        raw["catalog"] = env["EDGE_CATALOG"]
    raw = _merge(raw, overrides or {})
    config = _build(Config, raw)
    assert isinstance(config, Config)
    _check(config)
    return config


def _check_fleet(fleet: FleetConfig) -> None:
    for address in fleet.public_addresses:
        try:
            ipaddress.ip_address(address)
        except ValueError:
            raise ConfigError(f"fleet.public_addresses: {address!r} is not an IP address") from None
    if fleet.beat <= 0 or fleet.ttl < 2 * fleet.beat:
        raise ConfigError("fleet.beat and fleet.ttl: beat above 0, ttl at least two beats (a late beat is no death)")
    if not 1 <= fleet.dns_ttl <= 86400:
        raise ConfigError(f"fleet.dns_ttl: {fleet.dns_ttl} is not a number of seconds from 1 to 86400")


def _check(config: Config) -> None:
    if not config.domains:
        raise ConfigError("domains: at least one domain is needed")
    for d in config.domains:
        normalize_domain(d)
    if config.log_format not in ("json", "text"):
        raise ConfigError(f"log_format: {config.log_format!r} is not 'json' or 'text'")
    if config.http.scheme not in ("http", "https"):
        raise ConfigError(f"http.scheme: {config.http.scheme!r} is not 'http' or 'https'")
    if not 1 <= config.workers <= 256:
        raise ConfigError(f"workers: {config.workers} is not a number from 1 to 256")
    if not 0 <= config.public_url_port <= 65535:
        raise ConfigError(f"public_url_port: {config.public_url_port} is not a port (0: the listener's)")
    for zone in config.dns.synthesize:  # an entry for a domain not served (--domain) is unused, not an error
        normalize_domain(zone.domain)
    check_egress(config.egress)
    _check_fleet(config.fleet)
    if config.dns.max_tcp_connections_per_ip < 1:
        raise ConfigError("dns.max_tcp_connections_per_ip must be >= 1")
    for cidr in config.dns.rrl_exempt:
        try:
            ipaddress.ip_network(cidr, strict=False)
        except ValueError:
            raise ConfigError(f"dns.rrl_exempt: {cidr!r} is not an address or CIDR") from None
    for cidr in config.http.trusted_proxies:
        try:
            ipaddress.ip_network(cidr, strict=False)
        except ValueError:
            raise ConfigError(f"http.trusted_proxies: {cidr!r} is not an address or CIDR") from None
    if config.http.max_connections < 0 or config.http.max_connections_per_ip < 0:
        raise ConfigError(
            "http.max_connections and http.max_connections_per_ip must be >= 0 (0: sized to the descriptor limit)"
        )
    if config.http.max_head_fields < 1 or config.http.max_head_bytes < 1024:
        raise ConfigError("http.max_head_fields must be >= 1 and http.max_head_bytes >= 1024")
