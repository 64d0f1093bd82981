"""`edge dns` as users run it, checked with dig (the README's quick start) and dnspython."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.proc import listening

REPO = Path(__file__).resolve().parent.parent.parent


class EdgeDns:
    """`python -m edge dns --dns 127.0.0.1:0 ...` in a subprocess; `.port` is read from its output."""

    def __init__(self, tmp_path: Path, *args: str) -> None:
        env = {**os.environ, "EDGE_STATE_DIR": str(tmp_path / "state")}
        env.pop("EDGE_CONFIG", None)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "edge", "dns", "--dns", "127.0.0.1:0", *args],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.output = ""
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            self.output += line
            found = listening(line)  # `edge: dns listening on ADDR`, or its JSON form (the default log format)
            if found and found[0] == "dns":
                self.port = int(found[1].rsplit(":", 1)[1])
                return
        self.stop()
        raise RuntimeError("edge dns did not start:\n" + self.output)

    def stop(self) -> str:
        if self.proc.poll() is None:
            self.proc.terminate()
        out, _ = self.proc.communicate(timeout=10)
        return self.output + (out or "")


@pytest.fixture
def edge_dns(tmp_path):
    server = EdgeDns(tmp_path)
    yield server
    server.stop()


@pytest.mark.skipif(shutil.which("dig") is None, reason="dig is not installed (apt-get install dnsutils)")
@pytest.mark.parametrize("transport", ["+notcp", "+tcp"])
def test_readme_dig_quick_start_answers(edge_dns, transport):
    """`dig @127.0.0.1 -p PORT 3000-demo.sandbox.localhost` answers 127.0.0.1 with the shipped zone."""
    done = subprocess.run(
        [
            "dig",
            "@127.0.0.1",
            "-p",
            str(edge_dns.port),
            transport,
            "+short",
            "+tries=1",
            "+time=3",
            "3000-demo.sandbox.localhost",
        ],
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert done.stdout.strip() == "127.0.0.1"


def test_bad_zone_file_refuses_to_start_with_file_line_and_reason(tmp_path):
    """`edge dns` with a broken zone exits non-zero and names FILE:LINE: reason."""
    zones = tmp_path / "zones"
    zones.mkdir()
    (zones / "sandbox.localhost.zone").write_text("$TTL 60\n@ SOA ns1 h 1 2 3 4 5\n@ NS ns1\nx A 1.2.3\n")
    done = subprocess.run(
        [sys.executable, "-m", "edge", "dns", "--dns", "127.0.0.1:0", "--zones", str(zones)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "EDGE_STATE_DIR": str(tmp_path / "state")},
    )
    assert done.returncode != 0
    assert f"{zones / 'sandbox.localhost.zone'}:4: " in done.stdout + done.stderr


@pytest.mark.parametrize("command", ["serve", "dns"])
def test_public_domain_without_zone_file_refuses_to_start_before_anything_listens(tmp_path, command):
    """`edge serve` / `edge dns` with a public domain that has no zone file (and no [dns.synthesize]
    entry) exit 1 naming the domain and the file, before any listener is up (none is announced)."""
    zones = tmp_path / "zones"
    zones.mkdir()
    env = {**os.environ, "EDGE_STATE_DIR": str(tmp_path / "state"), "EDGE_ADMIN_TOKEN": "t" * 32}
    env.pop("EDGE_CONFIG", None)
    listeners = ["--http", "127.0.0.1:0", "--dns", "127.0.0.1:0", "--admin", "127.0.0.1:0"]
    done = subprocess.run(
        [sys.executable, "-m", "edge", command, "--zones", str(zones), "--domain", "sandbox.example.test", *listeners],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    expected = f"edge: error: domain sandbox.example.test: no zone file {zones / 'sandbox.example.test.zone'}"
    assert expected in done.stderr
    assert "listening on" not in done.stdout
