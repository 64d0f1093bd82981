"""Zone files: BIND-format text in, `Zone` out, with every error's file and line. Pure but for reading files.

A zone file is read line by line by a small tokenizer of our own, so that every error carries the
file and line where it was made; the record data of each line is handed to dnslib for its type and
the record is packed once, so anything dnslib could not put on the wire is refused here rather than
at query time. Supported: `$ORIGIN`, `$TTL`, `@`, relative and absolute names, blank owners (the
previous owner), TTL and class in either order, `( ... )` spanning lines, `;` comments, quoted
strings, TTL units (`1h`, `2d`). Not supported: `$INCLUDE`, `$GENERATE`, classes other than IN.

`load_zones` is what the server calls: one `<domain>.zone` per configured domain, a synthesized zone
for a domain without a file where one is allowed (under `localhost`, or named in `[dns.synthesize]`),
and on reload the previous zone kept for a file with an error or a file that is gone.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from dnslib import AAAA as AAAA_RD
from dnslib import CLASS, QTYPE, RDMAP, RR, SOA, DNSLabel
from dnslib import A as A_RD
from dnslib.label import DNSBuffer

from edge.config import Config
from edge.dns.zone import Key, Zone, Zones, key_of
from edge.errors import ConfigError, ZoneError

logger = logging.getLogger("edge.dns")

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


# --- parsing -----------------------------------------------------------------------------------------


def _tokens(text: str, filename: str, errors: list[ZoneError]):
    """Yield (line, tokens, blank_owner) per logical record; tokens are (text, quoted) pairs."""
    tokens: list[tuple[str, bool]] = []
    start = 0
    depth = 0
    blank_owner = False
    for lineno, line in enumerate(text.splitlines(), 1):
        if depth == 0:
            start, tokens, blank_owner = lineno, [], line[:1] in (" ", "\t")
        i, n = 0, len(line)
        while i < n:
            c = line[i]
            if c in " \t\r":
                i += 1
            elif c == ";":
                break
            elif c == "(":
                depth += 1
                i += 1
            elif c == ")":
                if depth == 0:
                    errors.append(ZoneError(filename, lineno, "')' without '('"))
                else:
                    depth -= 1
                i += 1
            elif c == '"':
                j, buf = i + 1, []
                while j < n and line[j] != '"':
                    if line[j] == "\\" and j + 1 < n:
                        j += 1
                    buf.append(line[j])
                    j += 1
                if j >= n:
                    errors.append(ZoneError(filename, lineno, "unterminated quoted string"))
                tokens.append(("".join(buf), True))
                i = j + 1
            else:
                j = i
                while j < n and line[j] not in ' \t\r;()"':
                    j += 1
                tokens.append((line[i:j], False))
                i = j
        if depth == 0 and tokens:
            yield start, tokens, blank_owner
    if depth:
        errors.append(ZoneError(filename, start, "'(' without ')'"))
        if tokens:
            yield start, tokens, blank_owner


def _name(text: str, origin: DNSLabel | None) -> DNSLabel:
    """A domain name from zone text: absolute if it ends in '.', else relative to origin ('@' is origin)."""
    if text == "@":
        if origin is None:
            raise ValueError("'@' used with no $ORIGIN")
        return origin
    absolute = text.endswith(".")
    body = text[:-1] if absolute else text
    if not text.isascii():
        raise ValueError(f"{text!r} is not ASCII (write internationalised names in punycode, xn--...)")
    labels = tuple(part.encode() for part in body.split(".")) if body else ()
    if any(not label for label in labels):
        raise ValueError(f"{text!r} has an empty label")
    if any(len(label) > 63 for label in labels):
        raise ValueError(f"{text!r} has a label longer than 63 bytes")
    if not absolute:
        if origin is None:
            raise ValueError(f"relative name {text!r} with no $ORIGIN")
        labels += origin.label
    if sum(len(label) + 1 for label in labels) + 1 > 255:
        raise ValueError(f"{text!r} is longer than 255 bytes")
    return DNSLabel(labels)


def _ttl(text: str) -> int:
    """`3600`, `1h`, `1h30m`: seconds (RFC 2181 section 8: 0 to 2**31 - 1)."""
    total, num = 0, ""
    for c in text.lower():
        if c.isdigit():
            num += c
        elif c in _UNITS and num:
            total, num = total + int(num) * _UNITS[c], ""
        else:
            raise ValueError(f"{text!r} is not a TTL")
    total += int(num) if num else 0
    if not text or not text[0].isdigit() or total > 2**31 - 1:
        raise ValueError(f"{text!r} is not a TTL from 0 to 2147483647")
    return total


def _is_ttl(text: str) -> bool:
    return bool(text) and text[0].isdigit()


def parse_zone(text: str, *, origin: str | None, filename: str = "<zone>") -> Zone:
    """Parse a zone; raise ZoneError for the first error (all of them are in `.details['errors']`)."""
    zone, errors = _parse(text, origin, filename)
    if errors:
        first = errors[0]
        first.details["errors"] = errors
        raise first
    assert zone is not None
    return zone


def _parse(text: str, origin_text: str | None, filename: str) -> tuple[Zone | None, list[ZoneError]]:
    errors: list[ZoneError] = []
    origin = DNSLabel(tuple(p.encode() for p in origin_text.rstrip(".").split("."))) if origin_text else None
    default_ttl: int | None = None
    last_ttl: int | None = None
    owner: DNSLabel | None = None
    records: list[tuple[int, RR]] = []

    def bad(line: int, reason: str) -> None:
        errors.append(ZoneError(filename, line, reason))

    for line, toks, blank_owner in _tokens(text, filename, errors):
        words = [t for t, _ in toks]
        try:
            if not toks[0][1] and words[0].startswith("$"):
                directive = words[0].upper()
                if directive == "$ORIGIN" and len(words) == 2:
                    if not words[1].endswith(".") and origin is None:
                        raise ValueError("$ORIGIN must be an absolute name (end with '.')")
                    origin = _name(words[1], origin)
                elif directive == "$TTL" and len(words) == 2:
                    default_ttl = _ttl(words[1])
                elif directive in ("$ORIGIN", "$TTL"):
                    raise ValueError(f"{directive} takes exactly one value")
                else:
                    raise ValueError(f"{words[0]} is not supported (only $ORIGIN and $TTL)")
                continue
            rest = list(toks)
            if blank_owner:
                if owner is None:
                    raise ValueError("record with no owner name (a blank owner needs a previous record)")
            else:
                owner = _name(rest.pop(0)[0], origin)
            ttl, rclass = None, None
            while rest and not rest[0][1]:
                word = rest[0][0]
                if ttl is None and _is_ttl(word):
                    ttl = _ttl(word)
                elif rclass is None and word.upper() in ("IN", "CH", "HS", "CS"):
                    rclass = word.upper()
                else:
                    break
                rest.pop(0)
            if not rest:
                raise ValueError("record with no type")
            rtype = rest.pop(0)[0].upper()
            if rclass not in (None, "IN"):
                raise ValueError(f"class {rclass} is not supported (only IN)")
            if rtype not in RDMAP or rtype in ("RRSIG", "NSEC", "DNSKEY", "DS"):
                raise ValueError(f"record type {rtype!r} is not supported")
            if not rest:
                raise ValueError(f"{rtype} record with no data")
            if ttl is None:
                ttl = default_ttl if default_ttl is not None else last_ttl
            if ttl is None:
                raise ValueError("no TTL: give one on the record or set $TTL")
            last_ttl = ttl
            rdata = _rdata(rtype, rest, origin)
            rr = RR(owner, getattr(QTYPE, rtype), CLASS.IN, ttl, rdata)
            rr.pack(DNSBuffer())  # anything dnslib cannot encode is refused now, not at query time
            records.append((line, rr))
        except ZoneError as exc:
            errors.append(exc)
        except Exception as exc:  # dnslib raises many types for bad data; all mean "this line is wrong"
            bad(line, _reason(exc))

    end = max(1, text.count("\n"))
    soas = [(line, rr) for line, rr in records if rr.rtype == QTYPE.SOA]
    if not soas:
        bad(end, "no SOA record")
        return None, errors
    soa_line, soa = soas[0]
    for line, _ in soas[1:]:
        bad(line, "a second SOA record (a zone has exactly one)")
    apex = soa.rname
    if origin_text is not None and key_of(apex) != key_of(origin):
        bad(soa_line, f"SOA owner {apex} is not the zone's domain {origin_text}.")
        return None, errors
    apex_key = key_of(apex)
    nodes: dict[Key, dict[int, list[RR]]] = {}
    for line, rr in records:
        key = key_of(rr.rname)
        if key[len(key) - len(apex_key) :] != apex_key or len(key) < len(apex_key):
            bad(line, f"{rr.rname} is outside the zone {apex}")
            continue
        node = nodes.setdefault(key, {})
        if (rr.rtype == QTYPE.CNAME and node) or (QTYPE.CNAME in node):
            bad(line, f"{rr.rname} has a CNAME and other data (RFC 1034 section 3.6.2)")
            continue
        rrset = node.setdefault(rr.rtype, [])
        if rrset and rrset[0].ttl != rr.ttl:
            rr.ttl = rrset[0].ttl  # RFC 2181 section 5.2: one TTL per RRset; the first one wins
        if rr not in rrset:
            rrset.append(rr)
    apex_node = nodes.get(apex_key, {})
    if QTYPE.CNAME in apex_node:
        bad(end, "a CNAME at the apex")
    if QTYPE.NS not in apex_node:
        bad(end, f"no NS record at the apex {apex}")
    if errors:
        return None, errors
    names = set()
    for key in nodes:
        for i in range(len(key) - len(apex_key) + 1):
            names.add(key[i:])
    return Zone(apex=apex, soa=soa, nodes=nodes, names=frozenset(names), source=filename), errors


def _rdata(rtype: str, tokens: list[tuple[str, bool]], origin: DNSLabel | None):
    words = [t for t, _ in tokens]
    if rtype in ("A", "AAAA"):
        if len(words) != 1:
            raise ValueError(f"{rtype} takes one address")
        ip = ipaddress.ip_address(words[0])
        if (ip.version == 4) != (rtype == "A"):
            raise ValueError(f"{words[0]} is not an IPv{4 if rtype == 'A' else 6} address")
        return (A_RD if rtype == "A" else AAAA_RD)(str(ip))
    if rtype in ("NS", "CNAME", "PTR", "DNAME"):
        if len(words) != 1:
            raise ValueError(f"{rtype} takes one name")
        return RDMAP[rtype](_name(words[0], origin))
    if rtype == "SOA":
        if len(words) != 7:
            raise ValueError("SOA takes MNAME RNAME SERIAL REFRESH RETRY EXPIRE MINIMUM")
        serial = int(words[2])
        if not 0 <= serial <= 2**32 - 1:
            raise ValueError(f"SOA serial {words[2]} is not from 0 to 4294967295")
        return SOA(_name(words[0], origin), _name(words[1], origin), [serial] + [_ttl(w) for w in words[3:]])
    if rtype == "MX":
        if len(words) != 2 or not words[0].isdigit():
            raise ValueError("MX takes PREFERENCE NAME")
        return RDMAP["MX"](_name(words[1], origin), int(words[0]))
    return RDMAP[rtype].fromZone(words, origin)


def _reason(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:200]


# --- files -------------------------------------------------------------------------------------------


def zone_path(folder: Path, domain: str) -> Path:
    return Path(folder) / f"{domain}.zone"


def load_file(path: str | os.PathLike, domain: str | None = None) -> Zone:
    """Read and parse one zone file; the domain defaults to the file's name without `.zone`."""
    name = os.fspath(path)
    if domain is None and name.endswith(".zone"):
        domain = os.path.basename(name)[: -len(".zone")]
    try:
        with open(name, encoding="utf-8") as fh:
            text = fh.read()
    except OSError as exc:
        raise ZoneError(name, 0, f"cannot read: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ZoneError(name, 0, "not UTF-8 text") from None
    return parse_zone(text, origin=domain, filename=name)


def synthesize(domain: str, addresses: Iterable[str], ttl: int = 60) -> Zone:
    """A zone for a domain with no file: SOA, NS `ns.<domain>`, and `*` plus `ns` at the given addresses."""
    lines = [
        f"$ORIGIN {domain}.",
        f"$TTL {ttl}",
        f"@ SOA ns hostmaster 1 3600 600 86400 {ttl}",
        "@ NS ns",
    ]
    for address in addresses:
        rtype = "AAAA" if ":" in address else "A"
        lines += [f"ns {rtype} {address}", f"* {rtype} {address}"]
    return parse_zone("\n".join(lines) + "\n", origin=domain, filename=f"<synthesized {domain}>")


def loopback_addresses(http_host: str) -> list[str]:
    """Where a synthesized `*.localhost` zone points: the HTTP listener when it listens on a loopback
    address (127.0.0.2 ...), else 127.0.0.1 and ::1. RFC 6761 section 6.3: localhost names resolve to
    loopback, whatever the listener (a public address or all interfaces)."""
    try:
        if ipaddress.ip_address(http_host).is_loopback:
            return [http_host]
    except ValueError:  # "localhost"
        pass
    return ["127.0.0.1", "::1"]


def synthesized_addresses(config: Config, domain: str) -> tuple[str, ...] | None:
    """Where a synthesized zone for `domain` points, or None when the domain needs a zone file.

    Only two kinds of domain get one: those the config names in `[dns.synthesize]`, with their
    addresses, and those under `localhost`, at loopback. A public domain never silently answers
    with loopback addresses (issue 16): it has a zone file or the config says where it points."""
    name = domain.rstrip(".").lower()
    for entry in config.dns.synthesize:
        if entry.domain.rstrip(".").lower() == name:
            return entry.addresses
    if name == "localhost" or name.endswith(".localhost"):
        return tuple(loopback_addresses(config.http.listen.host))
    return None


def check_zone_files(config: Config) -> None:
    """Refuse the start (ConfigError) when a configured domain has no zone file and gets no
    synthesized zone. Cheap (a stat per domain): edge.lifecycle calls it before anything binds."""
    for domain in config.domains:
        path = zone_path(config.dns.zones, domain)
        if not path.exists() and synthesized_addresses(config, domain) is None:
            raise ConfigError(_no_file(domain, path))


def _no_file(domain: str, path: Path) -> str:
    return (
        f"domain {domain}: no zone file {path}; write one (`edge zone check` checks it), or name the"
        f' addresses of a synthesized zone in the config: [dns.synthesize] "{domain}" = ["ADDRESS", ...]'
    )


@dataclass(frozen=True)
class Loaded:
    """The zones from the files, and the domains whose previous zone was kept on the last reload,
    each with the error that kept it (so the next reload warns only about a new error)."""

    zones: Zones
    kept: Mapping[str, str] = field(default_factory=dict)


def load_zones(config: Config, previous: Loaded | None = None) -> Loaded:
    """Load `<dns.zones>/<domain>.zone` for each configured domain; files for other domains are never read.

    At the start (no `previous`): a bad file raises ZoneError, and a domain without a file gets a
    synthesized zone (synthesized_addresses) or raises ConfigError.

    On reload (`previous`): a zone read from a file is replaced only by a file that loads. A file
    that fails to parse, or that disappeared (moved away, deleted by a deploy that writes it again),
    keeps the previous zone, with a warning logged once per error (not on every reload) and a line
    when the file loads again. A synthesized zone is made again until a file for its domain appears."""
    zones = []
    kept: dict[str, str] = {}
    for domain in config.domains:
        path = zone_path(config.dns.zones, domain)
        old = previous.zones.by_key.get(key_of(DNSLabel(domain))) if previous else None
        try:
            if path.exists():
                zone = load_file(path, domain)  # a file gone since the stat raises ZoneError too
                logger.info("zone %s loaded from %s (serial %d, %d records)", domain, path, zone.serial, zone.records)
                if previous is not None and domain in previous.kept:
                    logger.info("zone %s: %s loads again", domain, path)
            elif old is not None and old.source == os.fspath(path):
                # Issue 16: a file that disappears is a broken file, never a cue to synthesize (on a
                # public domain, a deploy that deletes and writes the file would publish loopback).
                raise ZoneError(os.fspath(path), 0, "the file is gone (moved away or deleted)")
            else:
                addresses = synthesized_addresses(config, domain)
                if addresses is None:
                    raise ConfigError(_no_file(domain, path))
                zone = synthesize(domain, addresses)
                logger.info("zone %s: no file %s, synthesized SOA, NS and * -> %s", domain, path, ", ".join(addresses))
        except ZoneError as exc:
            if old is None:
                raise
            kept[domain] = exc.message
            if previous is None or previous.kept.get(domain) != exc.message:
                logger.warning(
                    "zone %s not reloaded, keeping the previous one (serial %d): %s",
                    domain,
                    old.serial,
                    exc.message,
                )
            zone = old
        zones.append(zone)
    return Loaded(Zones(zones), kept)


def check_files(paths: list[str]) -> int:
    """`edge zone check FILE...`: `FILE: ok, serial N, M records` per good file, `FILE:LINE: reason` per
    error (on stderr); 0 if all files are good, else 1."""
    status = 0
    for path in paths:
        try:
            zone = load_file(path)
        except ZoneError as exc:
            status = 1
            errors = exc.details.get("errors")
            for err in errors if isinstance(errors, list) else [exc]:
                print(err.message, file=sys.stderr)
        else:
            print(f"{path}: ok, serial {zone.serial}, {zone.records} records")  # a zone has 2 at least: SOA and NS
    return status
