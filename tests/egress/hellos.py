"""ClientHellos for the tests: real ones from Python's ssl (OpenSSL), and hand-built ones."""

from __future__ import annotations

import ssl


def real_hello(server_hostname: str | None) -> bytes:
    """The first flight OpenSSL sends as a client: one record holding the whole ClientHello."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    conn = ctx.wrap_bio(incoming, outgoing, server_hostname=server_hostname)
    try:
        conn.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return outgoing.read()


def handshake_of(records: bytes) -> bytes:
    """The handshake bytes inside a run of records."""
    out, pos = bytearray(), 0
    while pos < len(records):
        length = int.from_bytes(records[pos + 3 : pos + 5], "big")
        out += records[pos + 5 : pos + 5 + length]
        pos += 5 + length
    return bytes(out)


def refragment(records: bytes, sizes: list[int]) -> bytes:
    """The same handshake bytes in records of `sizes` bytes (the rest in a last record)."""
    hs = handshake_of(records)
    out, pos = bytearray(), 0
    for size in [*sizes, len(hs)]:
        chunk = hs[pos : pos + size]
        if not chunk:
            break
        out += b"\x16\x03\x01" + len(chunk).to_bytes(2, "big") + chunk
        pos += len(chunk)
    return bytes(out)


def _vec(data: bytes, n: int) -> bytes:
    return len(data).to_bytes(n, "big") + data


def server_name(*names: bytes, name_type: int = 0) -> tuple[int, bytes]:
    entries = b"".join(bytes((name_type,)) + _vec(n, 2) for n in names)
    return 0, _vec(entries, 2)


def built_hello(
    extensions: list[tuple[int, bytes]] | None,
    version: int = 0x0303,
    session_id: bytes = b"\x07" * 32,
    suites: bytes = b"\x13\x01\x13\x02",
) -> bytes:
    """A ClientHello record made by hand: `extensions` as (type, data); None for none at all."""
    body = version.to_bytes(2, "big") + b"\x11" * 32 + _vec(session_id, 1) + _vec(suites, 2) + _vec(b"\x00", 1)
    if extensions is not None:
        body += _vec(b"".join(t.to_bytes(2, "big") + _vec(d, 2) for t, d in extensions), 2)
    hs = b"\x01" + _vec(body, 3)
    return b"\x16\x03\x01" + _vec(hs, 2)
