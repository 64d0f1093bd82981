"""The `edge` command line, run as users run it, against a real catalog file."""

from __future__ import annotations

import json

import pytest

from tests.proc import edge_cli, edge_env


@pytest.fixture
def env(tmp_path):
    return edge_env(tmp_path)


def test_sandbox_add_prints_the_record_as_json(env):
    """`add --json` prints one JSON object with id, address, public and mask_request_host."""
    res = edge_cli(["sandbox", "add", "demo", "--address", "127.0.0.2", "--mask-request-host", "localhost:${PORT}", "--json"], env)
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    assert {k: doc[k] for k in ("id", "address", "public", "mask_request_host")} == {
        "id": "demo", "address": "127.0.0.2", "public": True, "mask_request_host": "localhost:${PORT}"
    }
    assert doc["created_at"] > 0 and doc["updated_at"] >= doc["created_at"]


def test_sandbox_add_twice_updates_and_keeps_created_time(env):
    """Adding an existing ID updates it in place; created_at stays."""
    first = json.loads(edge_cli(["sandbox", "add", "demo", "--address", "127.0.0.2", "--json"], env).stdout)
    second = json.loads(edge_cli(["sandbox", "add", "demo", "--address", "::1", "--json"], env).stdout)
    assert second["address"] == "::1" and second["created_at"] == first["created_at"]
    listing = json.loads(edge_cli(["sandbox", "list", "--json"], env).stdout)
    assert [s["id"] for s in listing] == ["demo"]


def test_sandbox_list_show_and_rm(env):
    """list shows every sandbox, show one, rm removes it and show then fails."""
    for sid, ip in (("a1", "127.0.0.2"), ("b2", "127.0.0.3")):
        edge_cli(["sandbox", "add", sid, "--address", ip], env)
    text = edge_cli(["sandbox", "list"], env).stdout
    assert "a1  address=127.0.0.2" in text and "b2  address=127.0.0.3" in text
    assert json.loads(edge_cli(["sandbox", "show", "b2", "--json"], env).stdout)["address"] == "127.0.0.3"
    assert edge_cli(["sandbox", "rm", "b2"], env).returncode == 0
    gone = edge_cli(["sandbox", "show", "b2"], env)
    assert gone.returncode == 1 and gone.stderr.strip() == "edge: error: no sandbox 'b2' in the catalog"


def test_catalog_flag_and_env_var_choose_the_catalog(env, tmp_path):
    """--catalog and EDGE_CATALOG both pick the catalog file."""
    url = f"sqlite:///{tmp_path}/other.db"
    edge_cli(["sandbox", "add", "x1", "--address", "127.0.0.2", "--catalog", url], env)
    assert json.loads(edge_cli(["sandbox", "list", "--json"], env).stdout) == []
    assert [s["id"] for s in json.loads(edge_cli(["sandbox", "list", "--json"], dict(env, EDGE_CATALOG=url)).stdout)] == ["x1"]
    assert (tmp_path / "other.db").exists()


def test_host_prints_the_public_host_for_a_port(env):
    """`edge host ID PORT` prints <port>-<id>.<domain>:<http port>, like E2B's getHost."""
    res = edge_cli(["host", "i62mff4ahtrdfdkyn2esc", "3000"], env)
    assert res.stdout.strip() == "3000-i62mff4ahtrdfdkyn2esc.sandbox.localhost:8080"
    res = edge_cli(["host", "abc", "443", "--domain", "e2b.example", "--http", "0.0.0.0:80"], env)
    assert res.stdout.strip() == "443-abc.e2b.example"


@pytest.mark.parametrize(
    "label, args, message",
    [
        ("id with capitals", ["sandbox", "add", "Demo", "--address", "127.0.0.2"], "is not a sandbox ID"),
        ("id ending in dash", ["sandbox", "add", "demo-", "--address", "127.0.0.2"], "is not a sandbox ID"),
        ("id too long", ["sandbox", "add", "a" * 64, "--address", "127.0.0.2"], "is not a sandbox ID"),
        ("address not an IP", ["sandbox", "add", "demo", "--address", "example.com"], "is not an IP address"),
        ("unknown flag", ["sandbox", "list", "--bogus"], "unrecognized arguments"),
        ("abbreviated flag", ["sandbox", "add", "demo", "--addr", "127.0.0.2"], "required: --address"),
        ("port out of range", ["host", "demo", "70000"], "is not a port number"),
        ("port zero", ["host", "demo", "0"], "is not a port number"),
        ("bad mask", ["sandbox", "add", "demo", "--address", "127.0.0.2", "--mask-request-host", "a b"], "mask_request_host"),
        ("bad catalog url", ["sandbox", "list", "--catalog", "postgres://x"], "not a supported catalog URL"),
        ("bad listen address", ["host", "demo", "3000", "--http", "nowhere:80"], "is not an IP address"),
    ],
)
def test_bad_input_gets_one_line_and_a_nonzero_exit(env, label, args, message):
    """Bad input: one line on stderr naming the problem, exit non-zero, no traceback."""
    res = edge_cli(args, env)
    assert res.returncode != 0, label
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], (label, res.stderr)
    assert "Traceback" not in res.stderr


def test_unknown_config_key_is_an_error(env, tmp_path):
    """A typo in the config file is refused, naming the key."""
    cfg = tmp_path / "edge.toml"
    cfg.write_text('[http]\nlisten = "127.0.0.1:0"\nkeepalive_timout = 5\n')
    res = edge_cli(["serve", "--config", str(cfg)], env)
    assert res.returncode == 1
    assert "unknown config key http.keepalive_timout" in res.stderr


def test_port_in_use_is_one_line(env):
    """A listener that cannot bind (admin port taken) is one line and exit 1, not a traceback."""
    import socket

    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    port = taken.getsockname()[1]
    try:
        res = edge_cli(["serve", "--http", "127.0.0.1:0", "--dns", "127.0.0.1:0", "--admin", f"127.0.0.1:{port}"], env)
    finally:
        taken.close()
    assert res.returncode == 1 and "Traceback" not in res.stderr
    assert f"cannot listen on 127.0.0.1:{port}" in res.stderr.strip().splitlines()[-1]
