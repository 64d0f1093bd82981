"""`edge serve` as a process: it sees catalog changes made by other processes, and stops cleanly."""

from __future__ import annotations

import json
import signal
import subprocess

import pytest
import trio

from tests.backends import Backend
from tests.conftest import curl
from tests.proc import EdgeProcess, edge_cli, edge_env


@pytest.fixture
async def served(tmp_path):
    env = edge_env(tmp_path)
    proc = await trio.to_thread.run_sync(
        lambda: EdgeProcess(["serve", "--http", "127.0.0.1:0", "--dns", "127.0.0.1:0", "--log-format", "text"], env)
    )
    yield proc, env
    proc.stop()


async def _status(url: str) -> int:
    res = await curl("-o", "/dev/null", "-w", "%{http_code}", url)
    return int(res.stdout)


async def _within(seconds: float, url: str, want: int) -> float:
    t0 = trio.current_time()
    with trio.fail_after(seconds):
        while await _status(url) != want:
            await trio.sleep(0.05)
    return trio.current_time() - t0


async def test_catalog_changes_by_another_process_are_seen_within_a_second(served, nursery):
    """add, change and rm through the CLI take effect in the running edge within 1 s, no restart."""
    proc, env = served
    b2 = await Backend("b2").start(nursery, "127.0.0.2")
    await Backend("b3").start(nursery, "127.0.0.3", b2.port)  # same port, other address
    url = f"http://{b2.port}-live.sandbox.localhost:{proc.port()}/echo"
    assert await _status(url) == 502
    edge_cli(["sandbox", "add", "live", "--address", "127.0.0.2"], env)
    assert await _within(1.0, url, 200) < 1.0
    edge_cli(["sandbox", "update", "live", "--address", "127.0.0.3"], env)

    async def backend() -> str | None:
        try:
            return json.loads((await curl(url)).stdout)["backend"]
        except subprocess.CalledProcessError as exc:
            if exc.returncode in (18, 52):  # in flight to the old address when the change landed: cut
                return None
            raise

    with trio.fail_after(1.0):
        while await backend() != "b3":
            await trio.sleep(0.05)
    edge_cli(["sandbox", "rm", "live"], env)
    assert await _within(1.0, url, 502) < 1.0


async def test_serve_prints_where_it_listens_and_stops_on_sigterm(served):
    """The listening lines come first; SIGTERM ends the process with exit 0."""
    proc, _ = served
    assert set(proc.listening) >= {"http", "dns"}
    proc.proc.send_signal(signal.SIGTERM)
    returncode = await trio.to_thread.run_sync(lambda: proc.proc.wait(timeout=10))
    out = await trio.to_thread.run_sync(proc.stop)
    assert returncode == 0
    assert "stopping on SIGTERM" in out


async def test_serve_logs_one_line_per_request(served, nursery):
    """Each request leaves one access line on stdout."""
    proc, env = served
    b = await Backend("b").start(nursery, "127.0.0.2")
    edge_cli(["sandbox", "add", "logme", "--address", "127.0.0.2"], env)
    url = f"http://{b.port}-logme.sandbox.localhost:{proc.port()}/echo?secret=1"
    await _within(1.0, url, 200)
    out = await trio.to_thread.run_sync(proc.stop)
    lines = [ln for ln in out.splitlines() if f"{b.port}-logme" in ln]
    assert lines and all('"GET ' in ln and "/echo" in ln and "secret" not in ln for ln in lines)


async def test_sigterm_lets_requests_in_flight_finish_and_refuses_new_ones(served, nursery):
    """Graceful stop: a request in flight completes, new connections are refused, exit 0."""
    proc, env = served
    b = await Backend("b").start(nursery, "127.0.0.2")
    edge_cli(["sandbox", "add", "drain", "--address", "127.0.0.2"], env)
    url = f"http://{b.port}-drain.sandbox.localhost:{proc.port()}"
    await _within(1.0, url + "/echo", 200)
    result = {}

    async def slow():
        result["slow"] = await curl("-o", "/dev/null", "-w", "%{http_code}", url + "/slow?delay=1.5", check=False)

    nursery.start_soon(slow)
    await trio.sleep(0.5)
    proc.proc.send_signal(signal.SIGTERM)
    await trio.sleep(0.3)
    refused = await curl(url + "/echo", check=False)
    assert refused.returncode == 7  # CURLE_COULDNT_CONNECT: the listener is closed
    assert await trio.to_thread.run_sync(lambda: proc.proc.wait(timeout=15)) == 0
    assert result["slow"].stdout == b"200"
