"""The reconciler arms a batch's missing timers in one pipeline (``AsyncTimers.arm_many``)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio
from arq.constants import job_key_prefix, result_key_prefix

from genqueue.producer.client import AsyncClient
from genqueue.producer.keys import SUBMIT_TASK, Field
from genqueue.producer.settings import Settings
from genqueue.producer.timers import AsyncTimers, Timer
from genqueue.worker.reconciler import reconcile_once
from genqueue.worker.runtime import Runtime
from genqueue.worker.upstream import UpstreamClient
from tests.conftest import worker_config

MODEL = "minimax/video-01-director"


def req(i: int) -> dict[str, Any]:
    return {"model": MODEL, "prompt": f"a paper boat #{i}"}


async def redis_now_ms(r: redis.asyncio.Redis) -> int:
    sec, usec = await r.time()
    return int(sec) * 1000 + int(usec) // 1000


async def command_calls(r: redis.asyncio.Redis) -> dict[str, int]:
    """Calls per command since the last ``CONFIG RESETSTAT``, as Redis itself counts them."""
    stats = await r.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()}


@pytest.fixture
async def runtime(settings: Settings, aredis: redis.asyncio.Redis) -> AsyncIterator[Runtime]:
    """A worker runtime with no grace and batches of 7 records (nothing upstream is called)."""
    rt = Runtime(
        config=worker_config(settings, reconcile_grace_s=0.0, reconcile_batch=7),
        redis=aredis,
        upstream=UpstreamClient(base_url="http://sim", api_key="k"),
    )
    yield rt
    await rt.upstream.aclose()
    await rt.webhook_http.aclose()
    await rt.download_http.aclose()


async def test_arm_many_arms_missing_and_skips_armed(
    settings: Settings, aredis: redis.asyncio.Redis
) -> None:
    """arm_many arms each missing timer at its run time and returns False, changing nothing,
    for a timer whose job or result key already exists."""
    queue = settings.keys.queue
    timers = AsyncTimers(aredis, queue)
    now = await redis_now_ms(aredis)
    armed = Timer(SUBMIT_TASK, "r-armed", 0)
    done = Timer(SUBMIT_TASK, "r-done", 0)
    fresh = [Timer(SUBMIT_TASK, f"r-{i}", i) for i in range(3)]
    assert await timers.arm(armed, at_ms=now + 5_000)
    await aredis.set(result_key_prefix + done.job_id, "x")

    items = [(armed, now + 90_000), (done, now + 90_000)]
    items += [(t, now + 10_000 * (k + 1)) for k, t in enumerate(fresh)]
    assert await timers.arm_many(items) == [False, False, True, True, True]

    assert await aredis.zscore(queue, armed.job_id) == now + 5_000
    assert await aredis.zscore(queue, done.job_id) is None
    assert not await aredis.exists(job_key_prefix + done.job_id)
    for k, t in enumerate(fresh):
        assert await aredis.zscore(queue, t.job_id) == now + 10_000 * (k + 1)
        assert await aredis.pttl(job_key_prefix + t.job_id) > 0
    assert await timers.arm_many([(t, now) for t in fresh]) == [False] * 3
    assert await timers.arm_many([]) == []


async def test_reconcile_rearms_exactly_the_missing_timers_in_batches(
    client: AsyncClient, settings: Settings, aredis: redis.asyncio.Redis, runtime: Runtime
) -> None:
    """A pass over 23 overdue records in batches of 7 re-arms exactly the 20 lost timers, each
    at its record's next_check_at_ms, with one arming pipeline per batch."""
    keys = settings.keys
    ids = [await client.submit(req(i)) for i in range(23)]
    lost, kept = ids[:20], ids[20:]
    timer = {i: Timer(SUBMIT_TASK, i, 0) for i in ids}
    kept_scores = {i: await aredis.zscore(keys.queue, timer[i].job_id) for i in kept}
    assert all(s is not None for s in kept_scores.values())
    now = await redis_now_ms(aredis)
    for k, i in enumerate(ids):
        # Overdue in the inflight index, next check later (and distinct) in the record.
        await aredis.zadd(keys.inflight, {i: now - 60_000 - k})
        await aredis.hset(keys.record(i), Field.NEXT_CHECK_AT_MS, str(now + 100_000 + k))
    for i in lost:
        await aredis.delete(job_key_prefix + timer[i].job_id)
        await aredis.zrem(keys.queue, timer[i].job_id)

    await aredis.config_resetstat()
    assert await reconcile_once(runtime) == 20
    calls = await command_calls(aredis)

    for i in lost:
        want = int(await aredis.hget(keys.record(i), Field.NEXT_CHECK_AT_MS) or 0)
        assert await aredis.zscore(keys.queue, timer[i].job_id) == want
        assert await aredis.exists(job_key_prefix + timer[i].job_id)
    for i in kept:
        assert await aredis.zscore(keys.queue, timer[i].job_id) == kept_scores[i]
    batches = -(-len(ids) // 7)
    assert calls["zrangebyscore"] == batches
    assert calls["evalsha"] == len(ids)
    assert calls["script|exists"] == batches  # one per arming pipeline
    assert await reconcile_once(runtime) == 0


async def test_arm_many_heals_after_script_flush(
    settings: Settings, aredis: redis.asyncio.Redis
) -> None:
    """arm_many reloads the arming script when Redis has lost it (SCRIPT FLUSH)."""
    timers = AsyncTimers(aredis, settings.keys.queue)
    now = await redis_now_ms(aredis)
    first = Timer(SUBMIT_TASK, "r-first", 0)
    assert await timers.arm_many([(first, now + 1_000)]) == [True]
    await aredis.script_flush()
    later = [Timer(SUBMIT_TASK, f"r-later-{i}", 0) for i in range(2)]
    got = await timers.arm_many([(first, now + 2_000)] + [(t, now + 3_000) for t in later])
    assert got == [False, True, True]
    for t in later:
        assert await aredis.zscore(settings.keys.queue, t.job_id) == now + 3_000


async def test_reconcile_pages_through_tied_scores(
    client: AsyncClient, settings: Settings, aredis: redis.asyncio.Redis, runtime: Runtime
) -> None:
    """Paging by score cursor re-arms every overdue record once, also when many share a score
    across page boundaries (batches of 7: 10 at one score, 5 at another, 4 alone)."""
    keys = settings.keys
    ids = [await client.submit(req(i)) for i in range(19)]
    now = await redis_now_ms(aredis)
    scores = [now - 90_000] * 10 + [now - 80_000] * 5 + [now - 70_000 + k for k in range(4)]
    for i, score in zip(ids, scores, strict=True):
        await aredis.zadd(keys.inflight, {i: score})
        await aredis.delete(job_key_prefix + Timer(SUBMIT_TASK, i, 0).job_id)
        await aredis.zrem(keys.queue, Timer(SUBMIT_TASK, i, 0).job_id)

    await aredis.config_resetstat()
    assert await reconcile_once(runtime) == 19
    for i in ids:
        assert await aredis.zscore(keys.queue, Timer(SUBMIT_TASK, i, 0).job_id) is not None
    assert (await command_calls(aredis))["evalsha"] == 19  # each armed once, none twice
