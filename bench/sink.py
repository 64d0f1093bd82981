"""The upload target: reads each request body to its last byte, then answers with the byte count.

    python bench/sink.py HOST     prints the port, then serves HTTP/1.1 keep-alive until killed

nginx's `return 200` would answer before the body has arrived (and discard the rest), so an upload
through it could finish on paper before the bytes crossed the proxy. Here the answer is only sent
once the whole body (Content-Length or chunked) has been read, and its body is the count the client
checks. One thread per connection; the benchmark uploads on one connection at a time.
"""

from __future__ import annotations

import socket
import socketserver
import sys

CHUNK = 1 << 20


class Sink(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        sock: socket.socket = self.request
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = bytearray()
        self.view = memoryview(bytearray(CHUNK))
        while True:
            head = self._until(b"\r\n\r\n")
            if head is None:
                return
            fields = {}
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                fields[name.strip().lower()] = value.strip()
            if b"chunked" in fields.get(b"transfer-encoding", b"").lower():
                count = self._chunked()
            else:
                count = self._exactly(int(fields.get(b"content-length", b"0")))
            if count is None:
                return
            body = b"%d\n" % count
            sock.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body))

    def _fill(self) -> bool:
        n = self.request.recv_into(self.view)
        self.buf += self.view[:n]
        return n > 0

    def _until(self, sep: bytes) -> bytes | None:
        while (i := self.buf.find(sep)) < 0:
            if not self._fill():
                return None
        out = bytes(self.buf[:i])
        del self.buf[: i + len(sep)]
        return out

    def _exactly(self, n: int) -> int | None:
        """Consume n body bytes without keeping them; the count, or None on EOF."""
        have = min(n, len(self.buf))
        del self.buf[:have]
        left = n - have
        while left > 0:
            got = self.request.recv_into(self.view, min(left, CHUNK))
            if got == 0:
                return None
            left -= got
        return n

    def _chunked(self) -> int | None:
        count = 0
        while True:
            line = self._until(b"\r\n")
            if line is None:
                return None
            size = int(line.split(b";")[0], 16)
            if size == 0:
                while self._until(b"\r\n") not in (b"", None):
                    pass  # trailer fields
                return count
            if self._exactly(size) is None or self._until(b"\r\n") is None:
                return None
            count += size


class Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 1024


if __name__ == "__main__":
    with Server((sys.argv[1], 0), Sink) as server:
        print(server.server_address[1], flush=True)
        server.serve_forever()
