"""The `edge` command line, run as users run it, against a real catalog file."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import stat

import pytest

from edge.cli import UPDATE_USAGE
from tests.proc import edge_cli, edge_env


@pytest.fixture
def env(tmp_path):
    return edge_env(tmp_path)


def test_sandbox_add_prints_the_record_as_json(env):
    """`add --json` prints one JSON object with id, address, public and mask_request_host."""
    res = edge_cli(
        ["sandbox", "add", "demo", "--address", "127.0.0.2", "--mask-request-host", "localhost:${PORT}", "--json"], env
    )
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    assert {k: doc[k] for k in ("id", "address", "public", "mask_request_host")} == {
        "id": "demo",
        "address": "127.0.0.2",
        "public": True,
        "mask_request_host": "localhost:${PORT}",
    }
    assert doc["created_at"] > 0 and doc["updated_at"] >= doc["created_at"]


def _json(args, env) -> dict:
    res = edge_cli([*args, "--json"], env)
    assert res.returncode == 0, (args, res.stderr)
    return json.loads(res.stdout)


def _guarded(env) -> dict:
    """secret2: private, max_connections=5 and a Host mask: what `add` and `token` once silently dropped."""
    return _json(
        [
            "sandbox",
            "add",
            "secret2",
            "--address",
            "127.0.0.2",
            "--private",
            "--max-connections",
            "5",
            "--mask-request-host",
            "localhost:${PORT}",
        ],
        env,
    )


def test_add_on_an_existing_id_fails_names_update_and_changes_nothing(env):
    """Re-adding a private, limited, masked sandbox is refused; it keeps every protection and its token."""
    before = _guarded(env)
    res = edge_cli(["sandbox", "add", "secret2", "--address", "127.0.0.3"], env)
    assert res.returncode == 1 and res.stdout == ""
    assert res.stderr.startswith("edge: error: sandbox 'secret2' exists already") and len(res.stderr.splitlines()) == 1
    assert UPDATE_USAGE in res.stderr
    after = _json(["sandbox", "show", "secret2"], env)
    assert after == {k: v for k, v in before.items() if k != "traffic_access_token"}


UPDATES = [
    # label, update flags, the fields that change (every other field must keep its value)
    ("address only", ["--address", "127.0.0.3"], {"address": "127.0.0.3"}),
    ("limit only", ["--max-connections", "9"], {"max_connections": 9}),
    ("limit removed", ["--no-max-connections"], {"max_connections": None}),
    ("mask changed", ["--mask-request-host", "app:${PORT}"], {"mask_request_host": "app:${PORT}"}),
    ("mask removed", ["--no-mask"], {"mask_request_host": None}),
    ("private again: nothing changes", ["--private"], {}),
    ("made public", ["--public"], {"public": True}),
    (
        "several at once",
        ["--address", "::1", "--no-mask", "--max-connections", "2"],
        {"address": "::1", "mask_request_host": None, "max_connections": 2},
    ),
]


@pytest.mark.parametrize("label, flags, changed", UPDATES, ids=[u[0] for u in UPDATES])
def test_update_changes_only_the_fields_named(env, label, flags, changed):
    """`edge sandbox update` touches the fields its flags name and nothing else; no token is printed."""
    before = _guarded(env)
    after = _json(["sandbox", "update", "secret2", *flags], env)
    assert "traffic_access_token" not in after, label
    fields = ("address", "public", "mask_request_host", "max_connections", "created_at")
    assert {k: after[k] for k in fields} == {**{k: before[k] for k in fields}, **changed}, label


def test_update_private_prints_a_new_token_once_and_public_forgets_it(env, tmp_path):
    """--private on a public sandbox prints its token (once, like add --private); --public drops the hash."""
    store_path = tmp_path / "state" / "catalog.db"
    edge_cli(["sandbox", "add", "flip", "--address", "127.0.0.2", "--max-connections", "3"], env)
    text = edge_cli(["sandbox", "update", "flip", "--private"], env)
    assert text.returncode == 0, text.stderr
    line = text.stdout.splitlines()[1]
    assert line.startswith("traffic_access_token=") and line.endswith("(shown once: store it now)")
    token = line.split()[0].removeprefix("traffic_access_token=")
    assert _hash_of(store_path, "flip") == hashlib.sha256(token.encode()).hexdigest()
    assert "traffic_access_token" not in _json(["sandbox", "update", "flip", "--private"], env)  # kept, not shown
    public = _json(["sandbox", "update", "flip", "--public"], env)
    assert (public["public"], public["max_connections"]) == (True, 3)
    assert _hash_of(store_path, "flip") is None


def _hash_of(path, sandbox_id):
    with sqlite3.connect(path) as db:
        return db.execute("SELECT token_hash FROM sandboxes WHERE id = ?", (sandbox_id,)).fetchone()[0]


def test_token_rotate_on_a_public_sandbox_fails_and_names_update_private(env, tmp_path):
    """`token --rotate` never makes a public sandbox private; it says to use `update --private`."""
    edge_cli(["sandbox", "add", "open", "--address", "127.0.0.2"], env)
    res = edge_cli(["sandbox", "token", "open", "--rotate"], env)
    assert res.returncode == 1 and res.stdout == ""
    assert res.stderr.startswith("edge: error: sandbox 'open' is public: it has no token to rotate")
    assert "edge sandbox update open --private" in res.stderr and len(res.stderr.splitlines()) == 1
    assert _json(["sandbox", "show", "open"], env)["public"] is True
    assert _hash_of(tmp_path / "state" / "catalog.db", "open") is None


def test_token_rotate_on_a_private_sandbox_keeps_its_other_fields(env):
    """A rotation prints a new token and changes nothing else."""
    before = _guarded(env)
    after = _json(["sandbox", "token", "secret2", "--rotate"], env)
    assert after["traffic_access_token"] != before["traffic_access_token"]
    fields = ("address", "public", "mask_request_host", "max_connections")
    assert {k: after[k] for k in fields} == {k: before[k] for k in fields}


def test_the_catalog_file_is_readable_by_its_owner_only(env, tmp_path):
    """The catalog the CLI creates, token hashes inside, is mode 0600 (and so its -wal and -shm)."""
    edge_cli(["sandbox", "add", "demo", "--address", "127.0.0.2", "--private"], env)
    state = tmp_path / "state"
    files = sorted(state.glob("catalog.db*"))
    assert files and {f.name: stat.S_IMODE(f.stat().st_mode) for f in files} == {f.name: 0o600 for f in files}


def test_the_cli_narrows_an_existing_world_readable_catalog(env, tmp_path):
    """A catalog left 0644 by an older edge is made 0600 by the next command, with one warning line."""
    edge_cli(["sandbox", "add", "demo", "--address", "127.0.0.2", "--private"], env)
    path = tmp_path / "state" / "catalog.db"
    path.chmod(0o644)
    res = edge_cli(["sandbox", "list"], env)
    assert res.returncode == 0 and stat.S_IMODE(path.stat().st_mode) == 0o600
    [line] = res.stderr.splitlines()
    assert line.startswith("catalog file ") and line.endswith(
        "/state/catalog.db was mode 0644, readable by others; now 0600"
    )


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
    assert [
        s["id"] for s in json.loads(edge_cli(["sandbox", "list", "--json"], dict(env, EDGE_CATALOG=url)).stdout)
    ] == ["x1"]
    assert (tmp_path / "other.db").exists()


def test_a_named_catalog_in_a_missing_folder_is_refused_and_not_created(env, tmp_path):
    """--catalog naming a folder that does not exist: exit 1 naming it; the folder is not made (a typo
    would otherwise be a new, empty catalog the server never reads)."""
    folder = tmp_path / "nonexistent" / "dir"
    res = edge_cli(["sandbox", "add", "x", "--address", "127.0.0.2", "--catalog", f"sqlite://{folder}/c.db"], env)
    assert res.returncode == 1
    assert res.stderr.startswith(f"edge: error: catalog: folder {folder} does not exist")
    assert not (tmp_path / "nonexistent").exists()


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
        (
            "id spelled like a flag",
            ["sandbox", "add", "-demo", "--address", "127.0.0.2"],
            "edge sandbox add: error: '-demo' is not an option of `edge sandbox add` "
            "(a sandbox ID cannot start with '-')",
        ),
        (
            "catalog in a missing folder",
            ["sandbox", "add", "x", "--address", "127.0.0.2", "--catalog", "sqlite:///nonexistent/dir/c.db"],
            "catalog: folder /nonexistent/dir does not",
        ),
        (
            "zero workers",
            ["serve", "--workers", "0", "--http", "127.0.0.1:0", "--dns", "127.0.0.1:0", "--admin", "127.0.0.1:0"],
            "edge: error: workers: 0 is not a number from 1 to 256",
        ),
        ("port out of range", ["host", "demo", "70000"], "is not a port number"),
        ("port zero", ["host", "demo", "0"], "is not a port number"),
        (
            "bad mask",
            ["sandbox", "add", "demo", "--address", "127.0.0.2", "--mask-request-host", "a b"],
            "mask_request_host",
        ),
        ("bad catalog url", ["sandbox", "list", "--catalog", "postgres://x"], "not a supported catalog URL"),
        ("bad listen address", ["host", "demo", "3000", "--http", "nowhere:80"], "is not an IP address"),
        ("add at 0.0.0.0", ["sandbox", "add", "demo", "--address", "0.0.0.0"], "is unspecified"),
        ("add at ::", ["sandbox", "add", "demo", "--address", "::"], "is unspecified"),
        ("add at the metadata address", ["sandbox", "add", "demo", "--address", "169.254.169.254"], "is link-local"),
        (
            "add at IPv4-mapped metadata",
            ["sandbox", "add", "demo", "--address", "::ffff:169.254.169.254"],
            "link-local",
        ),
        ("add at IPv4-mapped 0.0.0.0", ["sandbox", "add", "demo", "--address", "::ffff:0.0.0.0"], "unspecified"),
        ("add with a zone ID", ["sandbox", "add", "demo", "--address", "fe80::1%eth0"], "zone ID"),
        ("add at broadcast", ["sandbox", "add", "demo", "--address", "255.255.255.255"], "broadcast"),
        ("add at multicast", ["sandbox", "add", "demo", "--address", "224.0.0.1"], "multicast"),
        (
            "add with limit 0",
            ["sandbox", "add", "demo", "--address", "127.0.0.2", "--max-connections", "0"],
            "0 is not a limit",
        ),
        ("update to the metadata address", ["sandbox", "update", "demo", "--address", "169.254.169.254"], "link-local"),
        ("update with nothing to change", ["sandbox", "update", "demo"], "nothing to change"),
        ("update private and public", ["sandbox", "update", "demo", "--private", "--public"], "not allowed with"),
        (
            "update mask and no mask",
            ["sandbox", "update", "demo", "--no-mask", "--mask-request-host", "x"],
            "not allowed with",
        ),
        (
            "update limit and no limit",
            ["sandbox", "update", "demo", "--max-connections", "2", "--no-max-connections"],
            "not allowed with",
        ),
        ("update limit 0", ["sandbox", "update", "demo", "--max-connections", "0"], "--no-max-connections"),
        ("update of an absent sandbox", ["sandbox", "update", "ghost", "--public"], "no sandbox 'ghost'"),
    ],
)
def test_bad_input_gets_one_line_and_a_nonzero_exit(env, label, args, message):
    """Bad input: one line on stderr naming the problem, exit non-zero, no traceback, nothing written."""
    before = _json(["sandbox", "add", "demo", "--address", "127.0.0.2", "--max-connections", "4"], env)
    res = edge_cli(args, env)
    assert res.returncode != 0, label
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], (label, res.stderr)
    assert "Traceback" not in res.stderr
    assert _json(["sandbox", "list"], env) == [before], label


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


# --- the egress router's commands (edge/egress/README.md) ---------------------------------------------


def test_egress_rules_prints_the_nftables_ruleset_for_the_sandbox_network(env):
    """`edge egress rules --sandbox-cidr CIDR` prints a ruleset `nft -f` takes, redirecting to the listener."""
    res = edge_cli(["egress", "rules", "--sandbox-cidr", "10.1.0.0/24"], env)
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("#!/usr/sbin/nft -f") and "table inet edge_egress" in res.stdout
    assert "10.1.0.0/24" in res.stdout and "redirect to :15001" in res.stdout


def test_sandbox_add_and_network_set_the_outbound_policy(env):
    """`add --no-internet --allow-out` stores the policy in normal form; `network` replaces each list given."""
    doc = _json(
        ["sandbox", "add", "box", "--address", "10.1.0.2", "--no-internet", "--allow-out", "*.Example.COM."], env
    )
    assert (doc["internet_access"], doc["allow_out"], doc["deny_out"]) == (False, ["*.example.com"], [])
    doc = _json(["sandbox", "network", "box", "--deny-out", "198.51.100.0/24", "--internet"], env)
    assert (doc["internet_access"], doc["allow_out"], doc["deny_out"]) == (True, ["*.example.com"], ["198.51.100.0/24"])
    doc = _json(["sandbox", "network", "box", "--allow-out", "api.example.com", "--allow-out", "192.0.2.7"], env)
    assert doc["allow_out"] == ["api.example.com", "192.0.2.7"] and doc["deny_out"] == ["198.51.100.0/24"]


@pytest.mark.parametrize(
    "label, args, reason",
    [
        ("add, not a name", ["add", "box", "--address", "10.1.0.2", "--allow-out", "not a name"], "is not an IP"),
        ("add, host bits", ["add", "box", "--address", "10.1.0.2", "--deny-out", "10.1.0.1/24"], "did you mean"),
        ("network, no change", ["network", "box"], "nothing to change"),
    ],
)
def test_a_bad_outbound_policy_is_refused_with_the_reason(env, label, args, reason):
    res = edge_cli(["sandbox", *args, "--no-wait"], env)
    assert res.returncode == 1 and res.stderr.startswith("edge: error: ") and reason in res.stderr, (label, res.stderr)
    assert edge_cli(["sandbox", "show", "box"], env).returncode == 1, label  # nothing written
