"""The schedule learns only from what the upstream's spec reports (status, ``created_at``,
``completed_at``) and what genqueue's own checks saw, on Redis' clock with an estimated offset."""

from __future__ import annotations

import asyncio
import statistics
import time
from typing import Any

import httpx
import pytest
import redis.asyncio

from genqueue.producer.client import AsyncClient
from genqueue.producer.keys import Field
from genqueue.producer.settings import Settings
from genqueue.simulator import SimConfig, create_app
from genqueue.worker import tasks
from genqueue.worker.runtime import Runtime
from genqueue.worker.tasks import _learn, _poll_wait_s
from genqueue.worker.upstream import UpstreamClient, UpstreamJob, parse_job
from tests.conftest import StartWorker, worker_config

MODEL = "openai/sora-2"


def _runtime(settings: Settings, aredis: redis.asyncio.Redis, **overrides: Any) -> Runtime:
    return Runtime(
        config=worker_config(
            settings,
            **{
                "time_scale": 1.0,
                "poll_jitter": 0.0,
                "adaptive_generation_min_samples": 10,
                **overrides,
            },
        ),
        redis=aredis,
        upstream=UpstreamClient(base_url="http://sim", api_key="k"),
    )


def _ms(at_s: float) -> str:
    return str(int(at_s * 1000))


async def test_extra_upstream_fields_never_change_the_schedule(
    settings: Settings, aredis: redis.asyncio.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A job that also carries ``started_at`` / ``claimed_at`` (or any field beyond the spec)
    gets exactly the delays and teaches exactly the durations the same job without them does."""
    rt = _runtime(settings, aredis)
    for d in range(100, 160):
        await rt.durations.record(MODEL, 0.0, float(d), generation_s=d - 20.0)
    now = time.time()

    async def frozen(_: Runtime) -> float:
        return now

    monkeypatch.setattr(tasks, "_redis_now_s", frozen)  # the same instant for both jobs
    spec = {"id": "v1", "model": MODEL, "object": "video", "created_at": int(now - 70)}
    extra = {"started_at": int(now - 5), "claimed_at": int(now - 6), "queue_position": 3}
    raws = [
        {Field.MODEL: MODEL},
        {Field.MODEL: MODEL, Field.SEEN_QUEUED_AT_MS: _ms(now - 20)},
        {Field.MODEL: MODEL, Field.SUBMITTED_AT_MS: _ms(now - 69.5)},
    ]
    for status in ("queued", "in_progress"):
        plain = parse_job({**spec, "status": status})
        more = parse_job({**spec, **extra, "status": status})
        assert more.started_at is not None  # the parser still reads it (legacy shape)
        for raw in raws:
            for polls in (0, 1, 5):
                a = await _poll_wait_s(rt, raw, plain, polls, None, None)
                b = await _poll_wait_s(rt, raw, more, polls, None, None)
                assert a == b, (status, raw, polls)
    done = {**spec, "status": "completed", "completed_at": int(now)}
    raw = {
        Field.MODEL: MODEL,
        Field.SEEN_QUEUED_AT_MS: _ms(now - 40),
        Field.SEEN_STARTED_BY_MS: _ms(now - 35),
    }
    learned = []
    recent = [
        rt.keys.durations(MODEL, k) for k in ("recent_total_by_done", "recent_generation_by_done")
    ]
    offsets = rt.keys.durations(MODEL, "offset")
    for payload in (done, {**done, **extra}):
        await aredis.delete(*recent, offsets)
        await _learn(rt, raw, parse_job(payload), now + 1.0)
        learned.append(
            [*[await aredis.zrange(k, 0, -1, withscores=True) for k in recent]]
            + [await aredis.lrange(offsets, 0, -1)]
        )
    assert learned[0] == learned[1] and all(learned[0])
    await rt.upstream.aclose()


async def test_the_upstream_clock_offset_is_estimated_not_assumed_zero(
    settings: Settings, aredis: redis.asyncio.Redis
) -> None:
    """An upstream whose clock runs an hour behind Redis' gets the same schedule as one on
    the same clock: its timestamps are moved by the offset the completions bound."""
    rt = _runtime(settings, aredis, adaptive_quantile=0.5, adaptive_confidence=0.5)
    skew = -3600.0  # upstream clock minus Redis'
    for d in range(100, 121):
        await rt.durations.record(MODEL, 0.0, float(d), offset_bound_s=-skew + 0.2 + d / 100)
    learned = await rt.durations.get(MODEL)
    assert learned is not None and abs(learned.offset_s - (-skew + 0.2 + 1.0)) < 1e-6
    now = time.time()
    raw = {Field.MODEL: MODEL, Field.SUBMITTED_AT_MS: _ms(now - 20)}

    def job(clock_s: float) -> UpstreamJob:
        return UpstreamJob(
            id="u", status="in_progress", raw_status="in_progress", created_at=now - 20 + clock_s
        )

    same = await _poll_wait_s(rt, raw, job(0.0), 1, None)
    skewed = await _poll_wait_s(rt, raw, job(skew), 1, None)
    assert abs(same - skewed) < 0.01, (same, skewed)
    assert 109 - 20 + 5 - 0.5 < same <= 110 - 20 + 5 + 0.1  # q50 of 100..120 + floor
    await rt.upstream.aclose()


async def test_a_long_upstream_queue_is_learned_from_the_checks(
    client: AsyncClient, start_worker: StartWorker, settings: Settings, aredis: redis.asyncio.Redis
) -> None:
    """With an upstream that reports ``queued``, the checks that saw a job queued and then in
    progress bracket its start: the record keeps both (Redis ms) and the model learns the
    generation time without the queue wait (here ~1.2 s of ~1.8 s in all), from the spec's
    timestamps only (the simulator sends no ``started_at``)."""
    scale = 0.01
    app = create_app(
        SimConfig(
            time_scale=scale, seed=3, failure_share=0.0, duration_median_s=120,
            duration_sigma=0.1, queue_median_s=60, queue_sigma=0.1,
        )
    )  # fmt: skip
    await start_worker(
        transport=httpx.ASGITransport(app=app),
        time_scale=scale,
        poll_schedule="fixed",
        first_poll_s=20.0,
        poll_floor_s=5.0,
        poll_factor=1.0,
    )
    ids = [await client.submit({"model": MODEL, "prompt": f"p{i}"}) for i in range(12)]
    views = await asyncio.gather(*(client.wait(i, 60) for i in ids))
    assert {v.status for v in views} == {"completed"}
    rec = await aredis.hgetall(settings.keys.record(ids[0]))
    queued_ms, started_ms = int(rec[Field.SEEN_QUEUED_AT_MS]), int(rec[Field.SEEN_STARTED_BY_MS])
    truth = {j["id"]: j for j in app.state.sim.jobs()}[rec[Field.UPSTREAM_ID]]
    # The bracket holds the true start (the simulator's ground truth, same machine clock as
    # Redis); each bound is read just after its check answered, so within a check's latency.
    assert queued_ms < started_ms
    assert queued_ms / 1000 - 0.05 <= truth["started_at"] <= started_ms / 1000, (rec, truth)
    total = [float(x) for x in await aredis.lrange(settings.keys.durations(MODEL, "total"), 0, -1)]
    gen = [
        float(x) for x in await aredis.lrange(settings.keys.durations(MODEL, "generation"), 0, -1)
    ]
    assert len(gen) >= 10, gen
    assert 1.05 < statistics.median(gen) < 1.35, gen
    assert statistics.median(total) > statistics.median(gen) + 0.45, (total, gen)
    assert Field.UPSTREAM_STARTED_AT not in rec  # nothing but the checks told it


async def _delays(
    rt: Runtime, monkeypatch: pytest.MonkeyPatch, now: float, created_ago_s: float
) -> list[float]:
    """The delays a job created ``created_ago_s`` before ``now`` gets: freshly created, then
    checked (``polls`` 1) and seen ``queued`` now, once seen ``queued`` 10 s ago and
    ``in_progress`` now, and ``in_progress`` now (an upstream that never reports ``queued``)."""

    async def frozen(_: Runtime) -> float:
        return now

    monkeypatch.setattr(tasks, "_redis_now_s", frozen)
    spec = {"id": "v1", "model": MODEL, "object": "video", "created_at": now - created_ago_s}
    plain = {Field.MODEL: MODEL}
    was_queued = {Field.MODEL: MODEL, Field.SEEN_QUEUED_AT_MS: _ms(now - 10)}
    return [
        await _poll_wait_s(rt, plain, parse_job({**spec, "status": "queued"}), 0, None),
        await _poll_wait_s(rt, plain, parse_job({**spec, "status": "queued"}), 1, None),
        await _poll_wait_s(rt, was_queued, parse_job({**spec, "status": "in_progress"}), 2, None),
        await _poll_wait_s(rt, plain, parse_job({**spec, "status": "in_progress"}), 1, None),
    ]


async def _learn_long_queue(rt: Runtime, generations: bool) -> None:
    """60 completions: a queue wait spread over 20-120 s before a 100-159 s generation."""
    for i in range(60):
        queue, gen = 20.0 + (i * 37) % 100, 100.0 + i
        await rt.durations.record(
            MODEL, 0.0, queue + gen, generation_s=gen if generations else None
        )


async def test_a_long_queue_wait_is_probed(
    settings: Settings, aredis: redis.asyncio.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With generation times learned and a queue wait long enough to pay, a job is checked
    while it waits (from ``total.lo - generation.lo`` after creation, then one step after
    the last check that saw it ``queued``), earlier than the window from creation; once seen
    ``in_progress`` it gets the window it had without probes."""
    now = time.time()
    on, off = _runtime(settings, aredis), _runtime(settings, aredis, adaptive_probes=False)
    await _learn_long_queue(on, generations=True)
    learned = await on.durations.get(MODEL)
    assert learned is not None and len(learned.generation) == 60
    with_probes = await _delays(on, monkeypatch, now, 70.0)
    without = await _delays(off, monkeypatch, now, 70.0)
    assert with_probes[0] < without[0], (with_probes, without)
    assert with_probes[1] < without[1], (with_probes, without)
    # the next probe: one step after this check saw it queued, the same step whatever the age
    assert with_probes[1] == pytest.approx((await _delays(on, monkeypatch, now, 80.0))[1])
    assert with_probes[2:] == without[2:]
    await on.upstream.aclose()
    await off.upstream.aclose()


async def test_no_probes_where_no_start_was_ever_bracketed(
    settings: Settings, aredis: redis.asyncio.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An upstream that never reports ``queued`` (no generation time is ever learned): the
    delays are exactly those without probes, whatever the queue wait's length."""
    now = time.time()
    on, off = _runtime(settings, aredis), _runtime(settings, aredis, adaptive_probes=False)
    await _learn_long_queue(on, generations=False)
    for age in (0.0, 30.0, 70.0, 150.0):
        assert await _delays(on, monkeypatch, now, age) == await _delays(off, monkeypatch, now, age)
    await on.upstream.aclose()
    await off.upstream.aclose()


async def test_few_generation_times_probe_every_job_to_learn_them(
    settings: Settings, aredis: redis.asyncio.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Seen ``queued`` before but fewer than ``adaptive_generation_min_samples`` starts
    bracketed: every job is checked every 1.5 intervals from creation until seen in progress
    (a bracket ``observed.generation_s`` accepts), then as without probes."""
    now = time.time()
    rt = _runtime(settings, aredis, poll_floor_s=4.0, adaptive_generation_min_samples=100)
    await _learn_long_queue(rt, generations=True)
    fresh, queued, started, _ = await _delays(rt, monkeypatch, now, 0.0)
    assert fresh == pytest.approx(6.0)
    assert queued == pytest.approx(6.0)
    off = _runtime(settings, aredis, poll_floor_s=4.0, adaptive_probes=False)
    assert started == (await _delays(off, monkeypatch, now, 0.0))[2]
    await rt.upstream.aclose()
    await off.upstream.aclose()
