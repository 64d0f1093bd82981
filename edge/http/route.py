"""Host -> (port, sandbox ID). Pure: bytes in, a route or a BadHost out.

A public host is `<port>-<id>.<domain>[:<edgeport>]`. The first label is split at its FIRST '-':
everything before is the port (decimal, 1-65535, no leading zero), everything after is the sandbox ID,
so IDs that contain '-' (UUIDs) work. E2B drops what follows a second '-'; we keep it, which is the
only reading that lets such IDs exist.
"""

from __future__ import annotations

import re

from edge.errors import BadHost

_ID = re.compile(rb"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\Z")
_EDGE_PORT = re.compile(rb"[0-9]{1,5}\Z")


class Router:
    """Routes hosts for a fixed set of domains. Build once per configuration."""

    __slots__ = ("_suffixes", "_domains")

    def __init__(self, domains: tuple[str, ...]) -> None:
        self._domains = domains
        # Longest first, so a domain nested in another (a.example, b.a.example) is matched exactly.
        self._suffixes = sorted(((b"." + d.encode("ascii")) for d in domains), key=len, reverse=True)

    def route(self, host: bytes) -> tuple[int, str]:
        """Split a Host header value into (port, sandbox ID), or raise BadHost saying what is wrong."""
        if not host:
            raise BadHost("The request has no Host header")
        name = host.lower()
        if name.startswith(b"["):
            raise BadHost("An IP address is not a sandbox host")
        colon = name.rfind(b":")
        if colon >= 0:
            if not _EDGE_PORT.match(name, colon + 1):
                raise BadHost("The Host header has an invalid port")
            name = name[:colon]
        if name.endswith(b"."):
            name = name[:-1]
        for suffix in self._suffixes:
            if name.endswith(suffix):
                label = name[: -len(suffix)]
                break
        else:
            raise BadHost(f"The host is not under a domain this edge serves ({', '.join(self._domains)})")
        if b"." in label:
            raise BadHost("The host must be <port>-<sandbox>.<domain>, with no further labels")
        port_text, dash, sandbox = label.partition(b"-")
        if not dash:
            raise BadHost("The host must start with <port>-<sandbox>")
        if not port_text.isdigit() or port_text[0] == 48 or len(port_text) > 5 or int(port_text) > 65535:
            raise BadHost("The port in the host must be a number from 1 to 65535 without leading zeros")
        if not _ID.match(sandbox):
            raise BadHost("The sandbox ID in the host is empty or not a valid DNS label")
        return int(port_text), sandbox.decode("ascii")


def split_target(target: bytes) -> tuple[bytes | None, bytes]:
    """Split a request target into (authority or None, origin-form target).

    RFC 9112 3.2.2: an absolute-form target (`http://host/path`) carries the authority; the server
    uses it and must still see the Host header agree with it (we enforce agreement, see conn).
    """
    if target[:1] == b"/" or target == b"*":
        return None, target
    lower = target[:8].lower()
    if lower.startswith(b"http://"):
        rest = target[7:]
    elif lower.startswith(b"https://"):
        rest = target[8:]
    else:
        raise BadHost("The request target is neither a path nor an absolute http URL")
    slash = rest.find(b"/")
    query = rest.find(b"?")
    cut = min(i for i in (slash, query, len(rest)) if i >= 0)
    authority, path = rest[:cut], rest[cut:]
    if b"@" in authority:
        raise BadHost("The request target must not carry user information")
    if not path.startswith(b"/"):
        path = b"/" + path
    return authority, path
