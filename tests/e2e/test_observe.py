"""What the edge tells about itself: access log lines field by field, metrics that move, token rotation
seen by every process sharing the catalog."""

from __future__ import annotations

import json
import subprocess

import trio
from prometheus_client.parser import text_string_to_metric_families

from edge.accesslog import FIELDS as ACCESS_FIELDS
from edge.metrics import render
from tests.backends import Backend
from tests.conftest import curl
from tests.proc import EdgeProcess, edge_cli, edge_env


def _metrics() -> dict[tuple[str, tuple], float]:
    out = {}
    for fam in text_string_to_metric_families(render().decode()):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


async def test_metrics_move_after_traffic(edge, backend):
    """Requests by class, bytes, latency counts, per-sandbox counts and connect failures all move."""
    before = _metrics()
    await curl(edge.url(backend.port, "alpha", "/bytes?n=1000"))
    await curl(edge.url(3000, "ghost", "/"))
    after = _metrics()

    def delta(name, **labels):
        key = (name, tuple(sorted(labels.items())))
        return after.get(key, 0) - before.get(key, 0)

    assert delta("edge_http_requests_total", **{"class": "2xx"}) == 1
    assert delta("edge_http_requests_total", **{"class": "5xx"}) == 1
    assert delta("edge_http_body_bytes_total", direction="out") >= 1000
    assert delta("edge_http_request_duration_seconds_count") == 2
    assert delta("edge_sandbox_requests_total", sandbox="alpha") == 1
    assert delta("edge_upstream_connect_seconds_count") == 1


async def test_refused_connect_is_counted(edge):
    """A closed port shows as an upstream connect failure with reason=refused."""
    import socket

    s = socket.socket()
    s.bind(("127.0.0.2", 0))
    port = s.getsockname()[1]
    s.close()
    key = ("edge_upstream_connect_failures_total", (("reason", "refused"),))
    before = _metrics().get(key, 0)
    await curl(edge.url(port, "alpha", "/"))
    assert _metrics()[key] == before + 1


async def test_access_log_line_has_every_field(tmp_path, nursery):
    """One JSON line per request with exactly the documented fields and the right values."""
    env = edge_env(tmp_path)
    b = await Backend("b").start(nursery, "127.0.0.2")
    edge_cli(["sandbox", "add", "logged", "--address", "127.0.0.2"], env)
    proc = await trio.to_thread.run_sync(
        lambda: EdgeProcess(["serve", "--http", "127.0.0.1:0", "--dns", "127.0.0.1:0"], env)
    )
    try:
        host = f"{b.port}-logged.sandbox.localhost:{proc.port()}"
        await curl("--data-binary", "12345", f"http://{host}/echo?q=secret")
        await curl(f"http://{proc.port()}-nobody.sandbox.localhost:{proc.port()}/x")
    finally:
        out = await trio.to_thread.run_sync(proc.stop)
    lines = [json.loads(ln) for ln in out.splitlines() if ln.startswith("{") and '"method"' in ln]
    assert len(lines) == 2
    ok, missing = lines
    assert tuple(ok) == ACCESS_FIELDS
    assert ok["client"] == "127.0.0.1" and ok["host"] == host and ok["sandbox"] == "logged" and ok["port"] == b.port
    assert ok["method"] == "POST" and ok["path"] == "/echo" and ok["status"] == 200
    assert ok["bytes_in"] == 5 and ok["bytes_out"] > 0 and ok["duration_ms"] > 0 and ok["connect_ms"] >= 0
    assert ok["time"].endswith("Z")
    assert missing["status"] == 502 and missing["sandbox"] == "nobody" and missing["connect_ms"] is None


async def test_rotation_retires_the_old_token_in_every_process_within_a_second(tmp_path, nursery):
    """Two `edge serve` processes share one catalog; after rotation both refuse the old token within 1 s."""
    env = edge_env(tmp_path)
    b = await Backend("b").start(nursery, "127.0.0.2")
    old = json.loads(edge_cli(["sandbox", "add", "rot", "--address", "127.0.0.2", "--private", "--json"], env).stdout)
    old_token = old["traffic_access_token"]
    procs = [
        await trio.to_thread.run_sync(
            lambda: EdgeProcess(
                ["serve", "--http", "127.0.0.1:0", "--dns", "127.0.0.1:0", "--admin", "127.0.0.1:0", "--no-access-log"],
                env,
            )
        )
        for _ in range(2)
    ]
    try:
        urls = [f"http://{b.port}-rot.sandbox.localhost:{p.port()}/echo" for p in procs]

        async def status(url, token):
            try:
                res = await curl(
                    "-o", "/dev/null", "-w", "%{http_code}", "-H", f"e2b-traffic-access-token: {token}", url
                )
            except subprocess.CalledProcessError as exc:
                if exc.returncode == 52:  # in flight when the rotation landed: revoked, cut (no answer)
                    return 0
                raise
            return int(res.stdout)

        assert [await status(u, old_token) for u in urls] == [200, 200]
        new_token = json.loads(edge_cli(["sandbox", "token", "rot", "--rotate", "--json"], env).stdout)[
            "traffic_access_token"
        ]
        t0 = trio.current_time()
        with trio.fail_after(1.0):
            while [await status(u, old_token) for u in urls] != [403, 403]:
                await trio.sleep(0.02)
        assert trio.current_time() - t0 < 1.0
        assert [await status(u, new_token) for u in urls] == [200, 200]
    finally:
        for p in procs:
            p.stop()


async def test_dns_answers_are_counted_by_rcode(nursery):
    """NOERROR and REFUSED answers from the real DNS server move their counters."""
    import dns.message
    import dns.query

    from edge import config as config_mod
    from edge.dns.server import serve as serve_dns

    cfg = config_mod.load(env={}, overrides={"dns": {"listen": "127.0.0.1:0"}})
    [(host, port)] = await nursery.start(serve_dns, cfg)
    key_ok = ("edge_dns_queries_total", (("rcode", "NOERROR"),))
    key_refused = ("edge_dns_queries_total", (("rcode", "REFUSED"),))
    before = _metrics()

    def ask(name):
        return dns.query.udp(dns.message.make_query(name, "A"), host, port=port, timeout=3)

    await trio.to_thread.run_sync(ask, "3000-x.sandbox.localhost")
    await trio.to_thread.run_sync(ask, "elsewhere.example")
    after = _metrics()
    assert after[key_ok] - before.get(key_ok, 0) == 1
    assert after[key_refused] - before.get(key_refused, 0) == 1
