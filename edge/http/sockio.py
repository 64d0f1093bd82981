"""Socket reads and writes for the request path, straight on the file descriptor.

trio's SocketStream stacks a conflict detector, error translation and a socket wrapper (each a
context manager or two) on every call; on the request path that was a fifth of the time per request.
These two functions make one syscall when the socket is ready and wait through trio's I/O manager
only when it is not. Errors are the syscall's OSErrors (ConnectionResetError, BrokenPipeError...);
Python ignores SIGPIPE, so a write to a closed peer raises instead of killing the process.

They do not checkpoint when the socket is ready at once: the connection loop does, once per exchange
(`trio.lowlevel.checkpoint()` in conn), so that a client pipelining without pause cannot starve the
other connections.
"""

from __future__ import annotations

import os

from trio.lowlevel import wait_readable, wait_writable

_read = os.read
_write = os.write


async def read(fd: int, max_bytes: int) -> bytes:
    """Up to `max_bytes`, waiting until there is at least one; b"" at EOF."""
    while True:
        try:
            return _read(fd, max_bytes)
        except BlockingIOError:
            await wait_readable(fd)


async def write_all(fd: int, data: bytes) -> None:
    """All of `data`, waiting for room as needed."""
    while True:
        try:
            sent = _write(fd, data)
        except BlockingIOError:
            await wait_writable(fd)
            continue
        if sent == len(data):
            return
        data = memoryview(data)[sent:]
