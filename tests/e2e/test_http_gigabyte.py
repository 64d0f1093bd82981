"""A gigabyte each way through a real `edge serve` process, with its memory watched."""

from __future__ import annotations

import os

import pytest
import trio

from tests.backends import Backend
from tests.conftest import curl
from tests.proc import EdgeProcess, edge_cli, edge_env

GIB = 1 << 30
# Peak RSS may grow by this much at most while a gigabyte passes (buffers are 64 KiB; the rest is
# allocator noise). A proxy that held the body would grow by a gigabyte.
FLAT_KIB = 48 * 1024

pytestmark = pytest.mark.slow


@pytest.fixture
async def big(nursery, tmp_path):
    backend = await Backend("big").start(nursery, "127.0.0.4")
    env = edge_env(tmp_path)
    assert edge_cli(["sandbox", "add", "bulk", "--address", "127.0.0.4"], env).returncode == 0
    proc = await trio.to_thread.run_sync(
        lambda: EdgeProcess(["serve", "--http", "127.0.0.1:0", "--dns", "127.0.0.1:0", "--no-access-log"], env)
    )
    yield backend, proc
    proc.stop()


async def test_gigabyte_download_streams_in_flat_memory(big):
    """1 GiB from the sandbox to curl; the edge's peak RSS barely moves."""
    backend, proc = big
    before = proc.peak_rss_kib()
    res = await curl(
        "-o",
        "/dev/null",
        "-w",
        "%{size_download}",
        f"http://{backend.port}-bulk.sandbox.localhost:{proc.port()}/bytes?n={GIB}",
    )
    assert int(res.stdout) == GIB
    assert proc.peak_rss_kib() - before < FLAT_KIB


async def test_gigabyte_upload_streams_in_flat_memory(big, tmp_path):
    """1 GiB from curl to the sandbox; the sandbox counts every byte; the edge's peak RSS barely moves."""
    backend, proc = big
    src = tmp_path / "gig"
    with open(src, "wb") as fh:
        fh.truncate(GIB)  # sparse: reading it costs curl nothing
    before = proc.peak_rss_kib()
    res = await curl(
        "-T", str(src), "-H", "Expect:", f"http://{backend.port}-bulk.sandbox.localhost:{proc.port()}/upload"
    )
    os.unlink(src)
    assert b'"body_len": 1073741824' in res.stdout
    assert proc.peak_rss_kib() - before < FLAT_KIB
