"""A tunnel between two streams after a protocol switch (WebSocket): two tasks and a rule.

One task per direction copies bytes as they come. EOF on one side becomes a half-close (send_eof) on
the other; when both directions ended, or an error (a reset, a broken pipe) stopped either, both are
closed. No timeout: a WebSocket may live for hours. Bytes are counted for the access log.
"""

from __future__ import annotations

import trio


class Tunnel:
    __slots__ = ("bytes_up", "bytes_down")

    def __init__(self) -> None:
        self.bytes_up = 0  # client -> sandbox
        self.bytes_down = 0  # sandbox -> client

    async def run(
        self,
        client: trio.SocketStream,
        upstream: trio.SocketStream,
        client_pending: bytes,
        upstream_pending: bytes,
        read_size: int,
    ) -> None:
        """Relay until both sides are done. `*_pending` are bytes already read past the HTTP heads."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._copy, client, upstream, client_pending, read_size, True, nursery.cancel_scope)
            nursery.start_soon(self._copy, upstream, client, upstream_pending, read_size, False, nursery.cancel_scope)

    async def _copy(self, src, dst, pending: bytes, read_size: int, up: bool, scope: trio.CancelScope) -> None:
        try:
            if pending:
                await dst.send_all(pending)
                self._count(up, len(pending))
            while True:
                data = await src.receive_some(read_size)
                if not data:
                    break
                await dst.send_all(data)
                self._count(up, len(data))
            # EOF from src: pass the half-close on; the other direction may still be talking.
            try:
                await dst.send_eof()
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                scope.cancel()
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            # A reset or a closed socket on either side ends the whole tunnel.
            scope.cancel()

    def _count(self, up: bool, n: int) -> None:
        if up:
            self.bytes_up += n
        else:
            self.bytes_down += n
