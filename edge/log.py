"""Logging: human lines on stderr-free stdout, one access line per request in a fixed format.

`setup()` is called once by the CLI. The access log is its own logger ("edge.access"); the HTTP edge
calls `access()` only when it is enabled, so a disabled log costs one attribute test per request.
Fields never include a token, cookie or Authorization value.
"""

from __future__ import annotations

import json
import logging
import sys
import time

ACCESS = logging.getLogger("edge.access")

#: The access-log fields, in order. Tests assert this shape.
ACCESS_FIELDS = (
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


# JSON lines: json.dumps keeps ensure_ascii=True, so U+0085, U+2028 and U+2029 (line breaks to some
# log shippers and JavaScript readers) come out as \u escapes, like every other non-ASCII character.
class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        fields = getattr(record, "fields", None)
        if fields is not None:
            return json.dumps(fields, separators=(",", ":"))
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
        fields = getattr(record, "fields", None)
        if fields is not None:
            f = {k: escape_text(fields.get(k, "-")) for k in ACCESS_FIELDS}
            return (
                f'{f["time"]} {f["client"]} "{f["method"]} {f["host"]}{f["path"]}" {f["status"]} '
                f'in={f["bytes_in"]} out={f["bytes_out"]} {f["duration_ms"]}ms "{f["user_agent"]}" '
                f'id={f["request_id"]}' + (f' error={f["error"]}' if fields.get("error") else "")
            )
        line = f"{_iso(record.created)} {record.levelname.lower():7} {record.name}: {escape_text(record.getMessage())}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def _iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1000):03d}Z"


def setup(fmt: str = "json", level: int = logging.INFO, access: bool = True) -> None:
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(_JsonFormatter() if fmt == "json" else _TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    ACCESS.disabled = not access


def access(**fields: object) -> None:
    """Emit one access line with the fields of ACCESS_FIELDS, in that order (time is filled here)."""
    fields = {"time": _iso(time.time()), **fields}
    ACCESS.info("", extra={"fields": fields})
