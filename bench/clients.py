"""Small clients for the scenarios wrk cannot drive: bulk bodies, WebSocket echo, idle sockets, and for
TLS: new connections (a full handshake each) and curl downloads.

They run in the runner's own process, which bench/run.py pins to the load core. They do as little
per byte as Python allows (recv_into a reused buffer, pre-built frames) so that the proxy, not the
client, is what a figure measures; where that cannot hold on two cores, bench/README.md says so.
Every loop has a deadline; every socket a timeout.
"""

from __future__ import annotations

import errno
import hashlib
import os
import selectors
import socket
import ssl
import subprocess
import time

CHUNK = 1 << 20
TIMEOUT = 30.0


def connect(port: int, ip: str = "127.0.0.1") -> socket.socket:
    s = socket.create_connection((ip, port), timeout=TIMEOUT)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


class Reader:
    """Reads HTTP/1.1 responses off one socket: heads kept, bodies counted (Content-Length or chunked)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = bytearray()
        self.view = memoryview(bytearray(CHUNK))

    def _fill(self) -> None:
        n = self.sock.recv_into(self.view)
        if n == 0:
            raise ConnectionError("the proxy closed the connection")
        self.buf += self.view[:n]

    def _line(self, sep: bytes = b"\r\n") -> bytes:
        while (i := self.buf.find(sep)) < 0:
            self._fill()
        out = bytes(self.buf[:i])
        del self.buf[: i + len(sep)]
        return out

    def head(self) -> tuple[int, dict[bytes, bytes]]:
        lines = self._line(b"\r\n\r\n").split(b"\r\n")
        status = int(lines[0].split()[1])
        fields = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            fields[name.strip().lower()] = value.strip()
        return status, fields

    def skip(self, n: int) -> None:
        have = min(n, len(self.buf))
        del self.buf[:have]
        n -= have
        while n > 0:
            got = self.sock.recv_into(self.view, min(n, CHUNK))
            if got == 0:
                raise ConnectionError("the proxy closed the connection mid-body")
            n -= got

    def body(self, fields: dict[bytes, bytes], keep: bool = False) -> tuple[int, bytes]:
        """Read one body; returns (length, the bytes if keep else b"")."""
        if b"chunked" in fields.get(b"transfer-encoding", b"").lower():
            total, kept = 0, bytearray()
            while (size := int(self._line().split(b";")[0], 16)) > 0:
                if keep:
                    while len(self.buf) < size:
                        self._fill()
                    kept += self.buf[:size]
                    del self.buf[:size]
                else:
                    self.skip(size)
                self._line()
                total += size
            while self._line():
                pass
            return total, bytes(kept)
        n = int(fields.get(b"content-length", b"0"))
        if keep:
            while len(self.buf) < n:
                self._fill()
            out = bytes(self.buf[:n])
            del self.buf[:n]
            return n, out
        self.skip(n)
        return n, b""


def _request(host: str, method: str, path: str, length: int | None = None) -> bytes:
    extra = b"" if length is None else b"content-length: %d\r\n" % length
    return b"%s %s HTTP/1.1\r\nhost: %s\r\n%s\r\n" % (method.encode(), path.encode(), host.encode(), extra)


def download(port: int, host: str, path: str, repeat: int, ip: str = "127.0.0.1") -> dict:
    """GET `path` `repeat` times on one keep-alive connection; MB/s (10^6 bytes) over the whole run."""
    with connect(port, ip) as s:
        r, total, bad = Reader(s), 0, 0
        t0 = time.perf_counter()
        for _ in range(repeat):
            s.sendall(_request(host, "GET", path))
            status, fields = r.head()
            n, _ = r.body(fields)
            bad += status != 200
            total += n
        dt = time.perf_counter() - t0
    return {"mbps": total / dt / 1e6, "bytes": total, "seconds": dt, "non2xx": bad}


def upload(port: int, host: str, path: str, size: int, repeat: int, ip: str = "127.0.0.1") -> dict:
    """POST a `size`-byte body `repeat` times; the sink answers with the count it read, which must match."""
    block = memoryview(os.urandom(CHUNK))
    with connect(port, ip) as s:
        r, total, bad, short = Reader(s), 0, 0, 0
        t0 = time.perf_counter()
        for _ in range(repeat):
            s.sendall(_request(host, "POST", path, size))
            left = size
            while left > 0:
                n = min(left, CHUNK)
                s.sendall(block[:n])
                left -= n
            status, fields = r.head()
            _, body = r.body(fields, keep=True)
            bad += status != 200
            short += status == 200 and int(body) != size
            total += size
        dt = time.perf_counter() - t0
    if short:
        raise RuntimeError(f"the sink received fewer bytes than sent in {short} of {repeat} uploads")
    return {"mbps": total / dt / 1e6, "bytes": total, "seconds": dt, "non2xx": bad}


# --- WebSocket echo ---------------------------------------------------------------------------------

_WS_KEY = b"dGhlIHNhbXBsZSBub25jZQ=="


def _ws_frame(payload: bytes, mask: bytes = b"\x1f\x2e\x3d\x4c") -> bytes:
    """One masked binary client frame (RFC 6455 5.2), payload under 126 bytes."""
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bytes((0x82, 0x80 | len(payload))) + mask + masked


def ws_open(port: int, host: str, path: str, ip: str = "127.0.0.1") -> socket.socket:
    s = connect(port, ip)
    s.sendall(
        b"GET %s HTTP/1.1\r\nhost: %s\r\nupgrade: websocket\r\nconnection: Upgrade\r\n"
        b"sec-websocket-key: %s\r\nsec-websocket-version: 13\r\n\r\n" % (path.encode(), host.encode(), _WS_KEY)
    )
    r = Reader(s)
    status, _ = r.head()
    if status != 101 or r.buf:
        raise RuntimeError(f"WebSocket upgrade answered {status}")
    return s


def ws_echo(
    port: int,
    host: str,
    path: str,
    seconds: float,
    connections: int,
    window: int,
    size: int,
    ip: str = "127.0.0.1",
) -> dict:
    """Messages per second echoed: `connections` sockets, each keeping `window` messages in flight.

    Frames are fixed-size, so every `2 + size` bytes back is one echoed message; a reply that is
    cut across reads is counted when its last byte arrives.
    """
    frame = _ws_frame(os.urandom(size))
    echo_len = 2 + size
    batch = frame * window
    sel = selectors.DefaultSelector()
    socks = [ws_open(port, host, path, ip) for _ in range(connections)]
    pending = {}
    for s in socks:
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ)
        pending[s] = 0
    received = 0
    t0 = time.perf_counter()
    deadline = t0 + seconds
    try:
        for s in socks:
            s.send(batch)
        while (now := time.perf_counter()) < deadline:
            for key, _ in sel.select(deadline - now):
                s = key.fileobj
                data = s.recv(65536)
                if not data:
                    raise ConnectionError("the tunnel closed")
                have = pending[s] + len(data)
                done, pending[s] = divmod(have, echo_len)
                received += done
                if done:
                    s.sendall(batch[: done * len(frame)] if done <= window else frame * done)
        dt = time.perf_counter() - t0
    finally:
        for s in socks:
            sel.unregister(s)
            s.close()
    return {"mps": received / dt, "messages": received, "seconds": dt}


# --- idle keep-alive connections --------------------------------------------------------------------


def open_idle(port: int, host: str, count: int, seconds: float) -> list[socket.socket]:
    """`count` connections, each after one completed request, left open and idle (stops at the deadline)."""
    deadline = time.monotonic() + seconds
    req = _request(host, "GET", "/")
    socks = []
    try:
        while len(socks) < count and time.monotonic() < deadline:
            s = connect(port)
            socks.append(s)
            s.sendall(req)
            r = Reader(s)
            status, fields = r.head()
            r.body(fields)
            if status != 200:
                raise RuntimeError(f"idle connection {len(socks)} got {status}")
    except BaseException:
        for s in socks:
            s.close()
        raise
    return socks


def still_served(socks: list[socket.socket], host: str, sample: int = 100) -> int:
    """How many of (a spread sample of) the idle connections answer a second request."""
    req = _request(host, "GET", "/")
    step = max(1, len(socks) // sample)
    ok = 0
    for s in socks[::step][:sample]:
        try:
            s.sendall(req)
            r = Reader(s)
            status, fields = r.head()
            r.body(fields)
            ok += status == 200
        except OSError:
            pass
    return ok


# --- new connections, TLS or plain ------------------------------------------------------------------


def tls_client(verify_with: str | None = None) -> ssl.SSLContext:
    """A client context that offers ALPN http/1.1 and never resumes a session (every handshake is full).

    The load clients do not check the chain (`verify_with=None`): it would spend the load core on a
    second signature check per connection; `tls_probe` checks it once per proxy with the run's CA.
    """
    ctx = ssl.create_default_context(cafile=verify_with) if verify_with else ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if not verify_with:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


def tls_probe(port: int, server_name: str, cafile: str, ip: str = "127.0.0.1") -> dict:
    """One verified handshake: the protocol, cipher, ALPN and certificate (SHA-256) the proxy offers."""
    with connect(port, ip) as raw, tls_client(cafile).wrap_socket(raw, server_hostname=server_name) as s:
        der = s.getpeercert(binary_form=True) or b""
        return {
            "version": s.version(),
            "cipher": (s.cipher() or ("?",))[0],
            "alpn": s.selected_alpn_protocol(),
            "cert_sha256": hashlib.sha256(der).hexdigest(),
        }


class _Fresh:
    """One connection of `new_connections`: its socket, where it is, what it has read."""

    __slots__ = ("sock", "state", "buf")

    def __init__(self, sock: socket.socket) -> None:
        self.sock, self.state, self.buf = sock, "connect", bytearray()


def _complete(buf: bytearray) -> bool:
    """True when buf holds a whole response with a Content-Length body."""
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        return False
    for line in bytes(buf[:end]).split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(buf) - end - 4 >= int(value)
    return False  # no length: the body ends at EOF


def new_connections(
    port: int,
    host: str,
    path: str,
    seconds: float,
    concurrency: int,
    tls: ssl.SSLContext | None = None,
    server_name: str | None = None,
    ip: str = "127.0.0.1",
) -> dict:
    """Connections per second, each: connect, a full TLS handshake (with `tls`), one GET, close.

    `concurrency` connections at a time from one non-blocking loop (one process, so the load core
    spends nothing on switching between clients). Each GET says `connection: close`; the client
    closes as soon as the response is complete. Completed = a whole response; non2xx counts those
    not 200, socket_errors the connections that failed (refused, reset, a TLS alert).
    """
    req = b"GET %s HTTP/1.1\r\nhost: %s\r\nconnection: close\r\n\r\n" % (path.encode(), host.encode())
    sel = selectors.DefaultSelector()
    done = bad = failed = 0

    def start() -> None:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        err = s.connect_ex((ip, port))
        if err not in (0, errno.EINPROGRESS):
            s.close()
            raise OSError(err, os.strerror(err))
        sel.register(s, selectors.EVENT_WRITE, _Fresh(s))

    def finish(c: _Fresh, ok: bool) -> None:
        nonlocal done, bad, failed
        sel.unregister(c.sock)
        c.sock.close()
        if not ok:
            failed += 1
        else:
            done += 1
            bad += not c.buf.startswith(b"HTTP/1.1 200 ")
        if time.perf_counter() < deadline:
            start()

    def advance(c: _Fresh) -> None:
        if c.state == "connect":
            if c.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                return finish(c, False)
            if tls is not None:
                sel.unregister(c.sock)
                c.sock = tls.wrap_socket(c.sock, server_hostname=server_name, do_handshake_on_connect=False)
                sel.register(c.sock, selectors.EVENT_WRITE, c)
                c.state = "handshake"
            else:
                c.state = "send"
        if c.state == "handshake":
            try:
                c.sock.do_handshake()
            except ssl.SSLWantReadError:
                sel.modify(c.sock, selectors.EVENT_READ, c)
                return None
            except ssl.SSLWantWriteError:
                sel.modify(c.sock, selectors.EVENT_WRITE, c)
                return None
            c.state = "send"
        if c.state == "send":
            if c.sock.send(req) != len(req):
                return finish(c, False)
            c.state = "read"
            sel.modify(c.sock, selectors.EVENT_READ, c)
            return None
        while True:  # read
            try:
                data = c.sock.recv(65536)
            except (ssl.SSLWantReadError, BlockingIOError):
                return None
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                data = b""
            if not data:
                return finish(c, bool(c.buf))
            c.buf += data
            if _complete(c.buf):
                return finish(c, True)

    t0 = time.perf_counter()
    deadline = t0 + seconds
    for _ in range(concurrency):
        start()
    try:
        while sel.get_map() and (now := time.perf_counter()) < deadline + TIMEOUT:
            for key, _ in sel.select(min(1.0, deadline + TIMEOUT - now)):
                try:
                    advance(key.data)
                except (OSError, ssl.SSLError):
                    finish(key.data, False)
        # the last ones end a little after the deadline: count them over the time they took
        dt = time.perf_counter() - t0
    finally:
        for key in list(sel.get_map().values()):
            key.fileobj.close()
        sel.close()
    return {"cps": done / dt, "connections": done, "seconds": dt, "non2xx": bad, "socket_errors": failed}


# --- downloads with curl ----------------------------------------------------------------------------


def curl_download(url: str, resolve: str, repeat: int, cafile: str | None = None) -> dict:
    """GET `url` `repeat` times with curl on one connection (TLS when the URL is https); MB/s.

    `resolve` is curl's `--resolve HOST:PORT:ADDR`, so the URL can carry the sandbox name (SNI and
    Host) without DNS. The rate is bytes over the sum of curl's own transfer times (its process start
    is not counted). curl runs where this process runs: bench/run.py pins it to the load core.
    """
    cmd = ["curl", "-sS", "--resolve", resolve, "-w", "%{http_code} %{size_download} %{time_total}\n"]
    if cafile:
        cmd += ["--cacert", cafile]
    for _ in range(repeat):
        cmd += [url, "-o", "/dev/null"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=60 + 30 * repeat)
    lines = [ln.split() for ln in out.stdout.splitlines() if ln.strip()]
    if len(lines) != repeat or out.returncode != 0:
        raise RuntimeError(f"curl exited {out.returncode}: {out.stderr.strip()[:300]}")
    total = sum(int(n) for _, n, _ in lines)
    dt = sum(float(t) for _, _, t in lines)
    return {
        "mbps": total / dt / 1e6,
        "bytes": total,
        "seconds": dt,
        "non2xx": sum(code != "200" for code, _, _ in lines),
    }
