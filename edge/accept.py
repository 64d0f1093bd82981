"""The accept loop of every TCP listener edge runs (HTTP, DNS over TCP).

trio's serve_listeners accepts one connection per trip through the scheduler. Under load a trip is
long (every busy connection runs once), so a burst of new connections waits in the kernel's queue
for many trips: measured here, 256 connections opened at once against a saturated edge waited up to
2 s to be accepted (wrk timeouts, a 1.2 s p99) while no packet was lost. nginx accepts in batches for
the same reason. This loop waits until the listening socket is readable, then accepts up to
ACCEPT_BATCH of what the kernel has queued before waiting again.

The batch is bounded because every connection accepted starts a task that runs in the next
scheduler round, and trio runs a round's tasks before anyone else's: 500 connections opened at once
(slowhttptest's bursts) were 100-250 ms of one core in one round, which every established connection
waited behind (bench/results/adversarial.md). With a bounded batch the listener is simply readable
again at the next round, so a burst is taken ACCEPT_BATCH a round, interleaved with the work of the
connections already there: a queue of n waits n / ACCEPT_BATCH rounds, not one per connection.
"""

from __future__ import annotations

import errno
import logging
import socket

import trio

from edge.metrics import STATS

logger = logging.getLogger("edge")

#: Connections accepted per scheduler round (see the module docstring).
ACCEPT_BATCH = 16
#: Seconds between two log lines about the same accept error.
LOG_EVERY = 10.0
# Out of file descriptors or memory: the listener stays readable, so back off instead of spinning.
_RESOURCE_ERRORS = frozenset((errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM))


async def accept_loop(sock: socket.socket, nursery: trio.Nursery, handler, *, label: str = "http", admit=None) -> None:
    """Accept connections on the non-blocking listening `sock` for ever, in batches, starting
    `handler(stream)` for each. `label` names the server in log lines.

    `admit(peer_address) -> bool`, when given, decides at once, before the next accept: a connection
    refused is closed right here, and an admitted one's handler is called as `handler(stream, address)`.
    A burst queued while the process was busy is then refused as it is accepted, instead of holding
    one descriptor each until its handler runs.

    Ends with trio.ClosedResourceError when another task closes the socket through
    trio.lowlevel.notify_closing (a graceful stop)."""
    accept = sock.accept
    from_stdlib = trio.socket.from_stdlib_socket
    # Out of descriptors, the same error comes every 100 ms: say it once per LOG_EVERY seconds, with
    # how many times it happened since.
    failures = 0
    logged_at = -LOG_EVERY
    while True:
        await trio.lowlevel.wait_readable(sock)
        for _ in range(ACCEPT_BATCH):
            try:
                conn, peer = accept()
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno == errno.EBADF or sock.fileno() < 0:
                    # Closed by a stop in the round this task was woken: its cancellation comes at
                    # the next checkpoint, and wait_readable() on a closed socket is a ValueError.
                    raise trio.ClosedResourceError from None
                if exc.errno in _RESOURCE_ERRORS:
                    failures += 1
                    now = trio.current_time()
                    if now - logged_at >= LOG_EVERY:
                        logger.error(
                            "%s: accept failed %d time(s) since the last report (%s); pausing accepts "
                            "for 100 ms each time",
                            label,
                            failures,
                            exc.strerror,
                        )
                        failures = 0
                        logged_at = now
                    STATS.accept_errors += 1
                    await trio.sleep(0.1)
                break  # ECONNABORTED and the like: that connection is gone, others are not
            if admit is not None and not admit(peer[0]):
                conn.close()
                continue
            conn.setblocking(False)
            if admit is None:
                nursery.start_soon(handler, trio.SocketStream(from_stdlib(conn)))
            else:  # the handler owes the admission a release: it gets the address admitted
                nursery.start_soon(handler, trio.SocketStream(from_stdlib(conn)), peer[0])
