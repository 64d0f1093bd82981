"""Error pages: one function turns any EdgeError into the response a client sees. Pure.

The JSON body keeps E2B's shape (`sandboxId`, `port`, `message`, `code`) so clients written for E2B
keep working; browsers get a small self-contained HTML page instead. CORS headers are always sent so
that browser code on another origin can read the error (E2B's edge omits them).
"""

from __future__ import annotations

import html
import json

from edge.errors import EdgeError

REASONS = {
    400: b"Bad Request",
    403: b"Forbidden",
    404: b"Not Found",
    408: b"Request Timeout",
    429: b"Too Many Requests",
    431: b"Request Header Fields Too Large",
    500: b"Internal Server Error",
    501: b"Not Implemented",
    502: b"Bad Gateway",
    503: b"Service Unavailable",
    504: b"Gateway Timeout",
    505: b"HTTP Version Not Supported",
    508: b"Loop Detected",
}

_HTML = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>{status} {reason}</title>
<style>body{{font:16px/1.5 system-ui,sans-serif;max-width:40rem;margin:12vh auto;padding:0 1rem;color:#222}}
h1{{font-size:1.4rem}}code{{background:#f3f3f3;padding:.1em .3em;border-radius:3px}}
p.meta{{color:#777;font-size:.85rem}}</style></head>
<body><h1>{message}</h1>{detail}<p class="meta">{status} {reason} &middot; {code}</p></body></html>
"""


def wants_html(headers: list[tuple[bytes, bytes]] | None) -> bool:
    """A browser navigation gets HTML; API clients (fetch, XHR, curl) get JSON."""
    if not headers:
        return False
    accept = b""
    for name, value in headers:
        if name == b"sec-fetch-mode":
            return value == b"navigate"
        if name == b"x-requested-with":
            return False
        if name == b"accept":
            accept = value
    return b"text/html" in accept


def render_error(
    exc: EdgeError, request_headers: list[tuple[bytes, bytes]] | None
) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """(status, headers, body) for this error, in the form the request asks for."""
    status = exc.status
    sandbox_id = exc.details.get("sandbox_id")
    port = exc.details.get("port")
    if wants_html(request_headers):
        detail = ""
        if sandbox_id:
            detail = f"<p>Sandbox <code>{html.escape(str(sandbox_id))}</code>"
            detail += f", port <code>{port}</code></p>" if port else "</p>"
        body = _HTML.format(
            status=status,
            reason=REASONS.get(status, b"").decode(),
            message=html.escape(exc.message),
            detail=detail,
            code=html.escape(exc.code),
        ).encode()
        ctype = b"text/html; charset=utf-8"
    else:
        doc: dict[str, object] = {}
        if sandbox_id is not None:
            doc["sandboxId"] = sandbox_id
        if port is not None:
            doc["port"] = port
        doc["message"] = exc.message
        doc["code"] = status
        doc["error"] = exc.code
        body = json.dumps(doc).encode()
        ctype = b"application/json"
    origin = b"*"
    if request_headers:
        for name, value in request_headers:
            if name == b"origin":
                origin = value
                break
    headers = [
        (b"content-type", ctype),
        (b"content-length", str(len(body)).encode()),
        (b"cache-control", b"no-store"),
        (b"access-control-allow-origin", origin),
        (b"vary", b"Origin, Accept"),
        (b"x-edge-error", exc.code.encode()),
    ]
    if exc.retry_after is not None:
        headers.append((b"retry-after", str(exc.retry_after).encode()))
    return status, headers, body
