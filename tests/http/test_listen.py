"""The accept loop takes a burst of queued connections ACCEPT_BATCH per trip through the scheduler."""

import socket
from collections import Counter

import trio

from edge.accept import ACCEPT_BATCH, accept_loop
from edge.config import Listen
from edge.http.listen import open_listeners


class Rounds(trio.abc.Instrument):
    """Counts scheduler trips: trio looks for I/O once before every round of tasks it runs."""

    def __init__(self) -> None:
        self.n = 0

    def after_io_wait(self, timeout: float) -> None:
        self.n += 1


async def test_queued_burst_is_accepted_a_bounded_batch_per_scheduler_trip(nursery):
    """50 connections waiting in the kernel's queue: ACCEPT_BATCH are accepted per trip through the
    scheduler, until all are (one per trip would starve a burst behind busy connections; all 50 in
    one trip would make every established connection wait behind 50 handlers)."""
    [lsock] = open_listeners(Listen("127.0.0.1", 0))
    port = lsock.getsockname()[1]
    clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(50)]
    rounds = Rounds()
    trio.lowlevel.add_instrument(rounds)
    accepted: list[int] = []
    done = trio.Event()

    # Count starts, not runs: wrap start_soon to note the trip each start happens in.
    class CountingNursery:
        def __init__(self, inner):
            self.inner = inner
            self.started: list[int] = []

        def start_soon(self, fn, *args):
            self.started.append(rounds.n)
            self.inner.start_soon(fn, *args)

    counting = CountingNursery(nursery)

    async def handler(stream):
        accepted.append(1)
        if len(accepted) == 50:
            done.set()
        await stream.aclose()

    async with trio.open_nursery() as loop:
        loop.start_soon(accept_loop, lsock, counting, handler)
        with trio.fail_after(5):
            await done.wait()
        loop.cancel_scope.cancel()
    trio.lowlevel.remove_instrument(rounds)
    per_trip = Counter(counting.started)
    assert 1 < ACCEPT_BATCH < 50
    assert [per_trip[n] for n in sorted(per_trip)] == [ACCEPT_BATCH] * (50 // ACCEPT_BATCH) + [50 % ACCEPT_BATCH]
    for c in clients:
        c.close()
    lsock.close()


def test_port_zero_with_two_addresses_binds_one_port():
    """`localhost` may give 127.0.0.1 and ::1: with port 0 both listen on the same port."""
    socks = open_listeners(Listen("localhost", 0))
    try:
        assert len({s.getsockname()[1] for s in socks}) == 1
    finally:
        for s in socks:
            s.close()


def test_address_in_use_is_a_config_error():
    """Binding a taken port is a ConfigError naming the address, not an OSError."""
    import pytest

    from edge.errors import ConfigError

    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    try:
        with pytest.raises(ConfigError, match="cannot listen on 127.0.0.1"):
            open_listeners(Listen("127.0.0.1", taken.getsockname()[1]))
    finally:
        taken.close()
