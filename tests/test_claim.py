"""The one-script look of ``worker/claim.py`` makes arq 0.28's checks, and ``TimerWorker``
runs, retires and releases jobs as arq's ``run_job``/``finish_job`` would."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio
from arq.connections import ArqRedis, RedisSettings, create_pool
from arq.constants import in_progress_key_prefix, job_key_prefix, retry_key_prefix
from arq.utils import timestamp_ms
from arq.worker import func

from genqueue.producer.scripts import source
from genqueue.worker.app import stop_worker
from genqueue.worker.claim import ENDED, ENDED_CRON, RELEASED, TimerWorker, claim_due_args

QUEUE = "t:queue"


def _args(
    now: int, want: int, look: int = 100, retire: tuple[tuple[str, str], ...] = ()
) -> list[Any]:
    return claim_due_args(
        now_ms=now,
        in_progress_ms=40_000,
        want=want,
        look=look,
        cron_keep_ms=60_000,
        retired=list(retire),
    )


async def _queue(r: redis.asyncio.Redis, job_id: str, score: int) -> None:
    await r.zadd(QUEUE, {job_id: score})
    await r.set(job_key_prefix + job_id, f"payload-{job_id}")


async def test_due_jobs_are_claimed_up_to_the_free_slots(aredis: redis.asyncio.Redis) -> None:
    """A look claims at most ``want`` due jobs, oldest first, each with its payload and try,
    sets their in-progress keys for the timeout; the next look skips them."""
    claim = aredis.register_script(source("claim_due"))
    now = timestamp_ms()
    for k in range(5):
        await _queue(aredis, f"poll:a:{k}", now - 100 + k)
    first = await claim(keys=[QUEUE], args=_args(now, want=3))
    assert first[0::4] == ["poll:a:0", "poll:a:1", "poll:a:2"]
    assert [int(float(s)) for s in first[1::4]] == [now - 100, now - 99, now - 98]
    assert first[2::4] == ["payload-poll:a:0", "payload-poll:a:1", "payload-poll:a:2"]
    assert first[3::4] == [1, 1, 1]
    assert 39_000 < await aredis.pttl(in_progress_key_prefix + "poll:a:0") <= 40_000
    assert await aredis.ttl(retry_key_prefix + "poll:a:0") > 88_000
    second = await claim(keys=[QUEUE], args=_args(now, want=5))
    assert second[0::4] == ["poll:a:3", "poll:a:4"]


async def test_a_job_not_due_or_running_elsewhere_is_not_claimed(
    aredis: redis.asyncio.Redis,
) -> None:
    """A job re-queued for later or with an in-progress key is left alone; a claimed job
    whose job key expired comes back without a payload; each try is counted."""
    claim = aredis.register_script(source("claim_due"))
    now = timestamp_ms()
    await _queue(aredis, "poll:later:1", now + 60_000)
    await _queue(aredis, "poll:busy:1", now - 10)
    await aredis.set(in_progress_key_prefix + "poll:busy:1", "1")
    await aredis.zadd(QUEUE, {"poll:expired:1": now - 5})
    await aredis.set(retry_key_prefix + "poll:expired:1", 2)
    reply = await claim(keys=[QUEUE], args=_args(now, want=10))
    assert reply == ["poll:expired:1", str(now - 5), None, 3]
    assert not await aredis.exists(in_progress_key_prefix + "poll:later:1")


async def test_a_look_reads_at_most_the_read_limit(aredis: redis.asyncio.Redis) -> None:
    """Behind ``look`` running jobs at the front of the queue nothing is claimed in one look
    (arq's ``queue_read_limit``)."""
    claim = aredis.register_script(source("claim_due"))
    now = timestamp_ms()
    for k in range(6):
        await _queue(aredis, f"poll:b:{k}", now - 100 + k)
        if k < 5:
            await aredis.set(in_progress_key_prefix + f"poll:b:{k}", "1")
    assert await claim(keys=[QUEUE], args=_args(now, want=1, look=5)) == []
    assert (await claim(keys=[QUEUE], args=_args(now, want=1, look=6)))[0] == "poll:b:5"


async def test_retirements_leave_keys_as_arq_finish_job_does(aredis: redis.asyncio.Redis) -> None:
    """Ended: its three keys deleted and out of the queue; released: only the in-progress key
    goes (it runs again); an ended cron job keeps its in-progress key for a minute."""
    claim = aredis.register_script(source("claim_due"))
    now = timestamp_ms()
    for job_id in ("poll:e:1", "poll:r:1", "cron:c:1"):
        await _queue(aredis, job_id, now - 10)
    await claim(keys=[QUEUE], args=_args(now, want=3))
    retire = (("poll:e:1", ENDED), ("poll:r:1", RELEASED), ("cron:c:1", ENDED_CRON))
    assert await claim(keys=[QUEUE], args=_args(now, want=0, retire=retire)) == []
    assert await aredis.zrange(QUEUE, 0, -1) == ["poll:r:1"]
    for prefix in (in_progress_key_prefix, job_key_prefix, retry_key_prefix):
        assert not await aredis.exists(prefix + "poll:e:1")
    assert not await aredis.exists(in_progress_key_prefix + "poll:r:1")
    assert await aredis.exists(job_key_prefix + "poll:r:1", retry_key_prefix + "poll:r:1") == 2
    assert 59_000 < await aredis.pttl(in_progress_key_prefix + "cron:c:1") <= 60_000
    assert not await aredis.exists(job_key_prefix + "cron:c:1", retry_key_prefix + "cron:c:1")
    again = await claim(keys=[QUEUE], args=_args(now, want=3))
    assert again[0::4] == ["poll:r:1"] and again[3::4] == [2]


# --- the worker ----------------------------------------------------------------------------


@pytest.fixture
async def arq_pool(redis_url: str) -> AsyncIterator[ArqRedis]:
    """arq's own client, to enqueue jobs as an arq producer does."""
    pool = await create_pool(RedisSettings.from_dsn(redis_url), default_queue_name=QUEUE)
    yield pool
    await pool.aclose()


def _worker(redis_url: str, functions: list[Any], **kw: Any) -> TimerWorker:
    return TimerWorker(
        functions=functions,
        queue_name=QUEUE,
        redis_settings=RedisSettings.from_dsn(redis_url),
        burst=True,
        poll_delay=0.01,
        keep_result=0,
        handle_signals=False,
        **kw,
    )


async def _arq_keys(r: redis.asyncio.Redis) -> list[str]:
    return sorted(await r.keys("arq:*"))


async def test_jobs_that_end_leave_nothing_behind(
    redis_url: str, aredis: redis.asyncio.Redis, arq_pool: ArqRedis
) -> None:
    """Every job runs once with arq's ctx; ended and failed ones (an exception, a timeout,
    an unknown function) leave no job, try or in-progress key and are out of the queue."""
    seen: list[tuple[str, int, int]] = []

    async def ok(ctx: dict[str, Any], n: int) -> None:
        seen.append((ctx["job_id"], ctx["job_try"], n))

    async def boom(ctx: dict[str, Any]) -> None:
        raise RuntimeError("boom")

    async def slow(ctx: dict[str, Any]) -> None:
        await asyncio.sleep(10)

    for n in range(30):
        await arq_pool.enqueue_job("ok", n, _job_id=f"ok:{n}")
    await arq_pool.enqueue_job("boom", _job_id="boom:1")
    await arq_pool.enqueue_job("slow", _job_id="slow:1")
    await arq_pool.enqueue_job("nope", _job_id="nope:1")
    w = _worker(
        redis_url,
        [func(ok, name="ok"), func(boom, name="boom"), func(slow, name="slow", timeout=0.2)],
        max_jobs=7,
    )
    await w.main()
    assert sorted(seen) == sorted((f"ok:{n}", 1, n) for n in range(30))
    assert (w.jobs_complete, w.jobs_failed) == (30, 3)
    assert await aredis.zcard(QUEUE) == 0
    assert await _arq_keys(aredis) == []
    await stop_worker(w)


async def test_never_more_jobs_run_at_once_than_max_jobs(
    redis_url: str, aredis: redis.asyncio.Redis, arq_pool: ArqRedis
) -> None:
    """Claims are bounded by the free slots: at most ``max_jobs`` functions run at once."""
    running, peak = 0, 0

    async def job(ctx: dict[str, Any]) -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.02)
        running -= 1

    for n in range(40):
        await arq_pool.enqueue_job("job", _job_id=f"job:{n}")
    w = _worker(redis_url, [func(job, name="job")], max_jobs=4)
    await w.main()
    assert w.jobs_complete == 40 and peak == 4
    await stop_worker(w)


async def test_a_cancelled_job_is_released_and_runs_again(
    redis_url: str, aredis: redis.asyncio.Redis, arq_pool: ArqRedis
) -> None:
    """A job cancelled at shutdown (``stop_worker``) keeps its place in the queue and loses
    its in-progress key, so the next worker runs it at once (try 2)."""
    started = asyncio.Event()
    tries: list[int] = []

    async def hang(ctx: dict[str, Any]) -> None:
        tries.append(ctx["job_try"])
        if ctx["job_try"] == 1:
            started.set()
            await asyncio.sleep(30)

    await arq_pool.enqueue_job("hang", _job_id="hang:1")
    w = _worker(redis_url, [func(hang, name="hang")])
    w.burst = False
    w.main_task = asyncio.create_task(w.main())
    await asyncio.wait_for(started.wait(), 5)
    await stop_worker(w)
    assert w.jobs_retried == 1
    assert await aredis.zrange(QUEUE, 0, -1) == ["hang:1"]
    assert not await aredis.exists(in_progress_key_prefix + "hang:1")
    again = _worker(redis_url, [func(hang, name="hang")])
    await again.main()
    assert tries == [1, 2] and again.jobs_complete == 1
    assert await _arq_keys(aredis) == []
    await stop_worker(again)


async def test_a_job_past_its_max_tries_is_dropped(
    redis_url: str, aredis: redis.asyncio.Redis, arq_pool: ArqRedis
) -> None:
    """A job that has been tried ``max_tries`` times (killed workers) is not run again."""
    ran: list[int] = []

    async def job(ctx: dict[str, Any]) -> None:
        ran.append(1)

    await arq_pool.enqueue_job("job", _job_id="job:1")
    await aredis.set(retry_key_prefix + "job:1", 3)
    w = _worker(redis_url, [func(job, name="job", max_tries=3)])
    await w.main()
    assert ran == [] and w.jobs_failed == 1
    assert await _arq_keys(aredis) == []
    await stop_worker(w)
