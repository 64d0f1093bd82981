"""Real backends for the tests: small HTTP/1.1 servers on their own loopback addresses.

`Backend` serves a few paths that each exercise one behaviour of the edge:

  /echo          JSON: method, target, headers (as sent on the wire), body length
  /bytes?n=N     N bytes in 1 MiB chunks with a Content-Length (chunked with &chunked=1)
  /upload        reads the body, answers {"received": N, "max_chunk": M}
  /sse?n=N&gap=S N server-sent events, S seconds apart
  /slow?delay=S  answers after S seconds
  /truncate?n=N&send=M  promises N bytes (1000), sends M (10), closes
  /early         answers 413 at once, without reading the body
  /drop          reads the head and closes without a word
  /close         answers with Connection: close
  /then-close    answers as keep-alive, then closes the connection anyway
Every connection and request is counted, so tests can see pooling and per-request routing.
"""

from __future__ import annotations

import json
from functools import partial
from urllib.parse import parse_qs, urlsplit

import h11
import trio

CHUNK = b"x" * (1 << 20)


class Backend:
    def __init__(self, name: str = "backend") -> None:
        self.name = name
        self.connections = 0
        self.requests: list[dict] = []
        self.port = 0
        self.host = ""

    async def start(self, nursery: trio.Nursery, host: str = "127.0.0.2", port: int = 0) -> Backend:
        listeners = await nursery.start(partial(trio.serve_tcp, self._serve, port, host=host))
        self.host, self.port = listeners[0].socket.getsockname()[:2]
        return self

    async def _serve(self, stream: trio.SocketStream) -> None:
        self.connections += 1
        conn = h11.Connection(h11.SERVER)
        try:
            while True:
                event = await _next(conn, stream)
                if type(event) is not h11.Request:
                    return
                if not await self._handle(conn, stream, event):
                    return
                if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                    return
                conn.start_next_cycle()
        except (trio.BrokenResourceError, trio.ClosedResourceError, h11.ProtocolError):
            pass
        finally:
            await stream.aclose()

    async def _handle(self, conn, stream, req: h11.Request) -> bool:
        url = urlsplit(req.target.decode())
        q = {k: v[0] for k, v in parse_qs(url.query).items()}
        record = {
            "backend": self.name,
            "method": req.method.decode(),
            "target": req.target.decode(),
            "headers": [[n.decode(), v.decode()] for n, v in req.headers],
        }
        self.requests.append(record)
        path = url.path
        send = stream.send_all
        if path == "/drop":
            return False  # read the head, answer nothing, close
        if path == "/early":
            await send(
                conn.send(h11.Response(status_code=413, headers=[("content-length", "2"), ("connection", "close")]))
            )
            await send(conn.send(h11.Data(data=b"no")) + conn.send(h11.EndOfMessage()))
            return False
        body_len = 0
        max_chunk = 0
        while True:
            event = await _next(conn, stream)
            if type(event) is h11.Data:
                body_len += len(event.data)
                max_chunk = max(max_chunk, len(event.data))
            elif type(event) is h11.EndOfMessage:
                break
            else:
                return False
        record["body_len"] = body_len
        if path == "/bytes":
            n = int(q.get("n", "0"))
            headers = [("content-type", "application/octet-stream")]
            if not q.get("chunked"):
                headers.append(("content-length", str(n)))
            await send(conn.send(h11.Response(status_code=200, headers=headers)))
            left = n
            while left > 0:
                piece = CHUNK if left >= len(CHUNK) else CHUNK[:left]
                await send(conn.send(h11.Data(data=piece)))
                left -= len(piece)
            await send(conn.send(h11.EndOfMessage()))
        elif path == "/sse":
            n, gap = int(q.get("n", "3")), float(q.get("gap", "0.3"))
            await send(
                conn.send(
                    h11.Response(
                        status_code=200, headers=[("content-type", "text/event-stream"), ("cache-control", "no-cache")]
                    )
                )
            )
            for i in range(n):
                await send(conn.send(h11.Data(data=f"id: {i}\ndata: event {i}\n\n".encode())))
                if i < n - 1:
                    await trio.sleep(gap)
            await send(conn.send(h11.EndOfMessage()))
        elif path == "/truncate":
            promised, sent = int(q.get("n", "1000")), int(q.get("send", "10"))
            await send(conn.send(h11.Response(status_code=200, headers=[("content-length", str(promised))])))
            await send(conn.send(h11.Data(data=b"x" * sent)))
            return False
        else:
            if path == "/slow":
                await trio.sleep(float(q.get("delay", "1")))
            doc = dict(record, body_len=body_len, max_chunk=max_chunk)
            body = json.dumps(doc).encode()
            headers = [("content-type", "application/json"), ("content-length", str(len(body)))]
            if path == "/close":
                headers.append(("connection", "close"))
            if path == "/then-close":
                # keep-alive by its headers, then the sandbox drops the connection anyway
                await send(conn.send(h11.Response(status_code=200, headers=headers)))
                await send(conn.send(h11.Data(data=body)) + conn.send(h11.EndOfMessage()))
                return False
            if path == "/hop":
                # hop-by-hop headers a sandbox might send; the client must not see them
                headers += [
                    ("connection", "x-secret"),
                    ("x-secret", "1"),
                    ("keep-alive", "timeout=5"),
                    ("proxy-authenticate", "Basic"),
                    ("trailer", "x-t"),
                    ("upgrade", "h2c"),
                ]
            await send(conn.send(h11.Response(status_code=200, headers=headers)))
            if req.method != b"HEAD":
                await send(conn.send(h11.Data(data=body)))
            await send(conn.send(h11.EndOfMessage()))
        return True


async def _next(conn: h11.Connection, stream: trio.SocketStream):
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            conn.receive_data(await stream.receive_some(1 << 16))
            continue
        return event
