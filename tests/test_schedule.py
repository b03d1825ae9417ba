"""The model-aware poll schedule: learned durations move the first check near the finish."""

from __future__ import annotations

import asyncio
import statistics
import time
from typing import Any

import httpx
import pytest
import redis.asyncio

from genqueue.producer.client import AsyncClient
from genqueue.producer.settings import Settings
from genqueue.producer.stats import redis_time_ms
from genqueue.simulator import SimConfig, create_app
from genqueue.worker.app import stop_worker
from genqueue.worker.runtime import Runtime
from genqueue.worker.tasks import RedisInstant, _poll_wait_s
from genqueue.worker.upstream import UpstreamClient, UpstreamJob
from tests.conftest import StartWorker, worker_config

MODEL = "openai/sora-2"
RAW = {"model": MODEL}


def _ms(at_s: float) -> str:
    return str(int(at_s * 1000))


async def test_first_check_aims_at_the_learned_quantile(
    settings: Settings, aredis: redis.asyncio.Redis
) -> None:
    """With enough completions, the first check waits until created + the chosen quantile of
    recent durations + one floor; once a check saw the job queued, until then + the quantile
    of observed generation times + one floor."""
    rt = Runtime(
        config=worker_config(
            settings,
            poll_jitter=0.0,
            adaptive_quantile=0.5,
            adaptive_confidence=0.5,
            adaptive_generation_min_samples=10,
        ),
        redis=aredis,
        upstream=UpstreamClient(base_url="http://sim", api_key="k"),
    )
    for d in range(100, 121):  # total 100..120 s, generation 90..110 s
        await rt.durations.record(MODEL, 0.0, float(d), generation_s=d - 10.0)
    now = time.time()
    created = UpstreamJob(id="u", status="queued", raw_status="queued", created_at=now)
    floor = rt.config.scaled(rt.config.schedule.poll_floor_s)
    wait = await _poll_wait_s(rt, RAW, created, 0, None)
    assert 109 + floor < wait <= 110 + floor
    # Created 50 s ago, seen queued 30 s ago, in progress now: it ends ~100 s after the start.
    started = UpstreamJob(
        id="u", status="in_progress", raw_status="in_progress", created_at=now - 50
    )
    seen_queued = {**RAW, "seen_queued_at_ms": _ms(now - 30)}
    assert 69 + floor < await _poll_wait_s(rt, seen_queued, started, 3, None) <= 70 + floor
    unknown = await _poll_wait_s(rt, {"model": "other/model"}, created, 0, None)
    assert unknown == rt.config.scaled(rt.config.schedule.first_poll_s)
    await rt.upstream.aclose()


async def test_few_completions_move_the_first_check_earlier(
    settings: Settings, aredis: redis.asyncio.Redis
) -> None:
    """With the default confidence the first check sits at a lower confidence bound of the
    quantile: earlier for a model with 20 completions than for one with 2,000 of the same
    spread, and close to the plain quantile for the 2,000."""
    rt = Runtime(
        config=worker_config(settings, poll_jitter=0.0, adaptive_quantile=0.1),
        redis=aredis,
        upstream=UpstreamClient(base_url="http://sim", api_key="k"),
    )
    assert rt.config.schedule.adaptive_confidence == 0.9  # the default
    few, many = "few/model", "many/model"
    for k in range(20):  # totals spread evenly over 100..200 s
        await rt.durations.record(few, 0.0, 100.0 + 100.0 * k / 19)
    for k in range(2000):
        await rt.durations.record(many, 0.0, 100.0 + 100.0 * k / 1999)
    floor = rt.config.scaled(rt.config.schedule.poll_floor_s)
    created = UpstreamJob(id="u", status="queued", raw_status="queued", created_at=time.time())
    first_few = await _poll_wait_s(rt, {"model": few}, created, 0, None) - floor
    first_many = await _poll_wait_s(rt, {"model": many}, created, 0, None) - floor
    # The plain q10 of both is ~110 s; 20 samples give a bound near the minimum.
    assert 100.0 <= first_few < 104.0, first_few
    assert 107.5 < first_many < 110.0, first_many
    await rt.upstream.aclose()


async def test_checks_inside_the_learned_window_come_every_floor(
    settings: Settings, aredis: redis.asyncio.Redis
) -> None:
    """Between the low and the high quantile of learned durations, each check is due one floor
    after the last was due, jitter on; after the window, delays grow (with jitter)."""
    rt = Runtime(
        config=worker_config(
            settings,
            time_scale=1.0,
            poll_jitter=0.2,
            adaptive_quantile=0.1,
            adaptive_confidence=0.5,
            adaptive_dense_until_quantile=0.9,
            adaptive_generation_min_samples=10,
        ),
        redis=aredis,
        upstream=UpstreamClient(base_url="http://sim", api_key="k"),
    )
    for d in range(100, 201):  # generation 90..190 s: q10 = 100, q90 = 180
        await rt.durations.record(MODEL, 0.0, float(d), generation_s=d - 10.0)
    floor = rt.config.scaled(rt.config.schedule.poll_floor_s)
    raw: dict[str, str] = {}

    def started(ago_s: float) -> UpstreamJob:
        """A job created 30 s before it was seen queued, and in progress right after."""
        now = time.time()
        raw.update(
            model=MODEL, seen_queued_at_ms=_ms(now - ago_s), seen_started_by_ms=_ms(now - ago_s)
        )
        return UpstreamJob(
            id="u", status="in_progress", raw_status="in_progress", created_at=now - ago_s - 30
        )

    for ago in (101.0, 140.0, 178.0):
        assert await _poll_wait_s(rt, raw, started(ago), 4, None) == floor
    due_ms = int((time.time() - 1.0) * 1000)  # this check ran 1 s late: the next is on time
    late = await _poll_wait_s(rt, raw, started(120.0), 4, None, due_ms)
    assert late == pytest.approx(floor - 1, abs=0.05)
    due_ms = int((time.time() + 0.4) * 1000)  # ran 0.4 s early (timer slack): the grid holds
    early = await _poll_wait_s(rt, raw, started(120.0), 4, None, due_ms)
    assert early == pytest.approx(floor + 0.4, abs=0.05)
    late = [await _poll_wait_s(rt, raw, started(210.0), 9, None) for _ in range(20)]
    assert all(0.8 * 15 <= d <= 1.2 * 15 for d in late) and len(set(late)) > 1
    cap = rt.config.scaled(rt.config.schedule.poll_cap_s)
    for _ in range(20):
        assert await _poll_wait_s(rt, raw, started(900.0), 30, None) <= cap
    assert await _poll_wait_s(rt, raw, started(120.0), 4, retry_after_s=12.0) == 12.0
    await rt.upstream.aclose()


async def test_fixed_schedule_counts_an_early_check_from_its_due_time(
    settings: Settings, aredis: redis.asyncio.Redis
) -> None:
    """With the fixed schedule, a check run before its due time (within the timer slack)
    waits its backoff from that due time; one run on time or late waits it from now."""
    rt = Runtime(
        config=worker_config(
            settings, time_scale=1.0, poll_schedule="fixed", poll_jitter=0.0, poll_slack_s=0.5
        ),
        redis=aredis,
        upstream=UpstreamClient(base_url="http://sim", api_key="k"),
    )
    floor = rt.config.scaled(rt.config.schedule.poll_floor_s)
    now_ms = redis_time_ms(await aredis.time())
    clock = RedisInstant.of(now_ms)
    job = UpstreamJob(id="u", status="in_progress", raw_status="in_progress", created_at=0.0)
    early = await _poll_wait_s(rt, RAW, job, 1, None, now_ms + 300, clock)
    assert early == pytest.approx(floor + 0.3, abs=0.05)
    # Never more than the slack, and nothing for a check on time or late.
    assert await _poll_wait_s(rt, RAW, job, 1, None, now_ms + 3_000, clock) == pytest.approx(
        floor + 0.5, abs=0.05
    )
    assert await _poll_wait_s(rt, RAW, job, 1, None, now_ms - 800, clock) == floor
    await rt.upstream.aclose()


async def test_adaptive_schedule_needs_fewer_polls_than_fixed(
    client: AsyncClient, start_worker: StartWorker, settings: Settings
) -> None:
    """Once a model's durations are learned, its videos need fewer checks than with the
    fixed schedule on the same workload (without the dense window, which spends checks on
    a lag bound)."""
    scale = 0.01
    app = create_app(
        SimConfig(
            time_scale=scale, seed=5, failure_share=0.0, duration_median_s=120,
            duration_sigma=0.2,
        )
    )  # fmt: skip
    common: dict[str, Any] = {"time_scale": scale, "first_poll_s": 20.0, "poll_jitter": 0.0}
    transport = httpx.ASGITransport(app=app)

    async def batch(n: int) -> float:
        ids = [await client.submit({"model": MODEL, "prompt": f"p{i}"}) for i in range(n)]
        views = await asyncio.gather(*(client.wait(i, 60) for i in ids))
        assert {v.status for v in views} == {"completed"}
        return statistics.mean(v.polls for v in views)

    first = await start_worker(transport=transport, poll_schedule="fixed", **common)
    fixed = await batch(30)  # also teaches the durations
    await stop_worker(first)
    await start_worker(
        transport=transport,
        poll_schedule="adaptive",
        adaptive_quantile=0.1,
        adaptive_dense_until_quantile=0.0,
        **common,
    )
    adaptive = await batch(30)
    print(f"polls per video: fixed {fixed:.2f}, adaptive {adaptive:.2f}")
    assert adaptive < fixed, (adaptive, fixed)


async def test_first_checks_of_a_batch_spread_over_one_interval(
    settings: Settings, aredis: redis.asyncio.Redis
) -> None:
    """First checks of videos created at once are spread over one floor interval around
    their planned time, not by a share of the (long) wait."""
    rt = Runtime(
        config=worker_config(
            settings,
            time_scale=1.0,
            poll_jitter=0.1,
            adaptive_quantile=0.5,
            adaptive_confidence=0.5,
        ),
        redis=aredis,
        upstream=UpstreamClient(base_url="http://sim", api_key="k"),
    )
    for d in range(100, 121):
        await rt.durations.record(MODEL, 0.0, float(d))
    floor = rt.config.scaled(rt.config.schedule.poll_floor_s)
    created = UpstreamJob(id="u", status="queued", raw_status="queued", created_at=time.time())
    waits = [await _poll_wait_s(rt, RAW, created, 0, None) for _ in range(200)]
    planned = 110 + floor
    assert all(planned - floor / 2 - 0.1 <= w <= planned + floor / 2 for w in waits)
    assert max(waits) - min(waits) > floor / 2  # spread, not one instant
    await rt.upstream.aclose()
