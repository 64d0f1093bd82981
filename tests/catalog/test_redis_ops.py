"""The writes the CLI and the admin API share, on a real Redis catalog: every test of test_ops.py,
run again with the Redis store, so both stores keep the same rules and errors."""

from __future__ import annotations

import pytest

from edge.catalog.redis import RedisStore
from tests.catalog.test_ops import *  # noqa: F403 (the same tests, collected again here)
from tests.redis_server import redis_server  # noqa: F401 (a fixture)


@pytest.fixture
def store(redis_server):  # noqa: F811
    s = RedisStore(redis_server.url)
    yield s
    s.close()
