"""What an operator trips over with the catalog (issue 16): a sandbox added is routable at once, through
the admin API and through `edge sandbox`; a CLI writing another catalog than the running edge's says
so; admin changes are logged; in the json log format stdout is JSON lines only; the public URL."""

from __future__ import annotations

import json
import socket

import httpx
import pytest
import trio

from edge.catalog.model import Sandbox
from tests.backends import Backend
from tests.conftest import curl
from tests.proc import EdgeProcess, edge_cli, edge_env
from tests.tlsutil import TestCA

TOKEN = "operator-test-token"


async def _status(url: str) -> int:
    res = await curl("-o", "/dev/null", "-w", "%{http_code}", url, check=False)
    return int(res.stdout)


async def _serve(tmp_path, env, config: str = "", *extra: str) -> EdgeProcess:
    args = ["serve", "--http", "127.0.0.1:0", "--dns", "127.0.0.1:0", "--no-access-log", *extra]
    if config:
        (tmp_path / "edge.toml").write_text(config)
        args += ["--config", str(tmp_path / "edge.toml")]
    return await trio.to_thread.run_sync(lambda: EdgeProcess(args, env))


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- a write is served by the next request ----------------------------------------------------------------


async def test_a_sandbox_put_through_the_admin_api_answers_the_very_next_request(tmp_path, nursery):
    """PUT, then GET at once, 8 times: 200 each time, with a catalog_poll so long that only the API's
    own swap can explain it; a PATCH that moves it and a DELETE take effect at once too."""
    env = edge_env(tmp_path, EDGE_ADMIN_TOKEN=TOKEN)
    b2 = await Backend("b2").start(nursery, "127.0.0.2")
    await Backend("b3").start(nursery, "127.0.0.3", b2.port)
    proc = await _serve(tmp_path, env, "catalog_poll = 60\n")  # the watcher would not see it for a minute
    try:

        def url(i: int) -> str:
            return f"http://{b2.port}-s{i}.sandbox.localhost:{proc.port()}/echo"

        admin = f"http://127.0.0.1:{proc.port('admin')}"
        async with httpx.AsyncClient(base_url=admin, headers={"Authorization": f"Bearer {TOKEN}"}) as c:
            for i in range(8):
                assert (await c.put(f"/v1/sandboxes/s{i}", json={"address": "127.0.0.2"})).status_code == 200
                assert await _status(url(i)) == 200, i
            moved = await c.patch(
                "/v1/sandboxes/s0",
                json={"address": "127.0.0.3"},
                headers={"content-type": "application/merge-patch+json"},
            )
            assert moved.status_code == 200
            assert json.loads((await curl(url(0))).stdout)["backend"] == "b3"
            assert (await c.delete("/v1/sandboxes/s1")).status_code == 204
            assert await _status(url(1)) == 502
            status = (await c.get("/v1/status")).json()
        assert status["catalog"]["path"] == str((tmp_path / "state" / "catalog.db").resolve())
        assert status["catalog"]["version"] == status["sandboxes"]["catalog_version"] >= 10
    finally:
        proc.stop()


async def test_edge_sandbox_add_returns_once_the_running_edge_serves_it(tmp_path, nursery):
    """`edge sandbox add` (and rm) return when the edge on that catalog serves the change: a request made
    right after gets the sandbox (catalog_poll 1 s: without the wait it would 502 nearly every time)."""
    env = edge_env(tmp_path)
    b = await Backend("b").start(nursery, "127.0.0.2")
    proc = await _serve(tmp_path, env, "catalog_poll = 1.0\n")
    admin = f"127.0.0.1:{proc.port('admin')}"
    try:
        for i in range(4):
            res = await trio.to_thread.run_sync(
                edge_cli, ["sandbox", "add", f"c{i}", "--address", "127.0.0.2", "--admin", admin], env
            )
            assert res.returncode == 0 and res.stderr == "", res.stderr
            assert await _status(f"http://{b.port}-c{i}.sandbox.localhost:{proc.port()}/echo") == 200, i
        res = await trio.to_thread.run_sync(edge_cli, ["sandbox", "rm", "c0", "--admin", admin], env)
        assert res.returncode == 0 and res.stderr == "", res.stderr
        assert await _status(f"http://{b.port}-c0.sandbox.localhost:{proc.port()}/echo") == 502
    finally:
        proc.stop()


# --- the CLI and the server on different catalogs ------------------------------------------------------------


async def test_the_cli_warns_when_the_running_edge_serves_another_catalog(tmp_path):
    """Another EDGE_STATE_DIR: the write succeeds (exit 0) and stderr names both catalogs."""
    env = edge_env(tmp_path, EDGE_ADMIN_TOKEN=TOKEN)
    proc = await _serve(tmp_path, env)
    admin = f"127.0.0.1:{proc.port('admin')}"
    other = edge_env(tmp_path / "elsewhere", EDGE_ADMIN_TOKEN=TOKEN)
    try:
        res = await trio.to_thread.run_sync(
            edge_cli, ["sandbox", "add", "lost", "--address", "127.0.0.2", "--admin", admin], other
        )
    finally:
        proc.stop()
    assert res.returncode == 0 and res.stdout.startswith("lost  address=127.0.0.2")
    served = (tmp_path / "state" / "catalog.db").resolve()
    written = (tmp_path / "elsewhere" / "state" / "catalog.db").resolve()
    assert res.stderr == (
        f"edge: warning: the change is in catalog {written}, but the edge at {admin} serves catalog"
        f" {served}: it will not see it; use the edge's catalog (its config with --config or"
        " EDGE_CONFIG, its EDGE_STATE_DIR, or --catalog)\n"
    )


async def test_the_cli_says_why_it_could_not_ask_the_running_edge(tmp_path):
    """`sudo edge sandbox add` finds no admin token in root's state folder: the warning says so (exit 0)."""
    env = edge_env(tmp_path)
    proc = await _serve(tmp_path, env)
    admin = f"127.0.0.1:{proc.port('admin')}"
    other = edge_env(tmp_path / "root")  # another state folder, no token there
    try:
        res = await trio.to_thread.run_sync(
            edge_cli, ["sandbox", "add", "lost", "--address", "127.0.0.2", "--admin", admin], other
        )
    finally:
        proc.stop()
    assert res.returncode == 0
    token_file = tmp_path / "root" / "state" / "admin-token"
    assert res.stderr.startswith(f"edge: warning: the change is in catalog {(tmp_path / 'root' / 'state').resolve()}/")
    assert f"no admin token: {token_file} does not exist" in res.stderr and len(res.stderr.splitlines()) == 1


def test_the_cli_warns_when_no_edge_answers_and_no_wait_does_not_ask(tmp_path):
    """No edge on the admin address: exit 0 and one warning line; --no-wait: no question, no warning."""
    env = edge_env(tmp_path)
    port = _closed_port()
    res = edge_cli(["sandbox", "add", "alone", "--address", "127.0.0.2", "--admin", f"127.0.0.1:{port}"], env)
    assert res.returncode == 0
    assert res.stderr.startswith(
        f"edge: warning: the change is in catalog {(tmp_path / 'state').resolve()}/catalog.db,"
        f" but no running edge confirmed it: no edge answering at 127.0.0.1:{port}"
    )
    res = edge_cli(["sandbox", "rm", "alone", "--admin", f"127.0.0.1:{port}", "--no-wait"], env)
    assert (res.returncode, res.stderr) == (0, "")


# --- what admin changes leave in the log, and stdout in json mode ---------------------------------------------


async def test_json_mode_stdout_is_json_lines_with_admin_changes_logged(tmp_path):
    """Default (json) log format: every line on stdout is a JSON object, the listeners included; each admin
    write is one edge.admin line naming the client, a token fingerprint (never the token), the sandbox and
    the fields written."""
    env = edge_env(tmp_path, EDGE_ADMIN_TOKEN=TOKEN)
    proc = await _serve(tmp_path, env)
    try:
        assert set(proc.listening) >= {"http", "dns", "admin"}
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{proc.port('admin')}", headers={"Authorization": f"Bearer {TOKEN}"}
        ) as c:
            await c.put("/v1/sandboxes/audited", json={"address": "127.0.0.2", "public": False})
            await c.patch(
                "/v1/sandboxes/audited", json={"max_connections": 3}, headers={"content-type": "application/json"}
            )
            await c.post("/v1/sandboxes/audited/token")
            await c.delete("/v1/sandboxes/audited")
            await c.get("/v1/sandboxes")  # a read: no line
    finally:
        out = await trio.to_thread.run_sync(proc.stop)
    docs = [json.loads(line) for line in out.splitlines() if line.strip()]  # raises on any line not JSON
    listening = {d["kind"]: d["address"] for d in docs if d.get("event") == "listening"}
    assert listening == proc.listening
    changes = [d["message"] for d in docs if d.get("logger") == "edge.admin" and d["message"].startswith("change: ")]
    assert len(changes) == 4, changes
    assert changes[0].startswith(
        'change: PUT sandbox audited: address="127.0.0.2" public=false mask_request_host=null'
        " max_connections=null internet_access=true allow_out=[] deny_out=[] new traffic access token;"
        " by 127.0.0.1:"
    )
    assert changes[1].startswith("change: PATCH sandbox audited: max_connections=3; by 127.0.0.1:")
    assert changes[2].startswith("change: POST sandbox audited: new traffic access token")
    assert changes[3].startswith("change: DELETE sandbox audited: removed; by 127.0.0.1:")
    import hashlib

    fingerprint = "sha256:" + hashlib.sha256(TOKEN.encode()).hexdigest()[:8]
    assert all(c.endswith(f" with token {fingerprint}") for c in changes)
    assert TOKEN not in out


# --- the public URL -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "label, config, url",
    [
        ("the listener's port", '[http]\nlisten = "127.0.0.1:8080"\n', "http://3000-x.sandbox.localhost:8080/"),
        ("behind a load balancer on 80", "public_url_port = 80\n", "http://3000-x.sandbox.localhost/"),
        (
            "a TLS terminator on 443",
            'public_url_port = 443\n[http]\nscheme = "https"\n',
            "https://3000-x.sandbox.localhost/",
        ),
        ("an HTTPS listener", '[https]\nlisten = "127.0.0.1:8443"\n', "https://3000-x.sandbox.localhost:8443/"),
        (
            "an HTTPS listener mapped to 443",
            'public_url_port = 443\n[https]\nlisten = "127.0.0.1:8443"\n',
            "https://3000-x.sandbox.localhost/",
        ),
        (
            "https on port 80 keeps it",
            'public_url_port = 80\n[https]\nlisten = "127.0.0.1:8443"\n',
            "https://3000-x.sandbox.localhost:80/",
        ),
    ],
    ids=lambda v: v if isinstance(v, str) and " " in v else "",
)
def test_edge_host_uses_the_public_scheme_and_port(tmp_path, label, config, url):
    """`edge host --url`: scheme://host/, public_url_port or else the listener's, the scheme's own port left out."""
    (tmp_path / "edge.toml").write_text(config)
    env = edge_env(tmp_path)
    res = edge_cli(["host", "x", "3000", "--config", str(tmp_path / "edge.toml"), "--url"], env)
    assert res.stdout.strip() == url, (label, res.stderr)
    res = edge_cli(["host", "x", "3000", "--config", str(tmp_path / "edge.toml")], env)
    assert res.stdout.strip() == url.split("://", 1)[1].rstrip("/"), label


async def test_the_redirect_to_https_uses_the_public_port(make_edge, tmp_path, backend):
    """https.redirect_http behind a port mapping (public_url_port = 443): the 308 names no port, not the listener's."""
    ca = TestCA(tmp_path)
    cert, key = ca.issue(["*.sandbox.localhost"], "public")
    edge = await make_edge(
        [Sandbox("demo", "127.0.0.2")],
        public_url_port=443,
        https={"listen": "127.0.0.1:0", "redirect_http": True, "certs": [{"cert": str(cert), "key": str(key)}]},
    )
    res = await curl("-i", f"http://{backend.port}-demo.sandbox.localhost:{edge.port}/a?b=1")
    head = res.stdout.split(b"\r\n\r\n", 1)[0].decode().lower()
    assert head.startswith("http/1.1 308")
    assert f"location: https://{backend.port}-demo.sandbox.localhost/a?b=1\r\n" in head + "\r\n"
