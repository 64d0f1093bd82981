"""The server's rounds: a batch stops at its time budget, the rest is answered next round. Real loopback
UDP sockets, the server's functions called directly."""

from __future__ import annotations

import socket

import dns.message
import pytest

from edge import config as config_mod
from edge.dns import server
from tests.dns.support import write_zone

Q = "sandbox.localhost"


def state_for(tmp_path, **dns_overrides) -> server._State:
    write_zone(tmp_path)
    raw = {"domains": [Q], "dns": {"listen": "127.0.0.1:0", "zones": str(tmp_path), **dns_overrides}}
    return server._State(config_mod.load(env={}, overrides=raw))


@pytest.fixture
def sockets():
    """(server socket, client socket) on loopback, both non-blocking."""
    srv = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    cli = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for s in (srv, cli):
        s.bind(("127.0.0.1", 0))
        s.setblocking(False)
    yield srv, cli
    srv.close()
    cli.close()


def send_queries(cli: socket.socket, srv: socket.socket, names: list[str]) -> None:
    for ident, name in enumerate(names):
        query = dns.message.make_query(name, "A")
        query.id = ident
        cli.sendto(query.to_wire(), srv.getsockname())  # loopback: queued on srv before sendto returns


def replies(cli: socket.socket) -> list[dns.message.Message]:
    out = []
    while True:
        try:
            out.append(dns.message.from_wire(cli.recv(65535)))
        except BlockingIOError:
            return out


async def test_udp_batch_stops_at_its_time_budget_and_the_rest_is_answered_next_round(tmp_path, sockets):
    """A spent budget ends the round after one packet; the packets left are all answered in later rounds."""
    srv, cli = sockets
    state = state_for(tmp_path, rrl_rate=0)
    send_queries(cli, srv, [f"3000-n{i}.{Q}" for i in range(20)] + [f"ns1.{Q}"] * 5)
    rounds = []
    while count := await server._udp_batch(srv, state, budget=0.0):
        rounds.append(count)
    assert rounds == [1] * 25
    got = replies(cli)
    assert sorted(r.id for r in got) == list(range(25)) and all(r.answer for r in got)


async def test_udp_batch_with_time_to_spare_answers_everything_waiting(tmp_path, sockets):
    """Within its budget a round drains the socket: 25 packets, one round."""
    srv, cli = sockets
    state = state_for(tmp_path, rrl_rate=0)
    send_queries(cli, srv, [f"3000-n{i}.{Q}" for i in range(25)])
    assert await server._udp_batch(srv, state, budget=1.0) == 25
    assert len(replies(cli)) == 25


def framed(names: list[str]) -> bytearray:
    out = bytearray()
    for ident, name in enumerate(names):
        query = dns.message.make_query(name, "A")
        query.id = ident
        wire = query.to_wire()
        out += len(wire).to_bytes(2, "big") + wire
    return out


def test_tcp_round_stops_at_its_time_budget_and_keeps_the_rest_for_the_next(tmp_path):
    """Pipelined messages: one per round when the budget is spent, in order, none lost."""
    state = state_for(tmp_path)
    buf = framed([f"3000-n{i}.{Q}" for i in range(6)] + [f"ns1.{Q}"])
    ids = []
    while buf:
        sent, close = server._tcp_batch(buf, state, ("127.0.0.1", 1), budget=0.0)
        assert len(sent) == 1 and not close
        ids.append(dns.message.from_wire(sent[0][2:]).id)
    assert ids == list(range(7))
