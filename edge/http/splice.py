"""Moving body bytes without looking at them: zero-copy splice(2) where it may, a copy where not; tunnels.

Linux's splice(2) moves bytes from a socket into a pipe and from the pipe into another socket inside
the kernel: Python never sees them, so a large body costs a few syscalls per pipe-full instead of a
copy into Python and back. It needs both ends to be plain sockets (`Transport.splice_fd`); with a TLS
client (unless the kernel encrypts, kTLS) the same bytes are copied through Python instead, by the
same rules:

  - `move`: the rest of a body whose length is known (Content-Length), once its head went through;
    or everything until EOF (a tunnel direction).
  - `tunnel`: both directions after a 101, one task each. EOF on one side becomes a half-close
    (shutdown SHUT_WR) on the other; when both ended, or an error stopped either, it is over.

Reads wait for as long as the caller says (`read_timeout`: a request body's body_idle_timeout; None for
a response body or a tunnel, which may be quiet for hours). Writes never wait longer than send_timeout
without progress (deadlines.py). A failure names its side (`BrokenBody.source`).
"""

from __future__ import annotations

import fcntl
import os
import socket
from collections.abc import Callable

import trio

from edge.http.client import Transport
from edge.http.deadlines import Deadlines, Expired

_F_SETPIPE_SZ = 1031  # fcntl.F_SETPIPE_SZ, named only from Python 3.12
PIPE_SIZE = 1 << 20
_FLAGS = os.SPLICE_F_MOVE | os.SPLICE_F_NONBLOCK
# Yield to other tasks after this many bytes moved without waiting, so one fast transfer cannot
# starve the rest of the process.
_YIELD_EVERY = 4 << 20


class BrokenBody(Exception):
    """A body stopped before its end: `source` True when the sending side failed or ended early,
    False when the receiving side failed (closed, reset, or made no progress for send_timeout)."""

    def __init__(self, source: bool, why: str, timed_out: bool = False) -> None:
        super().__init__(why)
        self.source = source
        #: The receiving side made no progress for send_timeout (rather than failing).
        self.timed_out = timed_out


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

    def __exit__(self, *exc: object) -> None:
        self.close()


async def move(
    d: Deadlines,
    src: Transport,
    dst: Transport,
    limit: int | None,
    *,
    read_timeout: float | None,
    read_kind: str,
    read_size: int,
    count: Callable[[int], None],
    splice_min: int,
) -> int:
    """Move exactly `limit` bytes from src to dst (fewer only when src ends first: then BrokenBody),
    or until EOF when `limit` is None. Returns the count moved.

    By splice when both ends allow it and at least `splice_min` bytes are to come (0: never; a pipe
    costs four syscalls, which small bodies do not repay), else by copy."""
    if splice_min and src.splice_fd >= 0 and dst.splice_fd >= 0 and (limit is None or limit >= splice_min):
        try:
            pipe = Pipe()
        except OSError:
            pipe = None  # out of descriptors for a pipe: copy instead, rather than fail the body
        if pipe is not None:
            with pipe:
                moved = await _splice(d, src, dst, limit, pipe, read_timeout, read_kind, count)
            return moved
    return await _copy(d, src, dst, limit, read_timeout, read_kind, read_size, count)


def _check_end(moved: int, limit: int | None) -> int:
    if limit is not None and moved < limit:
        raise BrokenBody(True, f"the sender closed after {moved} of {limit} body bytes")
    return moved


async def _copy(
    d: Deadlines,
    src: Transport,
    dst: Transport,
    limit: int | None,
    read_timeout: float | None,
    read_kind: str,
    read_size: int,
    count: Callable[[int], None],
) -> int:
    moved = 0
    while limit is None or moved < limit:
        want = read_size if limit is None else min(read_size, limit - moved)
        deadline = None if read_timeout is None else trio.current_time() + read_timeout
        try:
            data = await src.recv(want, deadline, read_kind)
        except OSError as exc:
            raise BrokenBody(True, str(exc)) from None
        if not data:
            break
        try:
            await dst.send(data)
        except (OSError, Expired) as exc:
            raise BrokenBody(False, str(exc) or type(exc).__name__, isinstance(exc, Expired)) from None
        moved += len(data)
        count(len(data))
    return _check_end(moved, limit)


async def _splice(
    d: Deadlines,
    src: Transport,
    dst: Transport,
    limit: int | None,
    pipe: Pipe,
    read_timeout: float | None,
    read_kind: str,
    count: Callable[[int], None],
) -> int:
    src_fd, dst_fd = src.splice_fd, dst.splice_fd
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
                    deadline = None if read_timeout is None else trio.current_time() + read_timeout
                    await d.readable(src.rd, deadline, read_kind)
                    since_yield = 0
                    continue
            except OSError as exc:
                raise BrokenBody(True, str(exc)) from None
            else:
                if k == 0:
                    eof = True
                in_pipe += k
        if not in_pipe:
            if eof or (limit is not None and moved >= limit):
                return _check_end(moved, limit)
            continue
        try:
            k = os.splice(r, dst_fd, in_pipe, flags=_FLAGS)
        except BlockingIOError:
            try:
                await d.writable(dst.wr)
            except Expired as exc:
                raise BrokenBody(False, f"no progress for send_timeout ({exc.kind})", True) from None
            since_yield = 0
            continue
        except OSError as exc:
            raise BrokenBody(False, str(exc)) from None
        in_pipe -= k
        moved += k
        count(k)
        since_yield += k
        if since_yield >= _YIELD_EVERY:
            since_yield = 0
            await trio.sleep(0)


class Tunnel:
    """Both directions of a tunnel after a 101, until both ended or either failed. Bytes are counted."""

    __slots__ = ("bytes_up", "bytes_down")

    def __init__(self) -> None:
        self.bytes_up = 0  # client -> sandbox
        self.bytes_down = 0  # sandbox -> client

    async def run(
        self,
        d: Deadlines,
        client: Transport,
        upstream: Transport,
        client_pending: bytes,
        upstream_pending: bytes,
        read_size: int,
    ) -> None:
        """Relay until both sides are done. `*_pending` are bytes already read past the HTTP heads."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(
                self._one_way, d, client, upstream, client_pending, True, read_size, nursery.cancel_scope
            )
            nursery.start_soon(
                self._one_way, d, upstream, client, upstream_pending, False, read_size, nursery.cancel_scope
            )

    async def _one_way(
        self,
        d: Deadlines,
        src: Transport,
        dst: Transport,
        pending: bytes,
        up: bool,
        read_size: int,
        scope: trio.CancelScope,
    ) -> None:
        count = self._count_up if up else self._count_down
        try:
            if pending:
                await dst.send(pending)
                count(len(pending))
            await move(
                d, src, dst, None, read_timeout=None, read_kind="tunnel", read_size=read_size, count=count, splice_min=1
            )
            # EOF from src: pass the half-close on; the other direction may still be talking.
            dst.shutdown(socket.SHUT_WR)
        except (BrokenBody, OSError, Expired):
            # A reset, a closed socket, or a side that stopped reading ends the whole tunnel.
            scope.cancel()

    def _count_up(self, n: int) -> None:
        self.bytes_up += n

    def _count_down(self, n: int) -> None:
        self.bytes_down += n
