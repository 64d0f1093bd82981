"""Every listener bound once and handed down (edge/sockets.py), with real sockets and no server."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from dataclasses import replace

import pytest

from edge import sockets
from edge.config import Config, Listen
from edge.errors import ConfigError


def _config(tmp_path, **listen) -> Config:
    config = Config(state_dir=tmp_path)
    return replace(
        config,
        http=replace(config.http, listen=listen.get("http", Listen("127.0.0.1", 0))),
        dns=replace(config.dns, listen=listen.get("dns", Listen("127.0.0.1", 0))),
        admin=replace(config.admin, listen=listen.get("admin", Listen("127.0.0.1", 0))),
    )


def test_every_kind_is_bound_and_dns_is_a_udp_tcp_pair_on_one_port(tmp_path):
    bound, unused = sockets.bind(_config(tmp_path), sockets.KINDS)
    try:
        assert unused == []
        kinds = [kind for kind, _ in bound.listening()]
        assert kinds == ["http", "dns", "admin"]  # no https, no egress configured
        [(udp, tcp)] = bound.dns
        assert (udp.type, tcp.type) == (socket.SOCK_DGRAM, socket.SOCK_STREAM)
        assert udp.getsockname() == tcp.getsockname()
    finally:
        bound.close()


def test_a_description_adopted_elsewhere_names_the_same_sockets(tmp_path):
    """What a worker does with EDGE_SOCKETS: the same listening sockets, by kind, through new descriptors."""
    bound, _ = sockets.bind(_config(tmp_path), sockets.KINDS)
    view = bound.for_worker(0, 1)
    dups = {fd: os.dup(fd) for fd in view.fds()}
    text = re.sub(r"\d+", lambda m: str(dups[int(m.group())]), view.describe())
    adopted = sockets.Sockets.adopt(text)
    try:
        assert adopted.listening() == bound.listening()
        [(udp, tcp)] = adopted.dns
        assert (udp.type, tcp.type) == (socket.SOCK_DGRAM, socket.SOCK_STREAM)
        # A connection made to the bound address is accepted through the adopted descriptor.
        client = socket.create_connection(view.http[0].getsockname())
        adopted.http[0].setblocking(True)
        conn, _ = adopted.http[0].accept()
        conn.close()
        client.close()
    finally:
        adopted.close()
        bound.close()


def test_an_unknown_kind_in_the_description_is_an_error():
    with pytest.raises(ConfigError, match="unknown kind"):
        sockets.Sockets.adopt("gopher=5")


def test_a_reload_keeps_the_sockets_whose_address_did_not_change(tmp_path):
    """Same http address: the very socket is kept (never closed, never rebound); a new admin address is
    bound anew and the old admin socket is handed back to be closed once its generation is gone."""
    old_config = _config(tmp_path)
    old, _ = sockets.bind(old_config, sockets.KINDS)
    new_config = replace(old_config, admin=replace(old_config.admin, listen=Listen("127.0.0.2", 0)))
    new, unused = sockets.bind(new_config, sockets.KINDS, keep=(old_config, old))
    try:
        assert new.http[0][0] is old.http[0][0]
        assert new.dns[0] is old.dns[0]
        assert new.admin[0] is not old.admin[0]
        assert new.admin[0].getsockname()[0] == "127.0.0.2"
        assert unused == [old.admin[0]]
    finally:
        new.close()
        old.close()


def test_a_listener_that_cannot_bind_closes_what_the_call_bound(tmp_path):
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    config = _config(tmp_path, admin=Listen("127.0.0.1", taken.getsockname()[1]))
    before = len(os.listdir("/proc/self/fd"))
    with pytest.raises(ConfigError, match="admin: cannot listen"):
        sockets.bind(config, sockets.KINDS)
    assert len(os.listdir("/proc/self/fd")) == before
    taken.close()


ACTIVATED = """
import json, os, sys
from edge import sockets
from edge.config import Config, Listen
from dataclasses import replace
fds, dns_port, state = json.loads(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
for target, fd in enumerate(fds, start=3):  # where systemd puts them
    os.dup2(fd, target)
env = {"LISTEN_PID": str(os.getpid()), "LISTEN_FDS": str(len(fds)), "LISTEN_FDNAMES": "http:edge.socket:edge.socket"}
config = Config(state_dir=state)
config = replace(config, dns=replace(config.dns, listen=Listen("127.0.0.1", dns_port)),
                 admin=replace(config.admin, listen=Listen("127.0.0.1", 0)))
got = sockets.activated(config, env)
bound, _ = sockets.bind(config, sockets.KINDS, given=got)
print(json.dumps({"env": env, "http": [[s.fileno() for s in share] for share in bound.http],
                  "dns": [[u.fileno(), t.fileno()] for u, t in bound.dns], "admin": len(bound.admin)}))
"""


def test_systemd_sockets_are_used_by_name_and_by_address(tmp_path):
    """LISTEN_FDS=3 from descriptor 3 (as systemd passes them, in a process of their own): `http` by
    name, a UDP and a TCP socket on the DNS address by address, admin (not passed) bound; the
    variables are removed so no child takes them."""
    http = socket.socket()
    http.bind(("127.0.0.1", 0))
    http.listen()
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    tcp = socket.socket()
    tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    tcp.bind(("127.0.0.1", udp.getsockname()[1]))
    tcp.listen()
    fds = [http.fileno(), udp.fileno(), tcp.fileno()]
    out = subprocess.run(
        [sys.executable, "-c", ACTIVATED, json.dumps(fds), str(udp.getsockname()[1]), str(tmp_path)],
        pass_fds=fds,
        capture_output=True,
        text=True,
        timeout=30,
    )
    for sock in (http, udp, tcp):
        sock.close()
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc == {"env": {}, "http": [[3]], "dns": [[4, 5]], "admin": 1}  # one share: every worker


def test_without_socket_activation_for_this_process_nothing_is_taken(tmp_path):
    env = {"LISTEN_PID": "1", "LISTEN_FDS": "2"}
    assert sockets.activated(_config(tmp_path), env) is None
    assert env == {"LISTEN_PID": "1", "LISTEN_FDS": "2"}  # another process's: left alone


def _accepted_by(share: list[socket.socket], timeout: float = 0.5) -> int:
    n = 0
    for sock in share:
        sock.settimeout(timeout)
        try:
            while True:
                conn, _ = sock.accept()
                conn.close()
                n += 1
        except (TimeoutError, BlockingIOError):
            pass
    return n


def test_http_is_one_share_per_worker_and_the_kernel_spreads_connections_over_them(tmp_path):
    """--workers 2: two SO_REUSEPORT members on one port, one per worker; 64 connections land on both
    (a shared socket would let one worker take a burst); DNS and admin go to worker 0 only."""
    bound, _ = sockets.bind(_config(tmp_path), sockets.KINDS, workers=2)
    try:
        assert len(bound.http) == 2
        [a], [b] = bound.http
        assert a.getsockname() == b.getsockname() and a is not b
        assert a.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT)
        zero, one = bound.for_worker(0, 2), bound.for_worker(1, 2)
        assert (zero.http, one.http) == ([a], [b])
        assert zero.dns and zero.admin and not one.dns and not one.admin
        clients = [socket.create_connection(a.getsockname()) for _ in range(64)]
        counts = (_accepted_by([a], 0.2), _accepted_by([b], 0.2))
        for c in clients:
            c.close()
        assert sum(counts) == 64 and min(counts) > 0, counts
    finally:
        bound.close()


def test_a_reload_with_more_workers_adds_shares_and_with_fewer_gives_a_worker_several(tmp_path):
    """Shares are never closed: 2 -> 3 workers adds one on the same port; 3 -> 1 worker serves all three."""
    config = _config(tmp_path)
    two, _ = sockets.bind(config, sockets.KINDS, workers=2)
    three, unused = sockets.bind(config, sockets.KINDS, workers=3, keep=(config, two))
    try:
        assert unused == []
        assert len(three.http) == 3 and three.http[:2] == two.http
        assert three.http[2][0].getsockname() == two.http[0][0].getsockname()
        one, unused = sockets.bind(config, sockets.KINDS, workers=1, keep=(config, three))
        assert unused == [] and one.http == three.http
        assert one.for_worker(0, 1).http == [share[0] for share in three.http]
    finally:
        three.close()


def test_the_supervisors_description_keeps_the_shares_across_its_exec(tmp_path):
    bound, _ = sockets.bind(_config(tmp_path), sockets.KINDS, workers=2)
    try:
        again = sockets.Listeners.adopt(bound.describe())
        assert [[s.fileno() for s in share] for share in again.http] == [
            [s.fileno() for s in share] for share in bound.http
        ]
        assert again.listening() == bound.listening()
        for sock in again.all():
            sock.detach()  # the same descriptors: closed once, below
    finally:
        bound.close()
