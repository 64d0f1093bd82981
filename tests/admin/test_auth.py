"""Admin token resolution, the token file, the loopback rule and bearer parsing. No sockets."""

from __future__ import annotations

import stat

import pytest

from edge import config as config_mod
from edge.admin import auth
from edge.errors import ConfigError


def _config(tmp_path, listen="127.0.0.1:8081", token=""):
    return config_mod.load(env={}, overrides={"state_dir": str(tmp_path), "admin": {"listen": listen, "token": token}})


def test_config_token_wins_over_env_and_file(tmp_path):
    """admin.token in the config is used even when EDGE_ADMIN_TOKEN is set."""
    got = auth.resolve_token(_config(tmp_path, token="from-config"), {"EDGE_ADMIN_TOKEN": "from-env"}, create=True)
    assert (got.value, got.source) == ("from-config", "config")
    assert not (tmp_path / "admin-token").exists()


def test_env_token_wins_over_file(tmp_path):
    """EDGE_ADMIN_TOKEN is used when the config has none, and no file is written."""
    got = auth.resolve_token(_config(tmp_path), {"EDGE_ADMIN_TOKEN": "from-env"}, create=True)
    assert (got.value, got.source) == ("from-env", "env")
    assert not (tmp_path / "admin-token").exists()


def test_token_file_is_generated_private_and_reused(tmp_path):
    """Without config or env, the first start writes a random token with mode 0600; later starts reuse it."""
    first = auth.resolve_token(_config(tmp_path), {}, create=True)
    path = tmp_path / "admin-token"
    assert first.source == "file" and len(first.value) >= 43  # 256 bits in url-safe base64
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert auth.resolve_token(_config(tmp_path), {}, create=True).value == first.value
    assert auth.resolve_token(_config(tmp_path), {}).value == first.value  # the CLI's read-only lookup
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left behind


def test_cli_lookup_without_a_token_file_says_how_to_get_one(tmp_path):
    """The read-only lookup never creates the file; its error names the file and the alternatives."""
    with pytest.raises(ConfigError, match="admin-token does not exist.*EDGE_ADMIN_TOKEN"):
        auth.resolve_token(_config(tmp_path), {})
    assert not (tmp_path / "admin-token").exists()


def test_token_file_readable_by_others_is_refused(tmp_path):
    """A token file with group or other permissions is not trusted (as ssh does with keys)."""
    auth.resolve_token(_config(tmp_path), {}, create=True)
    (tmp_path / "admin-token").chmod(0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        auth.resolve_token(_config(tmp_path), {})


@pytest.mark.parametrize(
    "label, listen, allowed",
    [
        ("ipv4 loopback", "127.0.0.1:8081", True),
        ("other 127/8 address", "127.0.0.9:8081", True),
        ("ipv6 loopback", "[::1]:8081", True),
        ("localhost", "localhost:8081", True),
        ("all ipv4 interfaces", "0.0.0.0:8081", False),
        ("all ipv6 interfaces", "[::]:8081", False),
        ("a private address", "10.1.2.3:8081", False),
    ],
)
def test_non_loopback_admin_needs_a_configured_token(tmp_path, label, listen, allowed):
    """A generated token is enough on loopback; elsewhere the server refuses unless config or env gives one."""
    cfg = _config(tmp_path, listen=listen)
    if allowed:
        assert auth.server_token(cfg, {}).source == "file", label
    else:
        with pytest.raises(ConfigError, match="not a loopback address"):
            auth.server_token(cfg, {})
        assert not (tmp_path / "admin-token").exists(), label
        assert auth.server_token(cfg, {"EDGE_ADMIN_TOKEN": "t"}).source == "env", label
        assert auth.server_token(_config(tmp_path, listen=listen, token="c"), {}).source == "config", label


@pytest.mark.parametrize(
    "label, header, want",
    [
        ("bearer", b"Bearer abc", b"abc"),
        ("scheme in any case", b"bEaReR abc", b"abc"),
        ("extra spaces", b"Bearer   abc  ", b"abc"),
        ("str header", "Bearer abc", b"abc"),
        ("missing", None, None),
        ("empty", b"", None),
        ("scheme only", b"Bearer", None),
        ("scheme and spaces", b"Bearer   ", None),
        ("basic auth", b"Basic YWJjOmRlZg==", None),
        ("token alone", b"abc", None),
    ],
)
def test_bearer_header_parsing(label, header, want):
    """Only `Bearer <credentials>` yields a token."""
    assert auth.bearer(header) == want, label


def test_matches_compares_whole_tokens():
    """Equal tokens match; a prefix, a longer token or a different one does not."""
    assert auth.matches(b"secret-token", "secret-token")
    assert auth.matches("secret-token", "secret-token")
    for other in (b"secret", b"secret-token-", b"Secret-token", b""):
        assert not auth.matches(other, "secret-token"), other
