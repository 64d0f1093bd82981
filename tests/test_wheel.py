"""A wheel of edge carries the shipped zones: an install from it serves sandbox.localhost from its own file.

The wheel is built from a copy of the sources (so no build/ or egg-info lands in the checkout) with pip's
usual build isolation, as a user's `pip install` would, and installed with --target into a temporary
folder. edge is then imported from that folder alone: `python -S` skips the .pth files (this venv's
editable install of the checkout among them) and PYTHONPATH holds the folder, then this venv's
site-packages for the dependencies.
"""

import json
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow  # ~10 s: building a wheel sets up an isolated build environment


def _pip(*args: str, cwd: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "pip", *args], cwd=cwd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"pip {' '.join(args)}:\n{done.stdout}\n{done.stderr}"


def _installed_python(site: Path, tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": f"{site}:{sysconfig.get_paths()['purelib']}"}
    return subprocess.run(
        [sys.executable, "-S", *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
    )


def test_wheel_install_ships_the_zones_and_zone_check_accepts_them(tmp_path):
    """SHIPPED_ZONES of an installed wheel is inside the install and holds a valid sandbox.localhost.zone."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    shutil.copytree(REPO / "edge", src / "edge", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    _pip("wheel", "--no-deps", "--quiet", "--wheel-dir", str(tmp_path / "dist"), str(src), cwd=tmp_path)
    (wheel,) = (tmp_path / "dist").glob("edge-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "edge/zones/sandbox.localhost.zone" in names, names
    assert "edge/zones/example.com.zone.sample" in names, names

    site = tmp_path / "site"
    _pip("install", "--no-deps", "--no-index", "--quiet", "--target", str(site), str(wheel), cwd=tmp_path)
    probe = _installed_python(
        site,
        tmp_path,
        "-c",
        "import json, edge, edge.config as c;"
        "print(json.dumps([edge.__file__, str(c.SHIPPED_ZONES), str(c.DnsConfig().zones)]))",
    )
    assert probe.returncode == 0, probe.stderr
    module, shipped, default = json.loads(probe.stdout)
    assert Path(module).is_relative_to(site), f"edge was imported from {module}, not from the wheel"
    assert Path(shipped) == site / "edge" / "zones" == Path(default)
    zone = Path(shipped) / "sandbox.localhost.zone"
    assert zone.is_file()

    check = _installed_python(site, tmp_path, "-m", "edge", "zone", "check", str(zone))
    assert check.returncode == 0, check.stdout + check.stderr
