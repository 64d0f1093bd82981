"""The access log: one line per request, built cheaply on the event loop, written in batches off it.

Theory of operation. Each exchange appends one formatted line to an in-memory buffer: no
logging.LogRecord, no json.dumps, no strftime, no write on the event loop. The timestamp string is
made once per millisecond; a value is escaped only when it holds a character that needs it (almost
never). A writer task (`AccessLog.run`) hands the buffer to a worker thread when it holds 64 KiB, or
every 100 ms, whichever comes first, so a line reaches the sink within a second at low traffic.

Serving never waits on the log: the buffer is bounded (`MAX_BUFFER`); when the sink does not keep up
(a log collector that stopped reading our stdout pipe, a full disk), lines past the bound are dropped
and counted in `edge_access_log_dropped_total`, and the writer thread stays blocked on its write while
the edge goes on. When the sink reads again, new lines flow again.

The sink: stdout by default (`-`), or a file given by `--access-log PATH` / `access_log_file`, opened
in append mode and reopened on SIGUSR1 (the logrotate convention nginx follows: rename, signal, and
the new file is used from the next batch). With stdout as the sink, the edge's other log lines go
through the same writer while it runs, so a batch and a message can never interleave mid-line.
Stopping flushes what is buffered (for at most a second, if the sink is stuck).

Formats: JSON lines (the default) with the fields of `FIELDS`, or `text` for people.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import time
from typing import Any

import trio

from edge import log as edge_log
from edge.config import Config
from edge.metrics import STATS

FIELDS = (
    "time",
    "client",
    "host",
    "sandbox",
    "port",
    "method",
    "path",
    "status",
    "bytes_in",
    "bytes_out",
    "duration_ms",
    "connect_ms",
    "user_agent",
    "request_id",
    "error",
)
BATCH = 64 * 1024
EVERY = 0.1
MAX_BUFFER = 4 * 1024 * 1024

# Bytes that can go into a JSON string as they are: printable ASCII but `"` and `\`. Anything else
# (and every byte of a text-format field that is not printable ASCII) takes the slow, escaping path.
_CLEAN_JSON = bytes(range(0x20, 0x7F)).replace(b'"', b"").replace(b"\\", b"")


def _is_clean(value: bytes) -> bool:
    return not value.translate(None, _CLEAN_JSON)  # nothing left once every clean byte is deleted


def _json_str(value: bytes) -> bytes:
    if _is_clean(value):
        return b'"' + value + b'"'
    return json.dumps(value.decode("latin-1")).encode()  # ensure_ascii: \u escapes, one line


# The text format: `"` and `\` escaped, every byte that is not printable ASCII as \xNN, so a line is
# ASCII, stays one line, and a quoted field ends where it should (whatever a client sent).
_TEXT_BYTE = [bytes([b]) if 0x20 <= b < 0x7F else b"\\x%02x" % b for b in range(256)]
_TEXT_BYTE[ord('"')] = b'\\"'
_TEXT_BYTE[ord("\\")] = b"\\\\"


def _text_str(value: bytes) -> bytes:
    if _is_clean(value):
        return value
    return b"".join([_TEXT_BYTE[b] for b in value])


class _Clock:
    """ISO-8601 UTC with milliseconds, the seconds part made once per second."""

    __slots__ = ("second", "prefix")

    def __init__(self) -> None:
        self.second = -1
        self.prefix = b""

    def now(self) -> bytes:
        t = time.time()
        second = int(t)
        if second != self.second:
            self.second = second
            self.prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)).encode()
        return b"%s.%03dZ" % (self.prefix, int((t - second) * 1000))


class AccessLog:
    """The process's access log (`ACCESS_LOG`); `configure()` once, `run()` in the server's nursery."""

    def __init__(self) -> None:
        self.text = False
        self.max_buffer = MAX_BUFFER
        self.path = "-"
        self._buf = bytearray()
        self._clock = _Clock()
        self._wake: trio.Event | None = None
        self._fd = -1
        self._reopen = False
        self.running = False

    def configure(self, *, fmt: str = "json", path: str = "-", buffer: int = MAX_BUFFER) -> None:
        self.text = fmt == "text"
        self.max_buffer = buffer
        self.path = path or "-"

    # --- the hot path ------------------------------------------------------------------------------

    def line(
        self,
        client: bytes,
        host: bytes,
        sandbox: str | None,
        port: int | None,
        method: bytes,
        path: bytes,
        status: int,
        bytes_in: int,
        bytes_out: int,
        duration_ms: float,
        connect_ms: float | None,
        user_agent: bytes,
        request_id: bytes,
        error: str | None,
    ) -> None:
        buf = self._buf
        if len(buf) >= self.max_buffer:
            STATS.access_log_dropped += 1
            return
        ts = self._clock.now()
        if self.text:
            out = b'%s %s "%s %s%s" %d in=%d out=%d %.3fms "%s" id=%s%s\n' % (
                ts,
                client,
                _text_str(method),
                _text_str(host),
                _text_str(path),
                status,
                bytes_in,
                bytes_out,
                duration_ms,
                _text_str(user_agent) if user_agent else b"-",
                _text_str(request_id) or b"-",
                b" error=" + error.encode() if error else b"",
            )
        else:
            out = (
                b'{"time":"%s","client":"%s","host":%s,"sandbox":%s,"port":%s,"method":%s,"path":%s,'
                b'"status":%d,"bytes_in":%d,"bytes_out":%d,"duration_ms":%.3f,"connect_ms":%s,'
                b'"user_agent":%s,"request_id":%s,"error":%s}\n'
            ) % (
                ts,
                client,
                _json_str(host),
                b"null" if sandbox is None else _json_str(sandbox.encode()),
                b"null" if port is None else b"%d" % port,
                _json_str(method),
                _json_str(path),
                status,
                bytes_in,
                bytes_out,
                duration_ms,
                b"null" if connect_ms is None else b"%.3f" % connect_ms,
                _json_str(user_agent),
                _json_str(request_id),
                b"null" if error is None else b'"%s"' % error.encode(),
            )
        buf += out
        if len(buf) >= BATCH and self._wake is not None:
            self._wake.set()

    def append(self, data: bytes) -> bool:
        """A whole line from elsewhere (the edge's other log lines, when they share stdout). False
        when the writer is not running: the caller writes it itself."""
        if not self.running:
            return False
        if len(self._buf) >= self.max_buffer:
            STATS.access_log_dropped += 1
            return True
        self._buf += data
        return True

    def take(self) -> bytes:
        """Everything buffered, now (tests read lines this way when no writer runs)."""
        data = bytes(self._buf)
        self._buf.clear()
        return data

    # --- the writer --------------------------------------------------------------------------------

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Write batches until cancelled; then flush what is left (at most a second)."""
        self._open()
        self._wake = trio.Event()
        self.running = True
        task_status.started()
        try:
            with trio.open_signal_receiver(signal.SIGUSR1) as signals:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._on_usr1, signals)
                    while True:
                        with trio.move_on_after(EVERY):
                            await self._wake.wait()
                        self._wake = trio.Event()
                        await self._flush()
        finally:
            self.running = False
            with trio.move_on_after(1.0) as scope:
                scope.shield = True
                await self._flush()
            if self._fd > 2:
                os.close(self._fd)
            self._fd = -1

    async def _on_usr1(self, signals: Any) -> None:
        async for _ in signals:
            self._reopen = True
            if self._wake is not None:
                self._wake.set()

    async def _flush(self) -> None:
        if self._reopen:
            self._reopen = False
            self._open()
        if not self._buf:
            return
        data = bytes(self._buf)
        self._buf.clear()
        await trio.to_thread.run_sync(self._write_all, self._fd, data, abandon_on_cancel=True)

    def _open(self) -> None:
        if self.path == "-":
            self._fd = 1
            return
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
        old, self._fd = self._fd, fd
        if old > 2:
            os.close(old)

    @staticmethod
    def _write_all(fd: int, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                view = view[os.write(fd, view) :]
            except InterruptedError:
                continue
            except OSError:
                STATS.access_log_dropped += data.count(b"\n")  # the sink is gone: say how much was lost
                return


ACCESS_LOG = AccessLog()


class SharedStdoutHandler(logging.StreamHandler):
    """The edge's other log lines: through the access log's writer while it runs and owns stdout."""

    def emit(self, record: logging.LogRecord) -> None:
        if ACCESS_LOG.path == "-" and ACCESS_LOG.running:
            try:
                line = (self.format(record) + "\n").encode("utf-8", "backslashreplace")
            except Exception:  # noqa: BLE001 - logging must not raise
                self.handleError(record)
                return
            if ACCESS_LOG.append(line):
                return
        super().emit(record)


def setup(config: Config) -> None:
    """A server process's logging: its messages (edge.log) through the handler that shares stdout
    with the access log, and the access log in the same format, to `access_log_file`."""
    edge_log.setup(config.log_format, handler=SharedStdoutHandler(sys.stdout))
    ACCESS_LOG.configure(fmt=config.log_format, path=config.access_log_file, buffer=config.access_log_buffer)
