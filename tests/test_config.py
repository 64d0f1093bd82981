"""Configuration: defaults, file, env and flags, and refusal of unknown keys."""

import pytest

from edge.config import Listen, load
from edge.errors import ConfigError


def test_defaults_match_the_documented_ones(tmp_path):
    """HTTP 127.0.0.1:8080, DNS :5353, admin :8081, sandbox.localhost, catalog in the state folder."""
    cfg = load(env={"EDGE_STATE_DIR": str(tmp_path)})
    assert (str(cfg.http.listen), str(cfg.dns.listen), str(cfg.admin.listen)) == (
        "127.0.0.1:8080",
        "127.0.0.1:5353",
        "127.0.0.1:8081",
    )
    assert cfg.domains == ("sandbox.localhost",)
    assert cfg.catalog_url == f"sqlite:///{tmp_path}/catalog.db"


def test_flags_win_over_env_which_wins_over_the_file(tmp_path):
    """Precedence: flags > environment > file > defaults."""
    f = tmp_path / "edge.toml"
    f.write_text(
        'catalog = "sqlite:///file.db"\ndomains = ["a.example"]\n[http]\nlisten = "127.0.0.1:1"\nhead_timeout = 3\n'
    )
    cfg = load(f, env={"EDGE_CATALOG": "sqlite:///env.db"}, overrides={"http": {"listen": "[::1]:2"}})
    assert cfg.catalog == "sqlite:///env.db" and cfg.domains == ("a.example",)
    assert cfg.http.listen == Listen("::1", 2) and cfg.http.head_timeout == 3.0


@pytest.mark.parametrize(
    "label, text, message",
    [
        ("unknown top key", "domian = 'x'\n", "unknown config key domian"),
        ("unknown nested key", "[http]\nkeepalive = 1\n", "unknown config key http.keepalive"),
        ("wrong type", "[http]\nhead_timeout = 'soon'\n", r"^http.head_timeout: 'soon' is not a number \(seconds"),
        ("negative", "[http]\nhead_timeout = -1\n", "^http.head_timeout: -1 is negative; give a number of seconds, 0"),
        ("negative count", "[http]\nmax_connections = -1\n", "^http.max_connections: -1 is negative; give a whole"),
        ("not a boolean", "access_log = 'yes'\n", "^access_log: 'yes' is not true or false$"),
        ("public port out of range", "public_url_port = 70000\n", "^public_url_port: 70000 is not a port"),
        ("bad listen", "[http]\nlisten = '1.2.3.4'\n", "not ADDR:PORT"),
        ("bad domain", "domains = ['bad domain']\n", "is not a domain name"),
        ("bad toml", "[http\n", "config file"),
        ("bad log format", "log_format = 'xml'\n", "log_format"),
    ],
)
def test_bad_config_is_refused_naming_the_key(tmp_path, label, text, message):
    """Each bad file raises a ConfigError that names what is wrong."""
    f = tmp_path / "edge.toml"
    f.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load(f, env={})
