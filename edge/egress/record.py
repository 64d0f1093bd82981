"""The facts of one egress connection (one owner: the connection's handler), and its log line. Pure.

One JSON line per connection, when it ends:

    {"time": "...", "log": "egress", "sandbox": "demo", "client": "10.77.0.2", "dst": "198.51.100.10",
     "port": 443, "name": "api.example.com", "via": "sni", "decision": "allow",
     "rule": "allow_out *.example.com", "upstream": "198.51.100.10", "bytes_out": 517, "bytes_in": 4180,
     "duration_ms": 12.5, "error": null}

`dst`/`port`: where the sandbox was going (SO_ORIGINAL_DST). `name`: the Host (port 80) or SNI (443)
read, null without one. `via`: how the name was read: `host`, `sni`, or `none` (another port, no name
sent, or none needed). `decision`: allow, deny, error (allowed, but no destination could be reached:
`error` says why). `upstream`: the address edge dialled (a name's address, or `dst`). `bytes_out`:
sandbox -> destination; `bytes_in`: destination -> sandbox.
"""

from __future__ import annotations

import json
import time

FIELDS = (
    "time",
    "log",
    "sandbox",
    "client",
    "dst",
    "port",
    "name",
    "via",
    "decision",
    "rule",
    "upstream",
    "bytes_out",
    "bytes_in",
    "duration_ms",
    "error",
)


class EgressRecord:
    __slots__ = (
        "client",
        "sandbox",
        "dst",
        "port",
        "name",
        "via",
        "decision",
        "rule",
        "upstream",
        "bytes_out",
        "bytes_in",
        "started",
        "duration_ms",
        "error",
    )

    def __init__(self, client: str, started: float) -> None:
        self.client = client
        self.started = started
        self.sandbox: str | None = None
        self.dst: str | None = None
        self.port: int | None = None
        self.name: str | None = None
        self.via = "none"
        self.decision = "deny"
        self.rule = ""
        self.upstream: str | None = None
        self.bytes_out = 0
        self.bytes_in = 0
        self.duration_ms = 0.0
        self.error: str | None = None

    def count_out(self, n: int) -> None:
        self.bytes_out += n

    def count_in(self, n: int) -> None:
        self.bytes_in += n

    def to_dict(self) -> dict[str, object]:
        t = time.time()
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1000):03d}Z"
        return {
            "time": stamp,
            "log": "egress",
            "sandbox": self.sandbox,
            "client": self.client,
            "dst": self.dst,
            "port": self.port,
            "name": self.name,
            "via": self.via,
            "decision": self.decision,
            "rule": self.rule,
            "upstream": self.upstream,
            "bytes_out": self.bytes_out,
            "bytes_in": self.bytes_in,
            "duration_ms": round(self.duration_ms, 3),
            "error": self.error,
        }


def json_line(doc: dict[str, object]) -> bytes:
    """One line, ASCII (ensure_ascii escapes U+2028 and the rest), whatever a name held."""
    return json.dumps(doc, separators=(",", ":")).encode() + b"\n"
