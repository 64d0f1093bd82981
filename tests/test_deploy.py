"""deploy/: the systemd unit, the production config and the example zone a bare VM is set up from.

The three files are read by three different programs (systemd, edge's config loader, edge's zone
loader), so each is checked by the program that reads it, and the facts they share (the state folder,
the config path, the stop timeout against the shutdown grace) are checked against each other.

`systemd-analyze verify` refuses a unit whose ExecStart binary is missing, and /opt/edge/venv does not
exist here: it runs on a copy whose ExecStart names /bin/true, in a temporary folder. It exits 0 even
for unknown keys and unparsable values (it only warns: "Unknown key 'X', ignoring"), so any line it
prints about the unit is a failure too.
"""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from edge.config import load

REPO = Path(__file__).resolve().parent.parent
DEPLOY = REPO / "deploy"
UNIT = DEPLOY / "edge.service"
CONFIG = DEPLOY / "edge.toml"
ZONES = DEPLOY / "zones"
EXEC = "/opt/edge/venv/bin/edge"


def _unit_settings(text: str) -> dict[str, list[str]]:
    """`Key=value` lines of a unit file, every value of a repeated key, comments and sections dropped."""
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            out.setdefault(key.strip(), []).append(value.strip())
    return out


def test_production_config_example_loads_with_edges_own_loader():
    """deploy/edge.toml loads (no unknown key, no bad value) and listens publicly on 80, 443 and 53."""
    cfg = load(CONFIG, env={})
    assert cfg.domains == ("sandbox.example.com",)
    listeners = (str(cfg.http.listen), str(cfg.https.listen), str(cfg.dns.listen))
    assert listeners == ("0.0.0.0:80", "0.0.0.0:443", "0.0.0.0:53")
    assert cfg.admin.listen.host == "127.0.0.1"
    assert cfg.https.redirect_http
    assert cfg.acme.directory == "https://acme-v02.api.letsencrypt.org/directory" and cfg.acme.email
    assert cfg.dns.zones == Path("/etc/edge/zones") and cfg.state_dir == Path("/var/lib/edge")


def test_example_zone_passes_zone_check_for_every_configured_domain():
    """deploy/zones/ has `<domain>.zone` for each domain of the config, and `edge zone check` accepts it."""
    files = [ZONES / f"{domain}.zone" for domain in load(CONFIG, env={}).domains]
    assert all(f.is_file() for f in files), files
    done = subprocess.run(
        [sys.executable, "-m", "edge", "zone", "check", *map(str, files)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.count(": ok") == len(files)


def test_unit_agrees_with_the_config_example():
    """The unit runs edge as `edge` with deploy/edge.toml's config and state folder, and outlasts its drain."""
    unit = _unit_settings(UNIT.read_text())
    cfg = load(CONFIG, env={})
    assert unit["ExecStart"] == [f"{EXEC} serve --config /etc/edge/edge.toml"]
    assert unit["User"] == ["edge"] and "DynamicUser" not in unit
    assert unit["Environment"] == [f"EDGE_STATE_DIR={cfg.state_dir}"] and unit["StateDirectory"] == ["edge"]
    assert unit["ConfigurationDirectory"] == ["edge"]
    assert unit["AmbientCapabilities"] == unit["CapabilityBoundingSet"] == ["CAP_NET_BIND_SERVICE"]
    assert unit["Restart"] == ["on-failure"] and unit["LimitNOFILE"] == ["1048576"]
    assert unit["KillSignal"] == ["SIGTERM"] and unit["KillMode"] == ["mixed"]  # the supervisor stops its workers
    assert unit["Type"] == ["notify"] and unit["NotifyAccess"] == ["main"]
    assert unit["ExecReload"] == [f"{EXEC} reload --config /etc/edge/edge.toml"]
    timeout_stop = float(unit["TimeoutStopSec"][0])
    assert cfg.http.shutdown_grace < timeout_stop <= cfg.http.shutdown_grace + 10


def test_unit_passes_systemd_analyze_verify(tmp_path):
    """`systemd-analyze verify` accepts deploy/edge.service: exit 0 and not one warning about it."""
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.skip("systemd-analyze is not installed here (Debian: apt-get install systemd)")
    probe = tmp_path / "probe" / "probe.service"
    probe.parent.mkdir()
    probe.write_text("[Service]\nExecStart=/bin/true\n")
    done = subprocess.run([tool, "verify", str(probe)], capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        pytest.skip(f"systemd-analyze verify does not work in this container: {done.stderr.strip()}")

    text = UNIT.read_text()
    assert text.count(f"ExecStart={EXEC} ") == 1 and text.count(f"ExecReload={EXEC} ") == 1
    copy = tmp_path / "edge.service"
    copy.write_text(
        text.replace(f"ExecStart={EXEC} ", "ExecStart=/bin/true ").replace(
            f"ExecReload={EXEC} ", "ExecReload=/bin/true "
        )
    )
    done = subprocess.run([tool, "verify", str(copy)], capture_output=True, text=True, timeout=60)
    about_unit = [line for line in (done.stdout + done.stderr).splitlines() if "edge.service" in line]
    assert done.returncode == 0 and not about_unit, done.stdout + done.stderr
