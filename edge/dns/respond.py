"""One message in, what to send and what to count out: the step UDP and TCP share. Pure (the caller
passes the time; the rate limiter is plain state).

`respond()` tries the templates first (edge.dns.fastpath), else lets edge.dns.answer decide; then,
for UDP, asks the rate limiter, and only then has an answer packed (the costly step), so a flood over
the rate costs a lookup, not the packing. It returns a `Response`: the bytes to send (None: send
nothing; over TCP, close, since the stream may be out of step), the reply's rcode for the counters,
whether the rate limiter dropped or truncated it, and the problem to log for a malformed message.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import NamedTuple

from edge.dns.answer import plan, truncate
from edge.dns.rrl import DROP, SEND, RateLimiter
from edge.dns.zone import Zones

#: The templates' answer function (FastPath.answer): `(reply, rrl_key, None)` or None.
FastAnswer = Callable[[bytes], "tuple[bytes, Hashable, None] | None"]


class Response(NamedTuple):
    reply: bytes | None  # what to send; None: nothing
    rcode: int  # the reply's rcode (for edge_dns_queries_total); -1 when there is no reply
    limited: bool  # the rate limiter dropped it (reply None) or truncated it
    problem: str | None  # a malformed message, for the server's rate-limited warning


def respond(
    data: bytes,
    fast: FastAnswer,
    zones: Zones,
    *,
    edns_size: int,
    tcp: bool = False,
    limiter: RateLimiter | None = None,
    client: str = "",
    now: float = 0.0,
) -> Response:
    """The reply to one message from `client` (see the module docstring). Never raises."""
    problem = None
    try:
        found = fast(data)
    except Exception as exc:  # a bug in the templates must not take the server down
        found, problem = None, f"fast path: {exc!r}"
    if found is not None:
        verdict = limiter.check(client, found[1], now) if limiter is not None else SEND
        if verdict == DROP:
            return Response(None, -1, True, problem)
        wire = found[0] if verdict == SEND else truncate(found[0])
        return Response(wire, wire[3] & 0xF, verdict != SEND, problem)

    decided = plan(data, zones, tcp=tcp, edns_size=edns_size)  # packs nothing yet
    problem = decided.problem or problem
    if decided.silent:
        return Response(None, -1, False, problem)
    verdict = limiter.check(client, decided.key, now) if limiter is not None else SEND
    if verdict == DROP:
        return Response(None, -1, True, problem)
    # SLIP: TC=1 and no records, so that a real client retries over TCP. Either way the answer is
    # packed only now, after the limiter had its say.
    reply = decided.wire() if verdict == SEND else decided.slip()
    if reply is None:
        return Response(None, -1, False, problem)
    return Response(reply, reply[3] & 0xF, verdict != SEND, problem)
