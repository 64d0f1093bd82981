"""Crowds: the sweep ends many waits a batch per scheduler round, and reads of requests under way take turns.

The deadline table is a dict and its order pure logic, so most of this runs without sockets: expiry
is recorded instead of waking a descriptor, and scheduler rounds are counted by an instrument (trio
runs every task woken in one round before it looks for I/O again and starts the next).
"""

from __future__ import annotations

import socket
from collections import Counter

import pytest
import trio
import trio.testing

from edge import config as config_mod
from edge.http.deadlines import SWEEP_BATCH, TURNS_PER_ROUND, Deadlines, Turns, Wait, late


class Rounds(trio.abc.Instrument):
    """Counts scheduler rounds: trio looks for I/O once before every round it runs."""

    def __init__(self) -> None:
        self.n = 0

    def after_io_wait(self, timeout: float) -> None:
        self.n += 1


@pytest.fixture
async def rounds():
    counter = Rounds()
    trio.lowlevel.add_instrument(counter)
    yield counter
    trio.lowlevel.remove_instrument(counter)


class Recorded(Deadlines):
    """Deadlines whose expiries are written down (with the round they happened in), not delivered."""

    def __init__(self, rounds: Rounds) -> None:
        super().__init__(config_mod.load(env={}, overrides={}).http)
        self.rounds = rounds
        self.ended: list[tuple[int, Wait, str]] = []

    def expire(self, w: Wait, kind: str) -> None:
        self.table.pop(w, None)
        self.ended.append((self.rounds.n, w, kind))


def waits(n: int, kind: str = "head") -> list[Wait]:
    out = [Wait(1000 + i) for i in range(n)]
    for w in out:
        w.kind = kind
    return out


def per_round(ended: list) -> list[int]:
    """How many ended in each round that had any, in order."""
    counts = Counter(r for r, *_ in ended)
    return [counts[r] for r in sorted(counts)]


def test_late_lists_the_waits_past_their_time_earliest_first():
    """Due at `now` counts as late; a later deadline does not; the earliest comes first."""
    a, b, c, d = waits(4)
    table = {a: 5.0, b: 2.0, c: 9.0, d: 3.0}
    assert late(table, 5.0) == [b, d, a]
    assert late(table, 1.0) == []


async def test_sweep_ends_a_crowd_a_batch_per_scheduler_round(nursery, rounds):
    """2.5 batches of waits due at once: SWEEP_BATCH end in each round, earliest first, all of them in
    the end (so that the tasks they wake run beside everyone else's, not all in one round)."""
    d = Recorded(rounds)
    crowd = waits(2 * SWEEP_BATCH + SWEEP_BATCH // 2)
    for i, w in enumerate(crowd):
        d.table[w] = 10.0 + i / 1000
    assert await d.sweep(20.0) == len(crowd)
    assert per_round(d.ended) == [SWEEP_BATCH, SWEEP_BATCH, SWEEP_BATCH // 2]
    assert [w for _, w, _ in d.ended] == crowd
    assert [kind for *_, kind in d.ended] == ["head"] * len(crowd)
    assert d.table == {}


async def test_sweep_leaves_alone_a_wait_that_ended_or_moved_while_it_yielded(nursery, rounds):
    """Between two batches one wait of the last batch was woken by its socket (left the table) and
    another waits again with a later deadline: neither is expired, the rest are."""
    d = Recorded(rounds)
    crowd = waits(2 * SWEEP_BATCH + 4)
    for i, w in enumerate(crowd):
        d.table[w] = 10.0 + i / 1000
    gone, moved = crowd[-1], crowd[-2]

    async def meanwhile() -> None:  # runs in the round after the sweep's first batch, before its last
        del d.table[gone]
        d.table[moved] = 99.0

    nursery.start_soon(meanwhile)
    assert await d.sweep(20.0) == len(crowd) - 2
    assert {w for _, w, _ in d.ended} == set(crowd) - {gone, moved}
    assert d.table == {moved: 99.0}


async def test_a_crowd_of_reads_goes_on_per_round_in_turns_first_come_first_served(nursery, rounds):
    """10 reads ready in one round, 4 turns a round: 4 go on at once, then 4, then 2, in the order
    they came."""
    turns = Turns(4)
    nursery.start_soon(turns.run)
    await trio.testing.wait_all_tasks_blocked()
    came: list[int] = []
    went: list[tuple[int, int]] = []

    async def reader(i: int) -> None:
        came.append(i)
        await turns.take()
        went.append((rounds.n, i))

    async with trio.open_nursery() as readers:
        for i in range(10):
            readers.start_soon(reader, i)
    assert per_round(went) == [4, 4, 2]
    by_round = [{i for r, i in went if r == n} for n in sorted({r for r, _ in went})]
    assert by_round == [set(came[:4]), set(came[4:8]), set(came[8:])]  # (trio runs a round in any order)
    assert turns.left == 4 and not turns.lot  # a later read goes on at once again


async def test_reads_within_the_turns_cost_no_checkpoint(nursery, rounds):
    """Up to the round's turns, take() returns without yielding: nothing is paid without a crowd."""
    turns = Turns(4)
    nursery.start_soon(turns.run)
    await trio.testing.wait_all_tasks_blocked()
    before = rounds.n
    for _ in range(3):
        await turns.take()
    assert rounds.n == before


async def test_without_the_sweep_running_nobody_waits_for_a_turn():
    """A Deadlines nobody runs (no task to hand out turns) never parks a read."""
    turns = Turns(1)
    with trio.fail_after(1):
        for _ in range(5):
            await turns.take()


@pytest.mark.parametrize(
    ("kind", "deadline", "takes_turn"),
    [
        pytest.param("head", 5.0, True, id="the rest of a request head"),
        pytest.param("body", 5.0, True, id="a request body"),
        pytest.param("linger", 5.0, True, id="the drain before a close"),
        pytest.param("body", None, False, id="a response body (no deadline)"),
        pytest.param("response", 5.0, False, id="a sandbox's answer"),
        pytest.param("idle", 5.0, False, id="a next request"),
    ],
)
async def test_only_reads_of_a_request_under_way_take_turns(autojump_clock, nursery, kind, deadline, takes_turn):
    """After a wait that blocked, a read of a head or body still coming in, or of a connection being
    closed, takes a turn; a sandbox's answer, a response body and a new request do not (they go on
    whatever the crowd)."""
    d = Deadlines(config_mod.load(env={}, overrides={}).http)
    nursery.start_soon(d.run)
    a, b = socket.socketpair()
    with a, b:
        a.setblocking(False)

        async def later() -> None:
            await trio.sleep(1)
            b.send(b"x")

        nursery.start_soon(later)
        when = None if deadline is None else trio.current_time() + deadline
        assert await d.recv(Wait(a.fileno()), 10, when, kind) == b"x"
    assert d.turns.left == TURNS_PER_ROUND - takes_turn
