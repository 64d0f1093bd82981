"""A scripted sandbox: per request, exactly the bytes (and pauses) a test gives it.

Used where a response must be plain, split, chunked, too long, followed by bytes nobody asked for, or
cut short on purpose.
"""

from __future__ import annotations

from functools import partial

import trio

CLOSE = object()  # in a script: the sandbox closes the connection here


class Scripted:
    """A sandbox on 127.0.0.4: per request, the next script (bytes to send, float pauses, CLOSE)."""

    def __init__(self) -> None:
        self.scripts: list[list] = []
        self.requests: list[bytes] = []
        self.connections = 0
        self.port = 0

    async def start(self, nursery: trio.Nursery) -> Scripted:
        listeners = await nursery.start(partial(trio.serve_tcp, self._serve, 0, host="127.0.0.4"))
        self.port = listeners[0].socket.getsockname()[1]
        return self

    async def _serve(self, stream: trio.SocketStream) -> None:
        self.connections += 1
        try:
            await self._script(stream)
        except trio.BrokenResourceError:
            pass  # the edge dropped this connection (as it must after bytes nobody asked for)

    async def _script(self, stream: trio.SocketStream) -> None:
        buf = b""
        async with stream:
            while True:
                while b"\r\n\r\n" not in buf:
                    chunk = await stream.receive_some(65536)
                    if not chunk:
                        return
                    buf += chunk
                end = buf.index(b"\r\n\r\n") + 4
                head, buf = buf[:end], buf[end:]
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        n = int(line.split(b":")[1])
                        while len(buf) < n:
                            buf += await stream.receive_some(65536)
                        head, buf = head + buf[:n], buf[n:]
                self.requests.append(head)
                for step in self.scripts.pop(0):
                    if step is CLOSE:
                        return
                    if isinstance(step, float):
                        await trio.sleep(step)
                    else:
                        await stream.send_all(step)
