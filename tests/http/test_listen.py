"""The accept loop takes a burst of queued connections ACCEPT_BATCH per trip through the scheduler."""

import socket

import trio

from edge.accept import ACCEPT_BATCH, accept_loop
from edge.config import Listen
from edge.http.listen import open_listeners


async def test_queued_burst_is_accepted_a_bounded_batch_per_scheduler_trip(nursery):
    """50 connections waiting in the kernel's queue: ACCEPT_BATCH are accepted before the first handler
    runs (one per scheduler trip would starve a burst behind busy connections; all 50 in one trip
    would make every established connection wait behind 50 handlers), and then the rest."""
    [lsock] = open_listeners(Listen("127.0.0.1", 0))
    port = lsock.getsockname()[1]
    clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(50)]
    accepted: list[int] = []
    seen_at_first_run: list[int] = []
    done = trio.Event()

    # Count starts, not runs: wrap start_soon to count as the loop calls it.
    class CountingNursery:
        def __init__(self, inner):
            self.inner = inner
            self.started = 0

        def start_soon(self, fn, *args):
            self.started += 1
            self.inner.start_soon(fn, *args)

    counting = CountingNursery(nursery)

    async def first_handler_sees(stream):
        if not seen_at_first_run:
            seen_at_first_run.append(counting.started)
        accepted.append(1)
        if len(accepted) == 50:
            done.set()
        await stream.aclose()

    async with trio.open_nursery() as loop:
        loop.start_soon(accept_loop, lsock, counting, first_handler_sees)
        with trio.fail_after(5):
            await done.wait()
        loop.cancel_scope.cancel()
    assert 1 < ACCEPT_BATCH < 50
    assert seen_at_first_run == [ACCEPT_BATCH]
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
