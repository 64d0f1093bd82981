"""The README's quick start, run exactly as written, on the default ports."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time

from bench.peers import wait_port
from tests.conftest import REPO


def _quickstart_lines() -> list[str]:
    text = (REPO / "README.md").read_text()
    block = re.search(r"<!-- quickstart.*?-->\n```sh\n(.*?)```", text, re.S).group(1)
    return [line.split("#")[0].strip() for line in block.strip().splitlines()]


def test_readme_quick_start_works_as_written(tmp_path):
    """make run; add the sandbox; start http.server; curl through the edge: the listing comes back."""
    register, server, fetch = _quickstart_lines()
    assert register.startswith(".venv/bin/edge sandbox add demo") and fetch.startswith("curl http://3000-demo")
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGE_")}
    env["EDGE_STATE_DIR"] = str(tmp_path / "state")
    (tmp_path / "www").mkdir()
    (tmp_path / "www" / "hello-from-the-sandbox.txt").write_text("hi")
    procs = []
    try:
        log = open(tmp_path / "make-run.log", "w")
        procs.append(
            subprocess.Popen(
                ["make", "run"], cwd=REPO, env=env, start_new_session=True, stdout=log, stderr=subprocess.STDOUT
            )
        )
        deadline = time.monotonic() + 90
        while "edge is up" not in (tmp_path / "make-run.log").read_text():
            if time.monotonic() > deadline or procs[0].poll() is not None:
                raise AssertionError("make run did not come up:\n" + (tmp_path / "make-run.log").read_text())
            time.sleep(0.1)
        subprocess.run(register, shell=True, cwd=REPO, env=env, check=True, capture_output=True)
        time.sleep(0.5)  # a person switches terminals; the edge sees the new sandbox within a catalog poll
        procs.append(
            subprocess.Popen(
                server,
                shell=True,
                cwd=tmp_path / "www",
                env=env,
                start_new_session=True,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
        wait_port("127.0.0.2", 3000, 10)
        out = subprocess.run(fetch, shell=True, cwd=REPO, env=env, capture_output=True, text=True, timeout=30)
        assert out.returncode == 0, out.stderr + (tmp_path / "make-run.log").read_text()
        assert "hello-from-the-sandbox.txt" in out.stdout
    finally:
        for p in procs:
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
