"""A fleet of fake sandboxes in one process: the endpoints bench/load.py's scenarios use, on many
addresses and ports at once.

    .venv/bin/python bench/sandboxd.py --hosts 127.1.0.1-127.1.3.232 --ports 3000     1,000 sandboxes
    .venv/bin/python bench/sandboxd.py --hosts 127.0.0.2 --ports 0                    any free port
    .venv/bin/python bench/sandboxd.py --hosts 127.0.0.2 --ports 3000 --slow-every 10 --slow-ms 100

Endpoints, whatever the Host (HTTP/1.1, keep-alive):

    GET  /                a 23-byte answer, "hello from the sandbox\\n" (every path not below)
    GET  /bytes?n=N       N bytes with a Content-Length
    POST /upload          reads the body to its end (Content-Length or chunked), answers the count
    GET  /ws              WebSocket (RFC 6455): echoes every data message, answers ping and close
    GET  /sse?n=N&gap=S   N server-sent events S seconds apart (chunked), then the end of the body
    GET  /status/NNN      answers status NNN (a sandbox's own 5xx, for the error report)
    GET  /slow?ms=M       answers after M milliseconds

`--slow-every N --slow-ms M` makes every N-th request (counted over all listeners) answer M ms late,
the rest at once: a latency spike the open-loop mode has to show. `--ports 0` binds one free port,
the same on every address. Prints `sandboxd: listening on N address(es) x M port(s), port P` once all
are bound, then serves until SIGINT or SIGTERM. Everything is served by one trio process on raw
sockets; it answers small requests at several times the rate one edge process forwards them.
"""

from __future__ import annotations

import argparse
import errno
import resource
import signal
import socket
import sys
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import trio  # noqa: E402

from bench.loadlib import wire  # noqa: E402
from bench.loadlib.options import addresses, ports  # noqa: E402

SMALL_BODY = b"hello from the sandbox\n"
SMALL = b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: %d\r\n\r\n%s" % (len(SMALL_BODY), SMALL_BODY)
ZEROS = memoryview(b"\0" * (256 * 1024))
IDLE_TIMEOUT = 300.0  # a connection silent this long is closed
MAX_HEAD = 64 * 1024


class Closed(Exception):
    pass


class Peer:
    """One accepted connection: a buffer over a raw trio socket."""

    __slots__ = ("sock", "buf")

    def __init__(self, sock) -> None:
        self.sock = sock
        self.buf = bytearray()

    async def fill(self) -> None:
        try:
            with trio.fail_after(IDLE_TIMEOUT):
                data = await self.sock.recv(65536)
        except (OSError, trio.TooSlowError):
            raise Closed() from None
        if not data:
            raise Closed()
        self.buf += data

    async def send(self, data) -> None:
        view = memoryview(data)
        try:
            while view:
                view = view[await self.sock.send(view) :]
        except OSError:
            raise Closed() from None

    async def head(self) -> tuple[str, str, dict[bytes, bytes]]:
        while (i := self.buf.find(b"\r\n\r\n")) < 0:
            if len(self.buf) > MAX_HEAD:
                raise Closed()
            await self.fill()
        lines = bytes(self.buf[:i]).split(b"\r\n")
        del self.buf[: i + 4]
        method, target, _ = lines[0].decode("latin-1").split(" ", 2)
        fields = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            fields[name.strip().lower()] = value.strip()
        return method, target, fields

    async def body(self, fields: dict[bytes, bytes]) -> int:
        """Read (and drop) a request body; its length."""
        if fields.get(b"transfer-encoding", b"").lower().endswith(b"chunked"):
            dec, total = wire.Chunked(), 0
            data, self.buf = bytes(self.buf), bytearray()
            while True:
                try:
                    total += len(dec.feed(data))
                except ValueError:
                    raise Closed() from None
                if dec.done:
                    self.buf += dec.rest
                    return total
                await self.fill()
                data, self.buf = bytes(self.buf), bytearray()
        left = total = int(fields.get(b"content-length", b"0") or 0)
        while left:
            if not self.buf:
                await self.fill()
            take = min(left, len(self.buf))
            del self.buf[:take]
            left -= take
        return total


class Sandboxd:
    def __init__(self, slow_every: int = 0, slow_ms: float = 0.0) -> None:
        self.slow_every = slow_every
        self.slow_ms = slow_ms
        self.requests = 0

    async def serve(self, sock) -> None:
        peer = Peer(sock)
        try:
            while True:
                method, target, fields = await peer.head()
                self.requests += 1
                if self.slow_every and self.requests % self.slow_every == 0:
                    await trio.sleep(self.slow_ms / 1000)
                if not await self.answer(peer, method, target, fields):
                    return
                if b"close" in fields.get(b"connection", b"").lower():
                    return
        except (Closed, ValueError, UnicodeDecodeError):
            pass
        finally:
            sock.close()

    async def answer(self, peer: Peer, method: str, target: str, fields: dict[bytes, bytes]) -> bool:
        """Answer one request; False when the connection is done (a WebSocket session ended)."""
        path, _, query = target.partition("?")
        if path == "/" or not path.startswith(("/bytes", "/upload", "/ws", "/sse", "/status/", "/slow")):
            await peer.body(fields)
            await peer.send(SMALL)
            return True
        q = {k: v[0] for k, v in parse_qs(urlsplit(target).query).items()} if query else {}
        if path == "/ws" and fields.get(b"upgrade", b"").lower() == b"websocket":
            return await self.websocket(peer, fields)
        count = await peer.body(fields)
        if path == "/upload":
            body = b"%d\n" % count
            await peer.send(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body))
        elif path == "/bytes":
            n = int(q.get("n", "0"))
            await peer.send(
                b"HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\ncontent-length: %d\r\n\r\n" % n
            )
            while n > 0:
                piece = ZEROS[: min(n, len(ZEROS))]
                await peer.send(piece)
                n -= len(piece)
        elif path == "/sse":
            n, gap = int(q.get("n", "3")), float(q.get("gap", "0.2"))
            await peer.send(
                b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n"
                b"transfer-encoding: chunked\r\n\r\n"
            )
            for i in range(n):
                event = b"id: %d\ndata: event %d\n\n" % (i, i)
                await peer.send(b"%x\r\n%s\r\n" % (len(event), event))
                if i < n - 1:
                    await trio.sleep(gap)
            await peer.send(b"0\r\n\r\n")
        elif path.startswith("/status/"):
            status = int(path[len("/status/") :] or "500")
            body = b"status %d from the sandbox\n" % status
            await peer.send(b"HTTP/1.1 %d Status\r\ncontent-length: %d\r\n\r\n%s" % (status, len(body), body))
        elif path == "/slow":
            await trio.sleep(float(q.get("ms", "1000")) / 1000)
            await peer.send(SMALL)
        else:
            await peer.send(SMALL)
        return True

    async def websocket(self, peer: Peer, fields: dict[bytes, bytes]) -> bool:
        key = fields.get(b"sec-websocket-key", b"")
        await peer.send(
            b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\n"
            b"sec-websocket-accept: %s\r\n\r\n" % wire.ws_accept(key)
        )
        while True:
            got = wire.ws_parse(peer.buf)
            if got is None:
                await peer.fill()
                continue
            opcode, payload, used = got
            del peer.buf[:used]
            if opcode in (wire.OP_TEXT, wire.OP_BINARY, 0):
                await peer.send(wire.ws_frame(opcode or wire.OP_BINARY, payload))
            elif opcode == wire.OP_PING:
                await peer.send(wire.ws_frame(wire.OP_PONG, payload))
            elif opcode == wire.OP_CLOSE:
                await peer.send(wire.ws_frame(wire.OP_CLOSE, payload[:2]))
                return False


def bind(hosts: list[str], port_list: list[int], backlog: int = 1024) -> list[socket.socket]:
    """Listening sockets on every host x port. Port 0: one free port, the same on every host."""
    if port_list == [0]:
        for _ in range(20):
            first = _listen(hosts[0], 0, backlog)
            port = first.getsockname()[1]
            try:
                return [first] + [_listen(h, port, backlog) for h in hosts[1:]]
            except OSError as exc:
                first.close()
                if exc.errno != errno.EADDRINUSE:
                    raise
        raise OSError("no port free on every address")
    return [_listen(h, p, backlog) for h in hosts for p in port_list]


def _listen(host: str, port: int, backlog: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(family, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind((host, port))
    except OSError:
        s.close()
        raise
    s.listen(backlog)
    s.setblocking(False)
    return s


async def main(listeners: list[socket.socket], server: Sandboxd) -> None:
    async def accept(listener) -> None:
        while True:
            try:
                sock, _ = await listener.accept()
            except OSError as exc:  # EMFILE and friends: wait, do not die
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    await trio.sleep(0.1)
                    continue
                raise
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            nursery.start_soon(server.serve, sock)

    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            for s in listeners:
                nursery.start_soon(accept, trio.socket.from_stdlib_socket(s))
            async for _ in signals:
                nursery.cancel_scope.cancel()
                break


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="bench/sandboxd.py",
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 2)[2],
    )
    ap.add_argument("--hosts", default="127.0.0.2", help="addresses: 127.0.0.2, 127.1.0.1-127.1.3.232, 127.1.0.0/24")
    ap.add_argument("--ports", default="3000", help="ports on each address: 3000, 3000-3009, 0 (one free port)")
    ap.add_argument("--slow-every", type=int, default=0, metavar="N", help="every N-th request answers late")
    ap.add_argument("--slow-ms", type=float, default=100.0, metavar="M", help="by this much (default 100)")
    a = ap.parse_args(argv)
    try:
        a.host_list, a.port_list = addresses(a.hosts), ports(a.ports)
    except ValueError as exc:
        ap.error(str(exc))
    return a


def run(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = len(a.host_list) * len(a.port_list) + 65536
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard) if hard != resource.RLIM_INFINITY else want, hard))
    try:
        listeners = bind(a.host_list, a.port_list)
    except OSError as exc:
        print(f"sandboxd: cannot listen: {exc}", file=sys.stderr)
        return 1
    port_text = ",".join(str(p) for p in sorted({s.getsockname()[1] for s in listeners}))
    print(
        f"sandboxd: listening on {len(a.host_list)} address(es) x {len(a.port_list)} port(s), port {port_text}",
        flush=True,
    )
    trio.run(main, listeners, Sandboxd(a.slow_every, a.slow_ms))
    return 0


if __name__ == "__main__":
    sys.exit(run())
