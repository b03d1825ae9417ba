"""Shared fixtures: one private redis-server per session, a flushed database per test."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
import redis
import redis.asyncio

from genqueue.local_redis import LocalRedis
from producer.settings import Settings


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """A Redis for this test session: our own server on a free port (never the shared one)."""
    external = os.environ.get("GENQUEUE_TEST_REDIS_URL")
    if external:
        yield external
        return
    server = LocalRedis(appendfsync="everysec")
    server.start()
    try:
        yield server.url
    finally:
        server.close()


@pytest.fixture
def settings(redis_url: str) -> Iterator[Settings]:
    """Settings on a flushed database with a unique key prefix."""
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    client.close()
    yield Settings(redis_url=redis_url, key_prefix=f"gqt-{uuid.uuid4().hex[:8]}")


@pytest.fixture
async def aredis(settings: Settings) -> AsyncIterator[redis.asyncio.Redis]:
    """An asyncio client (decoded strings) on the test database."""
    client = redis.asyncio.Redis.from_url(settings.redis_url, decode_responses=True)
    yield client
    await client.aclose()
