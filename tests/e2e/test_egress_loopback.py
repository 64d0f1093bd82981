"""The egress listener without namespaces: what it does with a connection nobody redirected, and its stop."""

from __future__ import annotations

import trio

from edge.catalog.model import Snapshot
from edge.catalog.store import LiveCatalog
from edge.config import Listen
from edge.egress.config import EgressConfig
from edge.egress.server import serve
from edge.stopping import Stopping


async def test_a_connection_not_redirected_is_reset_and_a_stop_ends_the_server(nursery) -> None:
    """Made straight to the listener, a connection has no original destination (no NAT entry): it is
    reset and logged `not redirected`, never dialled; setting `stop` closes the listener."""
    logs: list[dict] = []
    stop = Stopping()
    done = trio.Event()

    async def run(task_status=trio.TASK_STATUS_IGNORED) -> None:
        await serve(
            EgressConfig(listen=Listen("127.0.0.1", 0), shutdown_grace=0.5),
            LiveCatalog(Snapshot()),
            log=logs.append,
            stop=stop,
            task_status=task_status,
        )
        done.set()

    [(_, (host, port))] = await nursery.start(run)
    stream = await trio.open_tcp_stream(host, port)
    try:
        await stream.send_all(b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n")
        assert await stream.receive_some(100) == b""
    except trio.BrokenResourceError:
        pass  # the reset
    with trio.fail_after(2):
        while not logs:
            await trio.sleep(0.01)
    assert logs[0]["rule"] == "not redirected" and logs[0]["decision"] == "deny"
    assert logs[0]["error"].startswith("SO_ORIGINAL_DST")
    stop.stop(5.0, "test")
    with trio.fail_after(2):
        await done.wait()
