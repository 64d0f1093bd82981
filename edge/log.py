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
)


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


class _TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        fields = getattr(record, "fields", None)
        if fields is not None:
            f = fields
            return (
                f'{f["time"]} {f["client"]} "{f["method"]} {f["host"]}{f["path"]}" {f["status"]} '
                f'in={f["bytes_in"]} out={f["bytes_out"]} {f["duration_ms"]}ms'
            )
        line = f"{_iso(record.created)} {record.levelname.lower():7} {record.name}: {record.getMessage()}"
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
