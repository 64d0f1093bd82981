"""Several listen addresses per service: IPv4 and IPv6 together, as nginx's several `listen` lines."""

from __future__ import annotations

import dns.message
import dns.query
import pytest

from edge.config import Listen, load
from tests.conftest import curl
from tests.proc import EdgeProcess, edge_cli, edge_env


def test_a_listen_list_parses_from_the_config_and_the_command_line_form():
    """A TOML list and a comma-separated flag give the same addresses, the first as host and port."""
    from_list = load(env={}, overrides={"http": {"listen": ["0.0.0.0:80", "[::]:80"]}}).http.listen
    from_flag = load(env={}, overrides={"http": {"listen": "0.0.0.0:80,[::]:80"}}).http.listen
    assert from_list == from_flag
    assert from_list.all() == (Listen("0.0.0.0", 80), Listen("::", 80))
    assert str(from_list) == "0.0.0.0:80, [::]:80"


@pytest.mark.parametrize("workers", ["1", "2"])
async def test_every_service_answers_on_ipv4_and_ipv6_together(tmp_path, nursery, workers):
    """`edge serve --http 127.0.0.1:0,[::1]:0 --dns ...` (and admin): each answers on both addresses."""
    from tests.backends import Backend

    env = edge_env(tmp_path, EDGE_ADMIN_TOKEN="t0ken")
    backend = await Backend("b").start(nursery, "127.0.0.2")
    edge_cli(["sandbox", "add", "both", "--address", "127.0.0.2"], env)
    proc = EdgeProcess(
        [
            "serve",
            "--http",
            "127.0.0.1:0,[::1]:0",
            "--dns",
            "127.0.0.1:0,[::1]:0",
            "--admin",
            "127.0.0.1:0,[::1]:0",
            "--workers",
            workers,
            "--log-format",
            "text",
        ],
        env,
        timeout=60,
    )
    try:
        http_port = proc.port("http")
        for host in ("127.0.0.1", "[::1]"):
            res = await curl(
                "-s", "-H", f"Host: {backend.port}-both.sandbox.localhost", f"http://{host}:{http_port}/echo"
            )
            assert b'"backend": "b"' in res.stdout, host
        dns_port = proc.port("dns")
        for server in ("127.0.0.1", "::1"):
            q = dns.message.make_query("3000-both.sandbox.localhost", "A")
            assert dns.query.udp(q, server, port=dns_port, timeout=3).answer, server
        lines = "".join(proc.lines)
        assert f"http listening on [::1]:{http_port}" in lines
        assert "admin listening on [::1]:" in lines
    finally:
        proc.stop()
