"""Sandbox records and the names edge accepts. Pure: imports nothing above errors."""

from __future__ import annotations

import ipaddress
import itertools
import re
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from types import MappingProxyType

from edge.config import normalize_domain as normalize_domain  # re-exported: callers spell it model.normalize_domain
from edge.errors import ValidationError

# A sandbox ID is one DNS label in lower case: 1-63 of [a-z0-9-], not starting or ending with '-'.
# IDs may contain '-' (UUIDs): hosts are split at the FIRST '-', the port being all digits.
_ID = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\Z")
_LABEL = re.compile(r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9])?\Z")
PORT_PLACEHOLDER = "${PORT}"


def validate_id(sandbox_id: str) -> str:
    if not isinstance(sandbox_id, str) or not _ID.match(sandbox_id):
        raise ValidationError(
            "id",
            f"{sandbox_id!r} is not a sandbox ID: 1-63 lower-case letters, digits and '-',"
            " not starting or ending with '-'",
        )
    return sandbox_id


def validate_address(address: object) -> str:
    """An IPv4 or IPv6 address where the sandbox's ports are reachable from the edge, normalized.

    Only writes call this: a record already in a catalog is loaded as it is (see `address_refusal`).
    """
    if not isinstance(address, str):
        raise ValidationError("address", f"{address!r} is not an IP address")
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        raise ValidationError("address", f"{address!r} is not an IP address") from None
    refusal = address_refusal(ip)
    if refusal:
        raise ValidationError("address", f"{address!r} {refusal}")
    return str(ip)


_THIS_NETWORK = ipaddress.ip_network("0.0.0.0/8")
_BROADCAST = ipaddress.ip_address("255.255.255.255")
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")


def address_refusal(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    """Why `ip` cannot be a sandbox's address, or None. Pure.

    The edge connects to whatever address a record names, so an address that is no sandbox turns the
    public edge into a way in: 0.0.0.0 and :: reach the edge's own host (its admin API among the
    rest), 169.254.169.254 is the cloud metadata service, and multicast, broadcast and zone-scoped
    link-local addresses are not one host. Loopback (127.0.0.2) stays valid: tests and the quick start
    put sandboxes there, and the HTTP side refuses requests aimed at its own listeners.
    """
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.scope_id:
            return "has an IPv6 zone ID (%...); give an address without one"
        # ::ffff:a.b.c.d is the IPv4 host a.b.c.d to a dual-stack socket: judge it as that host.
        if ip.ipv4_mapped is not None:
            reason = address_refusal(ip.ipv4_mapped)
            return f"is {ip.ipv4_mapped} (IPv4-mapped), which {reason}" if reason else None
        # ::a.b.c.d (RFC 4291 section 2.5.5.1: "deprecated"); :: and ::1 are judged below.
        if ip in _IPV4_COMPATIBLE and int(ip) > 1:
            return "is an IPv4-compatible IPv6 address (deprecated, RFC 4291 2.5.5.1); give the IPv4 address"
    elif ip in _THIS_NETWORK:
        # RFC 1122 section 3.2.1.3: 0.0.0.0/8 is "this host on this network", never a destination.
        return "is unspecified (0.0.0.0/8 means this host, not a sandbox)"
    if ip.is_unspecified:
        return "is unspecified (:: means this host, not a sandbox)"
    if ip == _BROADCAST:
        return "is the broadcast address, not one host"
    if ip.is_multicast:
        return "is a multicast address, not one host"
    if ip.is_link_local:
        return "is link-local (169.254.0.0/16 or fe80::/10, where the cloud metadata service lives)"
    return None


def validate_port(port: object) -> int:
    text = str(port)
    if not text.isdigit() or text.startswith("0") or not 1 <= int(text) <= 65535:
        raise ValidationError("port", f"{port!r} is not a port number from 1 to 65535")
    return int(text)


def validate_mask(mask: object) -> str | None:
    """A Host mask such as `localhost:${PORT}`: printable ASCII, no spaces, no control characters."""
    if mask is None or mask == "":
        return None
    if not isinstance(mask, str) or not mask.isascii() or not mask.isprintable() or " " in mask:
        raise ValidationError("mask_request_host", f"{mask!r} is not a valid Host value")
    probe = mask.replace(PORT_PLACEHOLDER, "1")
    if "$" in probe or "/" in probe or "@" in probe:
        raise ValidationError("mask_request_host", f"{mask!r}: only ${{PORT}} may be substituted; no '/', '@' or '$'")
    return mask


def validate_max_connections(value: object) -> int | None:
    """None (no limit) or a whole number from 1 to 1,000,000."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 1_000_000:
        raise ValidationError("max_connections", f"{value!r} is not a whole number from 1 to 1000000")
    return value


# --- outbound policy (edge/egress/README.md): `internet_access`, `allow_out`, `deny_out` -------------

#: Entries per list at most: the decision scans CIDRs linearly, and a policy is a short human list.
MAX_ENTRIES = 512
#: A label of a host name an outbound policy names (a sandbox may reach `_dmarc.example.com` too).
_HOST_LABEL = re.compile(r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?\Z")


@dataclass(frozen=True, slots=True)
class Policy:
    """What a sandbox may reach. The catalog's `Sandbox` carries the same three fields."""

    internet_access: bool = True
    allow_out: tuple[str, ...] = ()
    deny_out: tuple[str, ...] = ()


def normalize_hostname(text: str) -> str | None:
    """A host name in lower case without a trailing dot, or None when `text` is not one.

    IP literals are not names (a Host of `192.0.2.1` is decided by CIDR, as is a missing one)."""
    name = text.lower()
    if name.endswith("."):
        name = name[:-1]
    if not name or len(name) > 253 or not name.isascii():
        return None
    labels = name.split(".")
    if not all(_HOST_LABEL.match(label) for label in labels):
        return None
    if labels[-1].isdigit():
        return None  # 192.0.2.1 and 1.2.3.4.5 are no domains
    return name


def validate_entry(field: str, entry: object) -> str:
    """One `allow_out` / `deny_out` entry in its normal form: an IP, a CIDR, `name` or `*.name`."""
    if not isinstance(entry, str) or not entry.strip():
        raise ValidationError(field, f"{entry!r} is not an IP, a CIDR or a domain")
    text = entry.strip()
    if "/" in text or ":" in text or text.replace(".", "").isdigit():
        try:
            net = ipaddress.ip_network(text)
        except ValueError as exc:
            if "has host bits set" in str(exc):
                fixed = ipaddress.ip_network(text, strict=False)
                raise ValidationError(field, f"{text!r} has host bits set: did you mean {fixed}?") from None
            raise ValidationError(field, f"{text!r} is not an IP address or a CIDR") from None
        if isinstance(net, ipaddress.IPv6Network) and "%" in text:
            raise ValidationError(field, f"{text!r} has an IPv6 zone ID")
        return str(net.network_address) if net.num_addresses == 1 else str(net)
    wildcard = text.startswith("*.")
    name = normalize_hostname(text[2:] if wildcard else text)
    if name is None or "*" in text[2 if wildcard else 0 :]:
        raise ValidationError(
            field, f"{text!r} is not an IP, a CIDR or a domain (`example.com`, or `*.example.com` for its subdomains)"
        )
    if wildcard and "." not in name:
        raise ValidationError(field, f"{text!r} would match every name under a top-level domain")
    return f"*.{name}" if wildcard else name


def validate_list(field: str, entries: object) -> tuple[str, ...]:
    """A whole list in normal form, duplicates dropped, order kept. The limit counts the entries as
    given, before duplicates are dropped: it bounds the work, and it is what the API's schema says
    (maxItems)."""
    if isinstance(entries, str) or not isinstance(entries, Iterable):
        raise ValidationError(field, f"{entries!r} is not a list of IPs, CIDRs and domains")
    given = list(itertools.islice(entries, MAX_ENTRIES + 1))
    if len(given) > MAX_ENTRIES:
        raise ValidationError(field, f"more than {MAX_ENTRIES} entries: at most {MAX_ENTRIES}")
    return tuple(dict.fromkeys(validate_entry(field, e) for e in given))


def validate_policy(internet_access: object, allow_out: object, deny_out: object) -> Policy:
    if not isinstance(internet_access, bool):
        raise ValidationError("internet_access", f"{internet_access!r} is not true or false")
    return Policy(internet_access, validate_list("allow_out", allow_out), validate_list("deny_out", deny_out))


@dataclass(frozen=True, slots=True)
class Sandbox:
    id: str
    address: str
    public: bool = True
    mask_request_host: str | None = None
    #: Concurrent client requests and tunnels at most (None: no limit); past it, 429.
    max_connections: int | None = None
    #: SHA-256 (hex) of the traffic access token of a private sandbox. The token itself is never stored.
    token_hash: str | None = None
    created_at: float = 0.0
    updated_at: float = 0.0
    #: Outbound policy, read by the egress router (edge/egress/README.md): false denies every
    #: destination but those in `allow_out`.
    internet_access: bool = True
    #: IPs, CIDRs, `name` and `*.name` the sandbox may reach; wins over `deny_out`. Normal form.
    allow_out: tuple[str, ...] = ()
    #: IPs, CIDRs, `name` and `*.name` the sandbox may not reach. Normal form.
    deny_out: tuple[str, ...] = ()

    def to_json(self) -> dict[str, object]:
        """The record as users see it: never the token hash."""
        doc = asdict(self)
        del doc["token_hash"]
        doc["allow_out"], doc["deny_out"] = list(self.allow_out), list(self.deny_out)
        return doc

    def public_host(self, port: int, domain: str, public_port: int | None = None, scheme: str = "http") -> str:
        """The host clients use for `port` (E2B's getHost): `<port>-<id>.<domain>[:<public_port>]`, the
        port left out when it is the scheme's own (80 for http, 443 for https)."""
        host = f"{port}-{self.id}.{domain}"
        default = 443 if scheme == "https" else 80
        return host if public_port in (None, default) else f"{host}:{public_port}"


#: The name ACME DNS-01 validates: `_acme-challenge.<name>` (RFC 8555 section 8.4).
CHALLENGE_LABEL = "_acme-challenge"
#: Seconds a challenge value is served after it was written, unless removed before: a crashed ACME
#: run leaves nothing in the zone for longer than this.
CHALLENGE_LIFETIME = 3600.0
#: A DNS-01 value is the base64url SHA-256 of a key authorization (43 characters); other clients'
#: values are taken if they are base64url too, up to one TXT string (255 bytes).
_CHALLENGE_VALUE = re.compile(r"[A-Za-z0-9_-]{1,255}\Z")


@dataclass(frozen=True, slots=True, order=True)
class Challenge:
    """One TXT value served at `fqdn` (lower case, no trailing dot) until `expires_at` (Unix seconds)."""

    fqdn: str
    value: str
    expires_at: float


def challenge_domain(fqdn: object, domains: Iterable[str]) -> tuple[str, str]:
    """`(fqdn, domain)`: the name normalized (lower case, no trailing dot) and the configured domain it is
    under. Only `_acme-challenge.<domain>` or `_acme-challenge.<name>.<domain>` is accepted."""
    if not isinstance(fqdn, str) or not fqdn.isascii():
        raise ValidationError("fqdn", f"{fqdn!r} is not a domain name")
    name = fqdn[:-1].lower() if fqdn.endswith(".") else fqdn.lower()
    labels = name.split(".")
    if len(name) > 253 or not all(_LABEL.match(label) for label in labels):
        raise ValidationError("fqdn", f"{fqdn!r} is not a domain name")
    if labels[0] != CHALLENGE_LABEL:
        raise ValidationError("fqdn", f"{fqdn!r} does not start with {CHALLENGE_LABEL}.")
    for domain in sorted((normalize_domain(d) for d in domains), key=len, reverse=True):
        if name.endswith("." + domain):
            return name, domain
    raise ValidationError("fqdn", f"{fqdn!r} is not under a domain this edge serves ({', '.join(domains)})")


def validate_challenge_value(value: object) -> str:
    if not isinstance(value, str) or not _CHALLENGE_VALUE.match(value):
        raise ValidationError("value", f"{value!r} is not a DNS-01 value: 1-255 base64url characters")
    return value


class Snapshot:
    """An immutable view of the whole catalog at one moment. Readers never lock.

    `challenges`: the ACME DNS-01 TXT values the DNS server serves, sorted (so two snapshots with the
    same values compare equal)."""

    __slots__ = ("by_id", "version", "challenges")

    def __init__(
        self, sandboxes: Iterable[Sandbox] = (), version: int = 0, challenges: Iterable[Challenge] = ()
    ) -> None:
        self.by_id: Mapping[str, Sandbox] = MappingProxyType({s.id: s for s in sandboxes})
        self.version = version
        self.challenges: tuple[Challenge, ...] = tuple(sorted(challenges))

    def get(self, sandbox_id: str) -> Sandbox | None:
        return self.by_id.get(sandbox_id)

    def __len__(self) -> int:
        return len(self.by_id)
