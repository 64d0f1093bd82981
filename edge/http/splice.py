"""Moving bytes without looking at them: zero-copy splices and the tunnel after a protocol switch.

Linux's splice(2) moves bytes from a socket into a pipe and from the pipe into another socket inside
the kernel: Python never sees them, so a large body costs a few syscalls per pipe-full instead of a
copy into Python and back. edge uses it where it does not need to read the bytes:

  - `splice_exact`: the rest of a body whose length is known (Content-Length), once its head went
    through h11. The caller then treats that h11 cycle as finished by hand (see conn).
  - `Tunnel`: both directions of a WebSocket (or any 101) tunnel, until EOF.

The Tunnel rule: one task per direction. EOF on one side becomes a half-close (shutdown SHUT_WR) on
the other; when both directions ended, or an error (a reset, a broken pipe) stopped either, both are
closed. No timeout: a WebSocket may live for hours. Bytes are counted for the access log.
"""

from __future__ import annotations

import fcntl
import os
import socket

import trio

_F_SETPIPE_SZ = 1031  # fcntl.F_SETPIPE_SZ, named only from Python 3.12
PIPE_SIZE = 1 << 20
_FLAGS = os.SPLICE_F_MOVE | os.SPLICE_F_NONBLOCK
# Yield to other tasks after this many bytes moved without waiting, so one fast transfer cannot
# starve the rest of the process.
_YIELD_EVERY = 4 << 20


class SpliceError(Exception):
    """A socket failed during a splice. `source` tells which side: True for the reading side."""

    def __init__(self, source: bool, exc: OSError) -> None:
        super().__init__(str(exc))
        self.source = source


class Pipe:
    """A kernel pipe used as the splice buffer. One per transfer direction; closed after."""

    __slots__ = ("r", "w")

    def __init__(self) -> None:
        self.r, self.w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            fcntl.fcntl(self.w, _F_SETPIPE_SZ, PIPE_SIZE)
        except OSError:
            pass  # over /proc/sys/fs/pipe-max-size: the default 64 KiB still works

    def close(self) -> None:
        os.close(self.r)
        os.close(self.w)

    def __enter__(self) -> Pipe:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


async def splice(src: trio.socket.SocketType, dst: trio.socket.SocketType, limit: int | None,
                 pipe: Pipe, on_bytes=None) -> int:
    """Move bytes from src to dst: exactly `limit` (fewer only if src ends first), or until EOF when
    `limit` is None. Returns the count moved. Raises SpliceError naming the side that failed."""
    src_fd, dst_fd = src.fileno(), dst.fileno()
    r, w = pipe.r, pipe.w
    moved = in_pipe = since_yield = 0
    eof = False
    while True:
        want = PIPE_SIZE - in_pipe
        if limit is not None:
            want = min(want, limit - moved - in_pipe)
        if want > 0 and not eof:
            try:
                k = os.splice(src_fd, w, want, flags=_FLAGS)
            except BlockingIOError:
                if not in_pipe:
                    await trio.lowlevel.wait_readable(src_fd)
                    since_yield = 0
                    continue
            except OSError as exc:
                raise SpliceError(True, exc) from None
            else:
                if k == 0:
                    eof = True
                in_pipe += k
        if not in_pipe:
            if eof or (limit is not None and moved >= limit):
                return moved
            continue
        try:
            k = os.splice(r, dst_fd, in_pipe, flags=_FLAGS)
        except BlockingIOError:
            await trio.lowlevel.wait_writable(dst_fd)
            since_yield = 0
            continue
        except OSError as exc:
            raise SpliceError(False, exc) from None
        in_pipe -= k
        moved += k
        if on_bytes is not None:
            on_bytes(k)
        since_yield += k
        if since_yield >= _YIELD_EVERY:
            since_yield = 0
            await trio.sleep(0)


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
    ) -> None:
        """Relay until both sides are done. `*_pending` are bytes already read past the HTTP heads."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._copy, client, upstream, client_pending, True, nursery.cancel_scope)
            nursery.start_soon(self._copy, upstream, client, upstream_pending, False, nursery.cancel_scope)

    async def _copy(self, src: trio.SocketStream, dst: trio.SocketStream, pending: bytes, up: bool,
                    scope: trio.CancelScope) -> None:
        count = self._count_up if up else self._count_down
        try:
            if pending:
                await dst.send_all(pending)
                count(len(pending))
            with Pipe() as pipe:
                await splice(src.socket, dst.socket, None, pipe, count)
            # EOF from src: pass the half-close on; the other direction may still be talking.
            dst.socket.shutdown(socket.SHUT_WR)
        except (SpliceError, trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            # A reset or a closed socket on either side ends the whole tunnel.
            scope.cancel()

    def _count_up(self, n: int) -> None:
        self.bytes_up += n

    def _count_down(self, n: int) -> None:
        self.bytes_down += n
