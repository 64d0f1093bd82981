"""Log lines: one record is one line in either format, whatever a client puts in its Host or path."""

from __future__ import annotations

import json
import logging
import re

import pytest

from edge import log as edge_log
from edge.accesslog import ACCESS_LOG
from edge.accesslog import FIELDS as ACCESS_FIELDS

FIELDS = dict(
    client="127.0.0.1",
    host="3000-a.sandbox.localhost",
    sandbox="a",
    port=3000,
    method="GET",
    path="/",
    status=200,
    bytes_in=0,
    bytes_out=5,
    duration_ms=1.5,
    connect_ms=0.2,
    user_agent="curl/8",
    request_id="r-1",
    error=None,
)

# Everything some reader takes for the end of a line, or that would end a quoted field.
HOSTILE = [
    ("double quote", '"'),
    ("backslash", "\\"),
    ("line feed", "\n"),
    ("carriage return", "\r"),
    ("vertical tab", "\x0b"),
    ("form feed", "\x0c"),
    ("file separator", "\x1c"),
    ("NUL", "\x00"),
    ("escape (terminal)", "\x1b"),
    ("DEL", "\x7f"),
    ("NEL U+0085 (C1)", "\x85"),
    ("CSI U+009B (C1)", "\x9b"),
    ("line separator U+2028", "\u2028"),
    ("paragraph separator U+2029", "\u2029"),
]

TEXT_LINE = re.compile(r'\S+ 127\.0\.0\.1 "(?:[^"\\]|\\.)*" 200 in=0 out=5 1\.500ms "curl/8" id=r-1')
FIELDS_ORDER = ACCESS_FIELDS


@pytest.fixture
def emit():
    """Set up the log in a format, emit one access line, return the line as the sink would get it."""
    root = logging.getLogger()
    saved = root.handlers[:], root.level, ACCESS_LOG.text

    def run(fmt: str, **fields) -> str:
        edge_log.setup(fmt)
        ACCESS_LOG.configure(fmt=fmt)
        f = dict(FIELDS, **fields)
        ACCESS_LOG.take()
        ACCESS_LOG.line(
            f["client"].encode(),
            wire(f["host"]),
            f["sandbox"],
            f["port"],
            f["method"].encode(),
            wire(f["path"]),
            f["status"],
            f["bytes_in"],
            f["bytes_out"],
            f["duration_ms"],
            f["connect_ms"],
            f["user_agent"].encode(),
            f["request_id"].encode(),
            f["error"],
        )
        return ACCESS_LOG.take().decode("latin-1")

    yield run
    root.handlers[:], level, ACCESS_LOG.text = saved
    root.setLevel(level)


def wire(text: str) -> bytes:
    """What a client puts on the wire for this text: UTF-8 (the edge reads header bytes as latin-1)."""
    return text.encode("utf-8")


def _lines(out: str) -> list[str]:
    # splitlines() breaks on every separator any reader might honour (\x1c-\x1e, \x85, \u2028 ...)
    return out.splitlines()


@pytest.mark.parametrize("label, char", HOSTILE)
def test_text_access_line_escapes_what_could_forge_a_line_or_a_field(emit, label, char):
    """A Host and path carrying the character give one line whose quoted field still ends where it should."""
    forged = f'x{char}" 200 in=0 out=0 1ms'
    out = emit("text", host="3000-a.sandbox.localhost" + char, path="/p" + forged)
    [line] = _lines(out)
    # exactly one quoted field (inside it, only escaped quotes), then the real status and counts
    assert TEXT_LINE.fullmatch(line), line
    assert not any(c in line for _, c in HOSTILE if c not in '"\\')


def test_text_escapes_are_readable_and_unambiguous(emit):
    """`"` becomes \\", `\\` becomes \\\\, controls become \\xNN (U+2028, three UTF-8 bytes, shows as them)."""
    out = emit("text", path='/a"b\\c\nd\x85e\u2028')
    assert '"GET 3000-a.sandbox.localhost/a\\"b\\\\c\\x0ad\\xc2\\x85e\\xe2\\x80\\xa8" 200' in out


def test_text_message_lines_escape_controls_too(capsys):
    """An ordinary log message with a client's bytes in it stays on one line as well."""
    root = logging.getLogger()
    saved = root.handlers[:], root.level, ACCESS_LOG.text
    try:
        edge_log.setup("text")
        ACCESS_LOG.configure(fmt="text")
        logging.getLogger("edge.test").info("bad packet from %s", "x\ny\u2028z\x85")
        out = capsys.readouterr().out
    finally:
        root.handlers[:], level, ACCESS_LOG.text = saved
        root.setLevel(level)
    [line] = _lines(out)
    assert line.endswith("edge.test: bad packet from x\\x0ay\\u2028z\\x85")


@pytest.mark.parametrize("label, char", HOSTILE)
def test_json_access_line_stays_one_line_and_round_trips(emit, label, char):
    """json.dumps (ensure_ascii) escapes every control and U+0085/U+2028/U+2029: one line, exact values back."""
    out = emit("json", host="h" + char, path="/p" + char)
    [line] = _lines(out)
    assert line.isascii()
    doc = json.loads(line)
    assert doc["host"] == wire("h" + char).decode("latin-1") and doc["path"] == wire("/p" + char).decode("latin-1")
    assert tuple(doc) == FIELDS_ORDER
