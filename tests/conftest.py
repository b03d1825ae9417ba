"""Shared fixtures: one private redis-server per session, a flushed database per test."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
import redis
import redis.asyncio

from genqueue.local_redis import LocalRedis
from genqueue.producer.settings import Settings


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


# --- workers in-process, driving the simulator through httpx.ASGITransport ----------------

import asyncio  # noqa: E402
import dataclasses  # noqa: E402
from collections.abc import Awaitable, Callable  # noqa: E402
from typing import Any  # noqa: E402

import httpx  # noqa: E402

from genqueue.producer.client import AsyncClient  # noqa: E402
from genqueue.producer.scripts import ScriptCall, call  # noqa: E402
from genqueue.simulator import SimConfig, create_app  # noqa: E402
from genqueue.worker.app import build_side_worker, build_worker, stop_worker  # noqa: E402
from genqueue.worker.config import WorkerConfig  # noqa: E402
from genqueue.worker.ratelimit import RateLimit  # noqa: E402

#: One time scale for simulator and worker in fast tests: a 150 s video takes 0.15 s.
FAST_SCALE = 0.001


def begin_submit_keys(settings: Settings) -> tuple[str, ...]:
    """The extra KEYS of ``begin_submit``: the pause hash and an unused rate limit's keys
    (called with the no-limit arguments ``0, 0`` last)."""
    keys = settings.keys
    return (keys.pause, keys.rate_limit("none"), keys.rate_turns("none"))


def begin_submit_call(
    settings: Settings, rid: str, *, limit: RateLimit | None = None
) -> ScriptCall:
    """``begin_submit`` of timer step 0 as a worker sends it (no cap, a 60 s lease, owner
    ``w``, policy ``resubmit``), with ``limit`` applied or no rate limit."""
    keys, args = (limit.keys, limit.args) if limit else (begin_submit_keys(settings)[1:], (0, 0))
    return call(
        settings, "begin_submit", rid, "0", 0, 60_000, "w", "resubmit", 10, *args,
        extra_keys=(settings.keys.pause, *keys),
    )  # fmt: skip


def submitted_keys(settings: Settings) -> tuple[str, ...]:
    """The extra KEYS of ``submitted``: the create failure streak."""
    return (settings.keys.pause_streak,)


def worker_config(settings: Settings, **overrides: Any) -> WorkerConfig:
    """A worker config for tests: fast schedule, tiny arq poll delay, no jitter."""
    base = WorkerConfig(
        settings=settings,
        upstream_url="http://sim",
        api_key="test-key",
        time_scale=FAST_SCALE,
        poll_delay_s=0.005,
        poll_jitter=0.0,
        reconcile_interval_s=1,
    )
    return dataclasses.replace(base, **overrides)


@pytest.fixture
def sim_app() -> Any:
    """An in-process simulator (no failures, fast, seeded)."""
    return create_app(SimConfig(time_scale=FAST_SCALE, seed=7, failure_share=0.0))


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[AsyncClient]:
    """An async producer client on the test database."""
    async with AsyncClient(settings) as c:
        yield c


StartWorker = Callable[..., Awaitable[Any]]


@pytest.fixture
async def start_worker(settings: Settings, sim_app: Any) -> AsyncIterator[StartWorker]:
    """Start in-process arq workers: ``await start_worker(transport=..., **config overrides)``."""
    running: list[tuple[Any, asyncio.Task[None]]] = []

    async def start(
        transport: httpx.AsyncBaseTransport | None = None,
        side_transport: httpx.AsyncBaseTransport | None = None,
        with_side: bool = False,
        resolver: Any = None,
        **overrides: Any,
    ) -> Any:
        cfg = worker_config(overrides.pop("settings", settings), **overrides)
        kw: dict[str, Any] = {
            "transport": transport or httpx.ASGITransport(app=sim_app),
            "side_transport": side_transport,
            "handle_signals": False,
            "resolver": resolver,
        }
        workers = [build_worker(cfg, **kw)]
        if with_side:
            workers.append(build_side_worker(cfg, **kw))
        for w in workers:
            running.append((w, asyncio.create_task(w.async_run())))
        return workers[0]

    yield start
    for w, task in running:
        await stop_worker(w, grace_s=2.0)
        await asyncio.gather(task, return_exceptions=True)
