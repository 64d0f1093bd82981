"""A sandbox pointing at the edge itself gets 508 Loop Detected, without a single connect."""

from __future__ import annotations

import json

import pytest
import trio

from edge.catalog.model import Sandbox
from tests.conftest import BOTH_LANES, curl
from tests.proc import EdgeProcess, edge_cli, edge_env

pytestmark = pytest.mark.parametrize("lane", BOTH_LANES, indirect=True)


@pytest.mark.trio
async def test_sandbox_at_the_edges_own_http_listener_is_refused_with_508(make_edge):
    """Host `<edge port>-self`, the sandbox at the edge's address: 508 and no request loop."""
    edge = await make_edge([Sandbox("self", "127.0.0.1")])
    res = await curl("-s", "-w", "\n%{http_code}", edge.url(edge.port, "self"))
    body, status = res.stdout.decode().rsplit("\n", 1)
    assert status == "508"
    assert json.loads(body)["error"] == "loop_detected"


@pytest.mark.trio
async def test_wildcard_listener_is_reached_through_any_local_address(make_edge):
    """Listening on 0.0.0.0: a sandbox at any loopback address on the edge's port is a loop too."""
    edge = await make_edge([Sandbox("self", "127.0.0.9")], http={"listen": "0.0.0.0:0"})
    res = await curl("-s", "-o", "/dev/null", "-w", "%{http_code}", edge.url(edge.port, "self"))
    assert res.stdout == b"508"


@pytest.mark.trio
async def test_admin_and_dns_listeners_are_not_reachable_through_the_edge(tmp_path, lane):
    """`edge serve`: a sandbox at the edge's address gets 508 for the admin and DNS ports too."""
    env = edge_env(tmp_path)
    proc = EdgeProcess(["serve", "--http", "127.0.0.1:0", "--dns", "127.0.0.1:0"], env)
    try:
        assert edge_cli(["sandbox", "add", "self", "--address", "127.0.0.1"], env).returncode == 0
        for kind in ("admin", "dns", "http"):
            url = f"http://{proc.port(kind)}-self.sandbox.localhost:{proc.port()}/healthz"
            with trio.fail_after(5):  # the running edge sees the new sandbox within catalog_poll
                while b"sandbox_not_found" in (res := await curl("-s", "-w", "\n%{http_code}", url)).stdout:
                    await trio.sleep(0.05)
            assert res.stdout.decode().rsplit("\n", 1)[1] == "508", (kind, res.stdout)
    finally:
        proc.stop()


@pytest.mark.trio
async def test_request_that_already_passed_through_this_edge_is_refused(make_edge, backend):
    """A Via naming this edge's own token (a loop through other hops): 508, the sandbox never asked."""
    from edge.http.context import via_token

    edge = await make_edge([Sandbox("demo", "127.0.0.2")])
    token = via_token(edge.config).decode()
    res = await curl(
        "-s",
        "-w",
        "\n%{http_code}",
        "-H",
        f"Via: 1.1 proxy.example, 1.1 {token}",
        edge.url(backend.port, "demo", "/echo"),
    )
    body, status = res.stdout.decode().rsplit("\n", 1)
    assert status == "508" and json.loads(body)["error"] == "loop_detected"
    assert not backend.requests
    res = await curl("-s", "-H", "Via: 1.1 proxy.example, 1.1 edge-00000000", edge.url(backend.port, "demo", "/echo"))
    assert json.loads(res.stdout)["target"] == "/echo"  # another edge's token is no loop
