"""DNS over TCP (RFC 7766): pipelining, split messages, idle timeout, connection limit."""

from __future__ import annotations

import dns.message
import trio

from tests.dns.support import start_dns, write_zone

Q = "sandbox.localhost"


def framed(name: str, ident: int) -> bytes:
    query = dns.message.make_query(name, "A")
    query.id = ident
    wire = query.to_wire()
    return len(wire).to_bytes(2, "big") + wire


async def read_reply(stream: trio.SocketStream) -> dns.message.Message:
    buf = b""
    with trio.fail_after(3):
        while len(buf) < 2 or len(buf) < 2 + int.from_bytes(buf[:2], "big"):
            chunk = await stream.receive_some(65536)
            assert chunk, "connection closed before a whole reply"
            buf += chunk
    size = int.from_bytes(buf[:2], "big")
    assert len(buf) == 2 + size, "more bytes than one reply"
    return dns.message.from_wire(buf[2:])


async def read_replies(stream: trio.SocketStream, count: int) -> list[dns.message.Message]:
    buf, out = b"", []
    with trio.fail_after(3):
        while len(out) < count:
            while len(buf) >= 2 and len(buf) >= 2 + int.from_bytes(buf[:2], "big"):
                size = int.from_bytes(buf[:2], "big")
                out.append(dns.message.from_wire(buf[2 : 2 + size]))
                buf = buf[2 + size :]
            if len(out) < count:
                chunk = await stream.receive_some(65536)
                assert chunk
                buf += chunk
    return out


async def test_pipelined_queries_are_all_answered_in_order(nursery, tmp_path):
    """Several queries in one write on one connection: each is answered, in order."""
    write_zone(tmp_path)
    host, port = await start_dns(nursery, tmp_path)
    stream = await trio.open_tcp_stream(host, port)
    names = [f"3000-n{i}.{Q}" for i in range(10)] + [f"ns1.{Q}", "example.com"]
    await stream.send_all(b"".join(framed(n, i) for i, n in enumerate(names)))
    replies = await read_replies(stream, len(names))
    assert [r.id for r in replies] == list(range(len(names)))
    assert [r.question[0].name.to_text() for r in replies] == [n + "." for n in names]


async def test_message_split_across_reads_is_answered(nursery, tmp_path):
    """A query sent one byte at a time is reassembled and answered."""
    write_zone(tmp_path)
    host, port = await start_dns(nursery, tmp_path)
    stream = await trio.open_tcp_stream(host, port)
    for byte in framed(f"3000-split.{Q}", 7):
        await stream.send_all(bytes([byte]))
        await trio.sleep(0.001)
    reply = await read_reply(stream)
    assert reply.id == 7 and reply.answer[0][0].to_text() == "127.0.0.1"


async def test_several_queries_one_connection_one_after_another(nursery, tmp_path):
    """The connection stays open between queries (RFC 7766 section 6.2.1)."""
    write_zone(tmp_path)
    host, port = await start_dns(nursery, tmp_path)
    stream = await trio.open_tcp_stream(host, port)
    for i in range(5):
        await stream.send_all(framed(f"{i}.{Q}", i))
        assert (await read_reply(stream)).id == i


async def test_idle_connection_is_closed_after_the_timeout(nursery, tmp_path):
    """A connection idle past tcp_idle_timeout is closed by the server."""
    write_zone(tmp_path)
    host, port = await start_dns(nursery, tmp_path, tcp_idle_timeout=0.3)
    stream = await trio.open_tcp_stream(host, port)
    await stream.send_all(framed(f"a.{Q}", 1))
    await read_reply(stream)
    with trio.fail_after(3):
        started = trio.current_time()
        assert await stream.receive_some(100) == b""
    assert trio.current_time() - started >= 0.2


async def test_message_trickled_a_byte_at_a_time_is_cut_off_at_the_timeout(nursery, tmp_path):
    """Bytes that keep coming but never make a whole message within tcp_idle_timeout: closed."""
    write_zone(tmp_path)
    host, port = await start_dns(nursery, tmp_path, tcp_idle_timeout=0.3)
    stream = await trio.open_tcp_stream(host, port)
    message = framed(f"a.{Q}", 1)
    started = trio.current_time()
    with trio.fail_after(3):
        try:
            for byte in message[:-1]:
                await stream.send_all(bytes([byte]))
                await trio.sleep(0.05)
        except trio.BrokenResourceError:
            pass  # the server closed while we were still sending
        assert await stream.receive_some(100) == b""
    assert trio.current_time() - started < 1.5


async def test_connections_past_the_limit_are_closed(nursery, tmp_path):
    """Past max_tcp_connections, a new connection is closed at once; the others keep working."""
    write_zone(tmp_path)
    host, port = await start_dns(nursery, tmp_path, max_tcp_connections=2)
    first = await trio.open_tcp_stream(host, port)
    second = await trio.open_tcp_stream(host, port)
    await first.send_all(framed(f"a.{Q}", 1))
    await second.send_all(framed(f"b.{Q}", 2))
    assert (await read_reply(first)).id == 1 and (await read_reply(second)).id == 2
    third = await trio.open_tcp_stream(host, port)
    with trio.fail_after(3):
        try:
            await third.send_all(framed(f"c.{Q}", 3))
            assert await third.receive_some(100) == b""
        except trio.BrokenResourceError:
            pass  # reset instead of FIN: closed either way
    await first.aclose()
    with trio.fail_after(3):
        while True:  # the slot frees up once the server sees the close
            fourth = await trio.open_tcp_stream(host, port)
            await fourth.send_all(framed(f"d.{Q}", 4))
            try:
                if (await read_reply(fourth)).id == 4:
                    break
            except (AssertionError, trio.BrokenResourceError):
                await trio.sleep(0.05)


async def test_one_client_address_cannot_hold_more_than_its_share_of_connections(nursery, tmp_path):
    """Past max_tcp_connections_per_ip from one address, closed at once; another address still gets in."""
    write_zone(tmp_path)
    host, port = await start_dns(nursery, tmp_path, max_tcp_connections=8, max_tcp_connections_per_ip=2)
    mine = [await trio.open_tcp_stream(host, port, local_address="127.0.0.1") for _ in range(2)]
    for i, stream in enumerate(mine):
        await stream.send_all(framed(f"a{i}.{Q}", i))
        assert (await read_reply(stream)).id == i
    third = await trio.open_tcp_stream(host, port, local_address="127.0.0.1")
    with trio.fail_after(3):
        try:
            await third.send_all(framed(f"c.{Q}", 3))
            assert await third.receive_some(100) == b""
        except trio.BrokenResourceError:
            pass  # reset instead of FIN: closed either way
    other = await trio.open_tcp_stream(host, port, local_address="127.0.0.3")
    await other.send_all(framed(f"d.{Q}", 4))
    assert (await read_reply(other)).id == 4
    await mine[0].aclose()
    with trio.fail_after(3):
        while True:  # the address's slot frees up once the server sees the close
            again = await trio.open_tcp_stream(host, port, local_address="127.0.0.1")
            await again.send_all(framed(f"e.{Q}", 5))
            try:
                if (await read_reply(again)).id == 5:
                    break
            except (AssertionError, trio.BrokenResourceError):
                await trio.sleep(0.05)
