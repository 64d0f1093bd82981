"""Hostile DNS packets: known parser traps, mutations of valid queries, and random bytes.

Used by tests/dns/test_fuzz.py (a fast subset) and bench/dns_bench.py (100,000+ packets).
"""

from __future__ import annotations

import random
import struct

import dns.message

SEEDS = [
    dns.message.make_query(name, rdtype, **kw).to_wire()
    for name, rdtype, kw in [
        ("3000-abc.sandbox.localhost", "A", {}),
        ("3000-abc.sandbox.localhost", "AAAA", {"use_edns": 0, "want_dnssec": True}),
        ("ns1.sandbox.localhost", "A", {}),
        ("x.ns1.sandbox.localhost", "TXT", {"use_edns": 0}),
        ("sandbox.localhost", "ANY", {}),
        ("big.sandbox.localhost", "TXT", {}),
        ("example.com", "A", {"use_edns": 0}),
    ]
]

_HEAD = struct.pack("!HHHHHH", 0x1234, 0x0100, 1, 0, 0, 0)

#: Packets that have crashed DNS parsers, dnslib's included.
TRAPS = [
    _HEAD + b"\xc0\x0c\x00\x01\x00\x01",  # compression pointer to itself
    _HEAD + b"\x01a\xc0\x0c\x00\x01\x00\x01",  # pointer loop through a label
    _HEAD + b"\xc0\xff\x00\x01\x00\x01",  # pointer past the end
    _HEAD + b"\x01a\xc0\x0e\x00\x01\x00\x01",  # forward pointer
    _HEAD + b"\x40abc\x00\x00\x01\x00\x01",  # extended label type 0x40
    _HEAD + b"\x80abc\x00\x00\x01\x00\x01",  # reserved label type 0x80
    _HEAD + b"\x02\xff\xfe\x00\x00\x01\x00\x01",  # a label that is not UTF-8
    _HEAD + (b"\x3f" + b"a" * 63) * 5 + b"\x00\x00\x01\x00\x01",  # a name over 255 bytes
    _HEAD + b"\x01a" * 200 + b"\x00\x00\x01\x00\x01",  # 200 labels
    _HEAD[:10] + b"\x00\x01" + SEEDS[0][12:] + b"\x00\x00\x01\x00\x01\x00\x00\x00\x00\x00\x03abc",  # A rdlen 3
    _HEAD[:10]
    + b"\x00\x01"
    + SEEDS[0][12:]
    + b"\x00\x00\x29\x04\xd0\x00\x00\x00\x00\x00\x08\x00\x01\x00\x09ab",  # bad option
    _HEAD[:6] + b"\xff\xff\xff\xff\xff\xff" + SEEDS[0][12:],  # huge counts
    _HEAD[:4] + b"\x00\x00" + b"\x00" * 6,  # no question at all
    b"\x12\x34\x01\x00\x00\x01",  # shorter than a header
    b"",
]


def mutate(rng: random.Random, packet: bytes) -> bytes:
    data = bytearray(packet)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(6)
        if op == 0 and data:  # flip bytes
            for _ in range(rng.randint(1, 3)):
                data[rng.randrange(len(data))] = rng.randrange(256)
        elif op == 1 and data:  # cut
            del data[rng.randrange(len(data)) :]
        elif op == 2:  # append garbage
            data += rng.randbytes(rng.randint(1, 40))
        elif op == 3 and len(data) > 12:  # insert a compression pointer somewhere in the name
            at = rng.randrange(12, len(data))
            data[at:at] = bytes([0xC0 | rng.randrange(64), rng.randrange(256)])
        elif op == 4 and len(data) >= 12:  # lie about the counts
            struct.pack_into("!H", data, rng.choice((4, 6, 8, 10)), rng.choice((0, 1, 2, 3, 255, 65535)))
        elif op == 5 and len(data) >= 4:  # random flags and opcode, QR kept clear mostly
            data[2] = rng.randrange(256) & (0x7F if rng.random() < 0.9 else 0xFF)
            data[3] = rng.randrange(256)
    return bytes(data)


def packets(count: int, seed: int = 0):
    """`count` hostile packets: the traps first, then mutations (80%) and random bytes (20%)."""
    rng = random.Random(seed)
    yield from TRAPS[:count]
    for _ in range(max(0, count - len(TRAPS))):
        if rng.random() < 0.8:
            yield mutate(rng, rng.choice(SEEDS + TRAPS))
        else:
            yield rng.randbytes(rng.randint(0, 300))


# --- the costliest messages a client could send (issue 15, item 1) -----------------------------------

#: A first name as long as names get: 126 one-letter labels (253 bytes with the root).
LONG_NAME = b"\x01a" * 126 + b"\x00"
_A_IN = b"\x00\x01\x00\x01"


def _fill(size: int, first: bytes, unit: bytes) -> tuple[bytes, int]:
    """`first`, then as many copies of `unit` as fit in `size` bytes with a 12-byte header."""
    count = (size - 12 - len(first)) // len(unit)
    return first + unit * count, count


def _head(qd: int = 1, an: int = 0, ns: int = 0, ar: int = 0) -> bytes:
    return struct.pack("!HHHHHH", 0x5EED, 0x0100, qd, an, ns, ar)


def worst(size: int = 4096) -> dict[str, bytes]:
    """The messages that cost the most to parse as their header asks, `size` bytes at most (4096: a
    UDP packet as edge reads it; 65535: a TCP message), by label."""
    out = {}
    body, n = _fill(size, LONG_NAME + _A_IN, b"\xc0\x0c" + _A_IN)
    out["questions: long name, then pointers"] = _head(qd=1 + n) + body
    body, n = _fill(size, b"", b"\x00" + _A_IN)
    out["questions: many plain ones"] = _head(qd=n) + body
    record = b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 60, 4) + b"\x7f\x00\x00\x01"
    body, n = _fill(size, LONG_NAME + _A_IN, record)
    out["answer records with pointer names"] = _head(an=n) + body
    out["authority records with pointer names"] = _head(ns=n) + body
    out["additional records with pointer names"] = _head(ar=n) + body
    return out


def fat_but_well_formed(size: int = 4096) -> dict[str, bytes]:
    """Queries the header allows (one question, one additional record) whose one record is as large
    as `size` lets it be, by label: dnslib would parse every option or string in it."""
    question = b"\x083000-abc\x07sandbox\x09localhost\x00" + _A_IN
    room = size - 12 - len(question) - 11
    options = b"\x00\x01\x00\x00" * (room // 4)
    strings = b"\x00" * room
    return {
        "OPT with thousands of empty options": _head(ar=1)
        + question
        + b"\x00\x00\x29\x04\xd0\x00\x00\x00\x00"
        + struct.pack("!H", len(options))
        + options,
        "TXT of thousands of empty strings": _head(ar=1)
        + question
        + b"\x00\x00\x10\x00\x01\x00\x00\x00\x00"
        + struct.pack("!H", len(strings))
        + strings,
        "longest name the question may have": _head() + b"\x01a" * 108 + question,
    }
