"""Never down: hostile packets over real sockets get FORMERR or nothing, and the server keeps answering."""

from __future__ import annotations

import socket

import dns.message
import pytest
import trio

from tests.dns import fuzz
from tests.dns.support import raw_udp_async, start_dns, tcp, udp, write_zone

Q = "sandbox.localhost"


@pytest.fixture
async def server(nursery, tmp_path):
    write_zone(tmp_path)
    return await start_dns(nursery, tmp_path, rrl_rate=0)


async def still_answers(addr) -> None:
    for ask in (udp, tcp):
        reply = await ask(dns.message.make_query(f"3000-after.{Q}", "A"), addr)
        assert reply.answer[0][0].to_text() == "127.0.0.1"


@pytest.mark.parametrize("index", range(len(fuzz.TRAPS) - 2))
async def test_parser_traps_get_formerr_or_nothing_and_server_keeps_answering(server, index):
    """Pointer loops, non-UTF-8 labels, over-long names...: FORMERR with the ID, or no reply."""
    packet = fuzz.TRAPS[index]
    reply = await raw_udp_async(packet, server, timeout=0.5)
    if reply is not None:
        assert reply[:2] == packet[:2] and reply[2] & 0x80
    await still_answers(server)


def flood(addr, packets: list[bytes]) -> int:
    """Send every packet over UDP, reading replies as they come; return how many came back."""
    got = 0
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.setblocking(False)
        for packet in packets:
            s.sendto(packet, addr)
            try:
                while True:
                    s.recv(65535)
                    got += 1
            except BlockingIOError:
                pass
    return got


async def test_fuzzed_udp_packets_do_not_stop_the_server(server, caplog):
    """3,000 mutated and random packets over UDP, then correct answers over UDP and TCP; one warning."""
    await trio.to_thread.run_sync(flood, server, list(fuzz.packets(3000, seed=7)))
    await still_answers(server)
    warnings = [r for r in caplog.records if "malformed DNS packet" in r.getMessage()]
    assert 1 <= len(warnings) <= 2  # rate-limited: one per 10 s


async def test_garbage_over_tcp_closes_only_that_connection(server):
    """A TCP message that is not a query closes its connection; the server keeps serving."""
    stream = await trio.open_tcp_stream(*server)
    await stream.send_all(b"\x00\x05hello")
    with trio.fail_after(3):
        assert await stream.receive_some(100) == b""
    await still_answers(server)
