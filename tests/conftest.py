"""Shared fixtures: one private redis-server per session, a flushed database per test."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING

import pytest
import redis
import redis.asyncio

from genqueue.local_redis import LocalRedis
from genqueue.producer.settings import Settings

if TYPE_CHECKING:
    from tests.test_transitions import Scripts


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
from typing import Any, Literal  # noqa: E402

import httpx  # noqa: E402

from genqueue.producer import envconfig  # noqa: E402
from genqueue.producer.client import AsyncClient  # noqa: E402
from genqueue.producer.contracts import (  # noqa: E402
    NO_LIMIT_US,
    BeginSubmit,
    Finish,
    PollUpdate,
    SubmitRelease,
    Submitted,
)
from genqueue.producer.keys import Field  # noqa: E402
from genqueue.producer.replies import BeginSubmitReply  # noqa: E402
from genqueue.producer.scripts import ScriptCall  # noqa: E402
from genqueue.simulator import SimConfig, create_app  # noqa: E402
from genqueue.worker.app import build_side_worker, build_worker, stop_worker  # noqa: E402
from genqueue.worker.config import ScheduleSettings, WorkerConfig  # noqa: E402
from genqueue.worker.ratelimit import RateLimit  # noqa: E402

#: One time scale for simulator and worker in fast tests: a 150 s video takes 0.15 s.
FAST_SCALE = 0.001


@pytest.fixture
async def s(settings: Settings, aredis: redis.asyncio.Redis) -> Scripts:
    """The transition scripts as a worker calls them (``tests/test_transitions.Scripts``)."""
    from tests.test_transitions import Scripts

    return Scripts(settings, aredis)


@pytest.fixture
def conn(settings: Settings) -> Iterator[redis.Redis]:
    """A synchronous client on the test's Redis."""
    client = redis.Redis.from_url(settings.redis_url, decode_responses=True)
    yield client
    client.close()


def begin_submit(
    settings: Settings,
    rid: str,
    *,
    seq: int = 0,
    cap: int = 0,
    lease_ms: int = 60_000,
    owner: str = "w",
    policy: str = "resubmit",
    limit: RateLimit | None = None,
) -> BeginSubmit:
    """``begin_submit`` of timer step ``seq`` as a worker sends it (by default no cap, a 60 s
    lease, owner ``w``, policy ``resubmit``), with ``limit`` applied or no rate limit."""
    keys = settings.keys
    return BeginSubmit(
        request_id=rid,
        expected_seq=seq,
        max_inflight=cap,
        lease_ms=lease_ms,
        lease_owner=owner,
        ambiguous_policy=policy,
        limit_keys=limit.keys if limit else (keys.rate_limit("none"), keys.rate_turns("none")),
        limit_us=limit.args if limit else NO_LIMIT_US,
    )


def begin_submit_call(
    settings: Settings, rid: str, *, limit: RateLimit | None = None
) -> ScriptCall[BeginSubmitReply]:
    """``begin_submit`` of timer step 0 as a worker sends it (see ``begin_submit``)."""
    return begin_submit(settings, rid, limit=limit).call(settings)


def submitted(
    rid: str,
    submit_seq: int,
    upstream_id: str = "up-1",
    status: str = "queued",
    *,
    first_poll_delay_ms: int = 100,
    tracking_poll_delay_ms: int = 1000,
) -> Submitted:
    """``submitted`` as the worker sends it when create answered (created at 1.5)."""
    return Submitted(
        request_id=rid,
        submit_seq=submit_seq,
        upstream_id=upstream_id,
        upstream_status=status,
        upstream_created_at=1.5,
        upstream_started_at=None,
        first_poll_delay_ms=first_poll_delay_ms,
        tracking_limit_ms=3_600_000,
        tracking_poll_delay_ms=tracking_poll_delay_ms,
    )


def submit_release(
    rid: str, submit_seq: int, mode: Literal["fail", "retry"], delay_ms: int, error: str
) -> SubmitRelease:
    """``submit_release`` of an unambiguous failed create (policy ``resubmit``)."""
    return SubmitRelease(
        request_id=rid,
        submit_seq=submit_seq,
        mode=mode,
        ambiguous=False,
        retry_delay_ms=delay_ms,
        error=error,
        ambiguous_policy="resubmit",
    )


def poll_update(
    rid: str,
    seq: int,
    status: str,
    error: str = "",
    *,
    next_delay_ms: int = 100,
    tracking_poll_delay_ms: int = 1000,
) -> PollUpdate:
    """``poll_update`` of a check at timer step ``seq`` that saw ``status`` (or ``error``)."""
    return PollUpdate(
        request_id=rid,
        expected_seq=seq,
        upstream_status=status,
        upstream_started_at=None,
        next_delay_ms=next_delay_ms,
        tracking_poll_delay_ms=tracking_poll_delay_ms,
        tracking_limit_ms=3_600_000,
        poll_error=error,
    )


def finish(rid: str, seq: int, outcome: str, cost: int | None) -> Finish:
    """``finish`` at timer step ``seq`` with a video URL and upstream times 1.0, 2.0, 3.0."""
    return Finish(
        request_id=rid,
        expected_seq=seq,
        outcome=outcome,
        cost_micro_usd=cost,
        video_url="https://v/1.mp4",
        upstream_created_at=1.0,
        upstream_started_at=2.0,
        upstream_done_at=3.0,
    )


def bare_finish(rid: str, seq: int, outcome: str, cost: int | None) -> Finish:
    """``finish`` with no video URL and no upstream times."""
    return Finish(request_id=rid, expected_seq=seq, outcome=outcome, cost_micro_usd=cost)


def happy_step(settings: Settings, rid: str, rec: dict[str, str], cost: int) -> Any:
    """The builder of a request's next step on the happy path (its create answered, its
    submit step taken, its job completed at ``cost``), or None when it has no step."""
    seq = int(rec.get(Field.SEQ, "0"))
    if rec[Field.STATUS] == "submitting":
        ss = int(rec.get(Field.SUBMIT_SEQ, "0"))
        return submitted(rid, ss, f"up-{rid[:6]}", "queued", first_poll_delay_ms=10)
    if rec.get(Field.TIMER) == "submit":
        return begin_submit(settings, rid, seq=seq)
    if rec.get(Field.TIMER) == "poll":
        return bare_finish(rid, seq, "completed", cost)
    return None


def worker_config(settings: Settings, **overrides: Any) -> WorkerConfig:
    """A worker config for tests: fast schedule, tiny arq poll delay, no jitter.

    ``overrides`` are setting names (``poll_jitter``, ``webhook_retry_s``: the variable without
    ``GENQUEUE_``, wherever the setting is grouped) or top-level attributes (``settings``)."""
    base = WorkerConfig(
        settings=settings,
        upstream_url="http://sim",
        api_key="test-key",
        time_scale=FAST_SCALE,
        poll_delay_s=0.005,
        reconcile_interval_s=1,
        schedule=ScheduleSettings(poll_jitter=0.0),
    )
    names = envconfig.by_name(WorkerConfig)
    attrs = {k: v for k, v in overrides.items() if k not in names}
    return envconfig.replace_settings(
        dataclasses.replace(base, **attrs), {k: v for k, v in overrides.items() if k in names}
    )


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
