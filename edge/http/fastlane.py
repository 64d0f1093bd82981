"""The fast lane: one exchange without h11, when both heads are plain (see h1.py for what that means).

Theory of operation. Most exchanges an edge carries look alike: a whole request head in one read, no
body (or a small one that came with it), answered by a head with a Content-Length. For those, h11's
state machines on both sides cost more than everything else the edge does, so this lane reads both
heads with h1.py, builds the upstream head with the same _plan (route, access, rewrite) as the h11
lane, and moves the response body by its count: in one write with the head when it is all there, by
splice(2) when a large part is still to come, read by read otherwise.

The lane gives way to h11 the moment an exchange stops being plain, without losing a byte:

  the request head is not plain  conn.run never enters this lane; h11 reads the same bytes.
  the edge answers itself        (an error, a 303) `_adopt` builds the client's h11 state as if h11 had
                                 read the request, and the answer goes out as in the h11 lane.
  the response is not plain      (1xx, chunked, close-delimited, a head split across reads) `_adopt`
                                 for the client, and an h11 client state that has sent this request
                                 and received what the sandbox sent so far; then forward.py's
                                 `_relay` takes it from there.

So every rule the h11 lane keeps (keep-alive only after a clean cycle, a stale pooled connection
retried once for idempotent requests, 502/504 before the response head, a broken body closes the
client connection) holds here too. The routing, error, streaming and private-sandbox suites in
tests/e2e run every case through both lanes (`http.fast_lane = false` is the h11 lane alone), and
tests/e2e/test_http_fastlane.py covers each hand-over.
"""

from __future__ import annotations

import h11
import trio

from edge.errors import EdgeError, UpstreamError
from edge.http import sockio
from edge.http.forward import (
    GONE,
    RETRYABLE,
    ClientGone,
    ClientMustClose,
    Exchange,
    Plan,
    Stale,
    clock,
)
from edge.http.h1 import RequestHead, parse_response, request_bytes, response_bytes
from edge.http.headers import rewrite_response
from edge.http.splice import SpliceError
from edge.http.upstream import Upstream
from edge.metrics import STATS

_read = sockio.read
_write_all = sockio.write_all


class FastLane:
    """The plain-exchange half of ClientConnection (see the module docstring)."""

    __slots__ = ()

    async def _fast_exchange(self, head: RequestHead, buf: bytes) -> bytes | None:
        """Serve the plain request at the start of `buf` (its body, if any, is in `buf` too).

        Returns what follows it in `buf` (a pipelined request, or b"") when the connection goes on in
        this lane, None when it must close. When h11 took over, `self.h` is set on return and conn.run
        goes on as after any h11 exchange.
        """
        ex = Exchange(clock())
        ex.method = method = head.method
        ex.headers = head.headers
        stop = head.end + head.length
        self._spliced_up = self._spliced_down = False
        try:
            plan = self._plan(ex, method, head.target, head.headers, head.host)
            if plan.redirect is not None:
                self._adopt(buf, head, "answer")
                await self._redirect(ex, plan)
                return b""
            out = request_bytes(method, plan.target, plan.headers)
            if head.length:
                out += buf[head.end:stop]
                ex.bytes_in = head.length
            sandbox = plan.sandbox
            self._enter(sandbox, plan.port)
            try:
                await self._fast_upstream(plan, out, head, buf, ex)
            finally:
                self._leave(sandbox)
        except EdgeError as exc:
            if self.h is None:
                self._adopt(buf, head, "answer")
            await self._send_error(exc, ex)
            return b""
        finally:
            self._finish(ex)
        if self.h is not None:
            return b""  # h11 holds the state now; conn.run reads what is left from it
        if not head.keepalive:
            return None
        return buf[stop:]

    def _adopt(self, buf: bytes, head: RequestHead, why: str) -> None:
        """Give the client connection to h11 mid-exchange: a state machine that has read this request.

        h1 accepts only heads h11 accepts, so h11 reads the same request from the same bytes; what
        follows it (a pipelined request) stays in h11's buffer, as if h11 had read it all along.
        """
        h = self._new_h11()
        h.receive_data(buf)
        event = h.next_event()
        while type(event) is not h11.EndOfMessage:
            if event is h11.NEED_DATA or type(event) is h11.ConnectionClosed:
                raise RuntimeError(f"h11 read a plain request differently: {event!r}")
            event = h.next_event()
        self.h = h
        self._req_keepalive = head.keepalive
        STATS.http_h11_exchanges[why] += 1

    async def _fast_upstream(self, plan: Plan, out: bytes, head: RequestHead, buf: bytes, ex: Exchange) -> None:
        """Send the request and relay the answer (or hand it to h11); returns once it was relayed whole."""
        ctx = self.ctx
        pool = ctx.pool
        sandbox = plan.sandbox
        port = plan.port
        key = (sandbox.id, sandbox.address, port)
        retry = not head.length and head.method in RETRYABLE
        fresh = False
        while True:
            t0 = clock()
            up = await pool.acquire(key, fresh)
            ex.connect_ms = round((clock() - t0) * 1000, 3)
            self.upstream = up
            up.client_fd = self.fd
            try:
                try:
                    await _write_all(up.fd, out)
                except OSError as exc:
                    if up.reused:  # the pooled connection died while idle: nothing was sent
                        raise Stale() from None
                    raise UpstreamError(sandbox.id, port, f"sending the request: {exc.strerror}") from None
                data = await self._response_start(up, ex)
                end = data.find(b"\r\n\r\n")
                resp = parse_response(data, end, head.method == b"HEAD") if end >= 0 else None
                if resp is None:
                    await self._to_h11_lane(up, plan, head, buf, data, ex)
                else:
                    await self._fast_relay(up, resp, data, head, ex)
                return
            except Stale:
                up.close()
                if retry and not self.revoked:
                    retry = False
                    fresh = True
                    continue
                raise UpstreamError(sandbox.id, port, "connection closed before a response") from None
            except BaseException:
                up.close()
                raise

    async def _response_start(self, up: Upstream, ex: Exchange) -> bytes:
        """The sandbox's first bytes, within response_head_timeout. A pooled connection that turns out
        closed (EOF or reset before any byte) is Stale: the caller may retry on a new one."""
        try:
            data = await self._read_upstream(up, trio.current_time() + self.ctx.http.response_head_timeout, ex)
        except OSError as exc:
            if up.reused:
                raise Stale() from None
            raise UpstreamError(ex.sandbox, ex.port, exc.strerror or type(exc).__name__) from None
        if not data:
            if up.reused:
                raise Stale()
            raise UpstreamError(ex.sandbox, ex.port, "closed before a response")
        return data

    async def _fast_relay(self, up: Upstream, resp, data: bytes, head: RequestHead, ex: Exchange) -> None:
        """Head and body to the client; the upstream connection back to the pool when it ended clean."""
        ex.status = resp.status
        headers = rewrite_response(resp.headers, resp.status, resp.tokens)
        if not head.keepalive:
            headers.append((b"connection", b"close"))
        out = response_bytes(resp.start, headers)
        length = resp.length
        body_at = resp.end
        have = len(data) - body_at
        if have >= length:  # the whole answer is here: one write
            if length:
                out += data[body_at:body_at + length] if have > length else data[body_at:]
            ex.bytes_out = length
            await self._send_client(out)
            # Bytes past the declared length are a sandbox's error: that connection carries no more.
            if have == length and resp.keepalive:
                self.ctx.pool.keep(up)
            else:
                up.close()
            return
        # The head sent, the body follows as it comes.
        if have:
            out += data[body_at:]
        ex.bytes_out = have
        remaining = length - have
        threshold = self.ctx.http.splice_threshold
        try:
            if threshold and remaining >= threshold:
                await self._send_client(out)
                try:
                    await self._splice_body(up.stream, self.stream, remaining, ex, False)
                except SpliceError as exc:
                    if not exc.source:
                        raise ClientGone() from None
                    raise
            else:
                fd = self.fd
                up_fd = up.fd
                read_size = self.ctx.http.read_size
                while True:
                    try:
                        await _write_all(fd, out)
                    except GONE:
                        raise ClientGone() from None
                    if not remaining:
                        break
                    out = await _read(up_fd, min(read_size, remaining))
                    if not out:
                        raise ConnectionError(f"closed after {length - remaining} of {length} body bytes")
                    remaining -= len(out)
                    ex.bytes_out += len(out)
        except (SpliceError, *GONE) as exc:
            # The client has our head: closing without the rest is the honest signal of truncation.
            self._log_broken(ex, exc)
            raise ClientMustClose() from None
        if resp.keepalive:
            self.ctx.pool.keep(up)
        else:
            up.close()

    async def _to_h11_lane(self, up: Upstream, plan: Plan, head: RequestHead, buf: bytes, data: bytes,
                           ex: Exchange) -> None:
        """The answer is not plain: both sides go to h11, which reads it from its first byte."""
        if up.reused and not data.startswith(b"HTTP/"):
            # Not an answer at all on a pooled connection: leftovers of an earlier answer that ran past
            # its length, or a connection gone bad while idle. Stale: retried on a new one if it may be.
            raise Stale()
        self._adopt(buf, head, "response")
        conn = h11.Connection(h11.CLIENT)
        conn.send(h11.Request(method=head.method, target=plan.target, headers=plan.headers, _parsed=True))
        if head.length:
            conn.send(h11.Data(data=buf[head.end:head.end + head.length]))
        conn.send(h11.EndOfMessage())
        conn.receive_data(data)
        up.h11 = conn
        up.reused = False  # it answered: whatever is wrong with the answer is the sandbox's, not staleness
        await self._relay(up, ex)
        self._release(up)
