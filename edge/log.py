"""Logging: the edge's own messages as JSON lines (or text), on stdout. A leaf: it imports nothing of
edge. The access log is edge/accesslog.py (one line per request, built and written without the
logging module); `accesslog.setup(config)` sets up both for a server process.

Messages never include a token, cookie or Authorization value.
"""

from __future__ import annotations

import json
import logging
import sys
import time


# JSON lines: json.dumps keeps ensure_ascii=True, so U+0085, U+2028 and U+2029 (line breaks to some
# log shippers and JavaScript readers) come out as \u escapes, like every other non-ASCII character.
class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc = {
            "time": _iso(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return json.dumps(doc, separators=(",", ":"))


# The text format must keep one record on one line and a quoted field inside its quotes, whatever a
# client put in its Host or path (decoded as latin-1, so every byte 0x80-0x9f is a C1 control). So `"`
# and `\` are escaped, and so is everything some reader takes for a line break or a control: C0, DEL,
# C1 (U+0085 NEL among them), U+2028 and U+2029. One translate table, built once.
_TEXT_ESCAPES = {c: f"\\x{c:02x}" for c in (*range(0x20), *range(0x7F, 0xA0))}
_TEXT_ESCAPES.update({ord('"'): '\\"', ord("\\"): "\\\\", 0x2028: "\\u2028", 0x2029: "\\u2029"})


def escape_text(value: object) -> str:
    """`value` as text that stays on its line and inside double quotes (the text log format)."""
    return str(value).translate(_TEXT_ESCAPES)


class _TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = f"{_iso(record.created)} {record.levelname.lower():7} {record.name}: {escape_text(record.getMessage())}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def _iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1000):03d}Z"


def setup(fmt: str = "json", level: int = logging.INFO, handler: logging.Handler | None = None) -> None:
    """Messages in `fmt` through `handler` (default: a plain one on stdout). A server process passes
    edge.accesslog's, which shares stdout with the access log's writer (accesslog.setup)."""
    handler = handler or logging.StreamHandler(sys.stdout)
    handler.setFormatter(_JsonFormatter() if fmt == "json" else _TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
