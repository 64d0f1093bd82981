"""A process's way down (edge/stopping.py): a drain's long deadline, a stop's short one, never later."""

from __future__ import annotations

import trio

from edge.stopping import Stopping


async def test_a_stop_after_a_drain_brings_the_deadline_nearer_on_scopes_already_bound():
    stopping = Stopping()
    scope = trio.CancelScope()
    assert stopping.stop(3600, "deploy")
    stopping.bound(scope)
    assert scope.deadline == stopping.deadline
    far = scope.deadline
    assert stopping.stop(5, "SIGTERM")
    assert scope.deadline < far - 3000
    assert stopping.why == "SIGTERM"


async def test_a_later_drain_never_pushes_a_stop_back():
    stopping = Stopping()
    stopping.stop(5, "SIGTERM")
    deadline = stopping.deadline
    assert not stopping.stop(3600, "deploy")
    assert stopping.deadline == deadline and stopping.why == "SIGTERM"


async def test_the_event_is_set_by_the_first_stop():
    stopping = Stopping()
    assert not stopping.event.is_set()
    stopping.stop(1, "x")
    assert stopping.event.is_set()
    with trio.fail_after(1):
        await stopping.wait()
