"""Workers wait instead of looking (``worker/wakeup.py``): wake tokens, the watcher of the next
due time, Redis-time claims, the reconciler as periodic work, the outbox dispatched when due."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import redis.asyncio
from arq.connections import RedisSettings
from arq.constants import in_progress_key_prefix, job_key_prefix
from arq.worker import func

from genqueue.producer.keys import DISPATCH_TASK, RECONCILE_TASK, Keys, WakeKeys
from genqueue.producer.scripts import source
from genqueue.producer.settings import Settings
from genqueue.producer.stats import redis_time_ms
from genqueue.producer.timers import AsyncTimers, Timer, dumps, loads
from genqueue.worker.app import build_side_worker, build_worker, stop_worker
from genqueue.worker.claim import Slack, TimerWorker, claim_due_args, parse_look
from genqueue.worker.wakeup import LookResult, Periodic, WakeListener, wait_s
from tests.conftest import worker_config

QUEUE = "t:queue"
WAKE = WakeKeys.of(QUEUE)


async def _look(
    r: redis.asyncio.Redis,
    *,
    want: int = 10,
    running: int = 0,
    watched: str = QUEUE,
    me: str = "w1",
    slack: Slack | None = None,
) -> tuple[list[Any], LookResult | None]:
    raw = redis.asyncio.Redis(
        connection_pool=r.connection_pool.__class__(
            **{**r.connection_pool.connection_kwargs, "decode_responses": False}
        )
    )
    claim = raw.register_script(source("claim_due"))
    args = claim_due_args(
        now_ms=None,
        in_progress_ms=40_000,
        want=want,
        look=100,
        cron_keep_ms=60_000,
        retired=[],
        running=running,
        max_wait_ms=60_000,
        watcher_id=me,
        slack=slack,
    )
    try:
        reply = await claim(keys=[QUEUE, WAKE.wake, WAKE.wake_at, watched], args=args)
    finally:
        await raw.aclose(close_connection_pool=True)
    return parse_look(reply)


async def test_an_arm_wakes_one_waiting_worker_only_if_due_before_the_watched_time(
    aredis: redis.asyncio.Redis,
) -> None:
    """Arming pushes at most one wake token, and none for a job due at or after the time the
    idle watcher will look anyway."""
    timers = AsyncTimers(aredis, QUEUE)
    now = redis_time_ms(await aredis.time())
    await aredis.set(WAKE.wake_at, f"{now + 10_000}:w1")
    assert await timers.arm(Timer("poll", "late", 1), at_ms=now + 20_000)
    assert await aredis.llen(WAKE.wake) == 0
    assert await timers.arm(Timer("poll", "early", 1), at_ms=now + 5_000)
    assert await timers.arm(Timer("poll", "now", 1))
    assert await aredis.llen(WAKE.wake) == 1
    await aredis.delete(WAKE.wake_at)  # no watcher: any arm wakes one worker
    await aredis.delete(WAKE.wake)
    assert await timers.arm(Timer("poll", "later", 1), at_ms=now + 60_000)
    assert await aredis.llen(WAKE.wake) == 1


async def test_status_checks_due_within_the_slack_run_with_the_due_ones(
    aredis: redis.asyncio.Redis,
) -> None:
    """A look with timer slack also claims the status checks due within it, but not a check
    holding a rate-limit turn, a create, or a check due after the slack; it looks again when
    the first job it left within the slack is due."""
    now = redis_time_ms(await aredis.time())
    due = {
        "poll:due:1": now - 50,
        "poll:soon:3": now + 2_000,
        "poll:turn:2": now + 1_000,
        "submit:create:1": now + 1_500,
        "poll:late:1": now + 30_000,
    }
    await aredis.zadd(QUEUE, due)
    for job_id in due:
        await aredis.set(job_key_prefix + job_id, "payload")
    await aredis.hset("t:req:turn", "call_turn", "1")
    await aredis.hset("t:req:soon", "status", "in_progress")
    slack = Slack(ms=5_000, id_prefix="poll:", record_prefix="t:req:")
    claimed, look = await _look(aredis, slack=slack)
    assert sorted(c[0] for c in claimed) == ["poll:due:1", "poll:soon:3"]
    assert look is not None and look.next_in_s is not None
    assert 0.5 < look.next_in_s <= 1.0  # the turn's time, not the create's or the late check's
    assert await aredis.exists(in_progress_key_prefix + "poll:turn:2") == 0
    assert await aredis.exists(in_progress_key_prefix + "submit:create:1") == 0
    # A look fills up to `most` jobs with early ones, and none once as many are due.
    await aredis.zadd(
        QUEUE, {"poll:due:2": now - 40, "poll:e1:1": now + 100, "poll:e2:1": now + 200}
    )
    for job_id in ("poll:due:2", "poll:e1:1", "poll:e2:1"):
        await aredis.set(job_key_prefix + job_id, "payload")
    most2 = Slack(ms=5_000, id_prefix="poll:", record_prefix="t:req:", most=2)
    claimed, look = await _look(aredis, slack=most2)
    assert [c[0] for c in claimed] == ["poll:due:2", "poll:e1:1"]
    assert look is not None and look.next_in_s is not None and look.next_in_s <= 0.2
    await aredis.zadd(QUEUE, {"poll:due:3": now - 30, "poll:due:4": now - 20})
    for job_id in ("poll:due:3", "poll:due:4"):
        await aredis.set(job_key_prefix + job_id, "payload")
    claimed, _ = await _look(aredis, slack=most2)
    assert [c[0] for c in claimed] == ["poll:due:3", "poll:due:4"]
    await aredis.delete(QUEUE)
    # Without slack only what is due now is claimed.
    await aredis.zadd(QUEUE, {"poll:next:1": now + 2_000})
    await aredis.set(job_key_prefix + "poll:next:1", "payload")
    claimed, look = await _look(aredis)
    assert claimed == []
    assert look is not None and look.next_in_s is not None and 1.5 < look.next_in_s <= 2.0


async def test_one_idle_worker_watches_the_next_due_time_on_redis_clock(
    aredis: redis.asyncio.Redis,
) -> None:
    """A look compares with Redis TIME and says how long until the next job is due; the first
    worker with a free slot left becomes its watcher (busy or not: a worker with jobs running
    looks at its next due time anyway), a second one does not and a busy one times it itself
    without taking it over, the watcher's own next look renews its watch (it may have been
    woken early), and an earlier job takes the watch over."""
    now = redis_time_ms(await aredis.time())
    await aredis.zadd(QUEUE, {"poll:due:1": now - 50, "poll:next:1": now + 30_000})
    await aredis.set(job_key_prefix + "poll:due:1", "payload")
    claimed, look = await _look(aredis)
    assert [c[0] for c in claimed] == ["poll:due:1"]
    assert look is not None and look.watcher  # it claimed a job and has slots to spare
    assert look.next_in_s is not None and 25 < look.next_in_s <= 30
    claimed, first = await _look(aredis)
    assert claimed == [] and first is not None and first.watcher
    assert await aredis.get(WAKE.wake_at) == f"{now + 30_000}:w1"
    _, second = await _look(aredis, me="w2")
    assert second is not None and not second.watcher and second.next_in_s is not None
    _, busy = await _look(aredis, running=3, me="w2")
    assert busy is not None and not busy.watcher
    _, again = await _look(aredis, me="w1")
    assert again is not None and again.watcher
    await aredis.zadd(QUEUE, {"poll:earlier:1": now + 10_000})
    _, earlier = await _look(aredis, me="w2")
    assert earlier is not None and earlier.watcher
    assert await aredis.get(WAKE.wake_at) == f"{now + 10_000}:w2"


async def test_a_watch_is_given_up_by_a_full_look_and_covers_arms_until_its_watcher_looks(
    aredis: redis.asyncio.Redis,
) -> None:
    """A watched time covers every job due at or after it even once it has passed (its
    watcher is about to look, and that look sees the job): an arm then pushes no token. The
    watcher's look renews its watch, or deletes it when it leaves no free slot (it will not
    look at the next due time) or nothing is due before the cap, so any arm wakes a worker
    again; the key outlives the watched time by a second (a dead watcher)."""
    timers = AsyncTimers(aredis, QUEUE)
    now = redis_time_ms(await aredis.time())
    await aredis.set(WAKE.wake_at, f"{now - 100}:w0", px=900)  # the previous version's
    assert await timers.arm(Timer("poll", "old", 1), at_ms=now + 5_000)
    assert await aredis.llen(WAKE.wake) == 1  # it may have looked already: a token
    await aredis.delete(WAKE.wake)
    await aredis.set(WAKE.wake_at, f"{now - 100}:+w1", px=900)  # passed, not looked at yet
    assert await timers.arm(Timer("poll", "later", 1), at_ms=now + 5_000)
    assert await aredis.llen(WAKE.wake) == 0
    for k in range(2):
        await aredis.zadd(QUEUE, {f"poll:d:{k}": now - 10 - k})
        await aredis.set(job_key_prefix + f"poll:d:{k}", "payload")
    # The watcher's look, every slot taken.
    claimed, full = await _look(aredis, want=2, me="+w1")
    assert len(claimed) == 2 and full is not None and not full.watcher
    assert await aredis.get(WAKE.wake_at) is None
    assert await aredis.llen(WAKE.wake) == 0  # no due job was left behind
    assert await timers.arm(Timer("poll", "again", 1), at_ms=now + 6_000)
    assert await aredis.llen(WAKE.wake) == 1
    await aredis.delete(WAKE.wake)
    await aredis.zrem(QUEUE, "poll:old:1", "poll:later:1", "poll:again:1")
    _, look = await _look(aredis, me="+w2")
    assert look is not None and look.watcher
    await aredis.zrem(QUEUE, *await aredis.zrange(QUEUE, 0, -1))
    _, empty = await _look(aredis, me="+w2")  # nothing due before the cap: nothing to watch
    assert empty is not None and not empty.watcher and empty.next_in_s is None
    assert await aredis.get(WAKE.wake_at) is None


async def test_a_due_entry_of_the_watched_set_is_reported(aredis: redis.asyncio.Redis) -> None:
    """The side worker's look reports a due outbox entry (and never watches one as its time)."""
    now = redis_time_ms(await aredis.time())
    await aredis.zadd("t:outbox", {"r1": now + 5_000})
    _, look = await _look(aredis, watched="t:outbox")
    assert look is not None and not look.watched_due and look.watcher
    assert look.next_in_s is not None and 4 < look.next_in_s <= 5
    await aredis.zadd("t:outbox", {"r2": now - 1})
    _, due = await _look(aredis, watched="t:outbox")
    assert due is not None and due.watched_due and not due.watcher


def test_wait_is_the_next_due_time_only_for_the_watcher_or_a_busy_worker() -> None:
    """An idle worker that does not watch waits for its own schedule or the cap only."""
    look = LookResult(next_in_s=2.0, watched_due=False, watcher=False)
    assert wait_s(look, running=0, cap_s=60.0, other_deadlines_s=(30.0,)) == 30.0
    assert wait_s(look, running=1, cap_s=60.0) == 2.0
    watcher = LookResult(next_in_s=2.0, watched_due=False, watcher=True)
    assert wait_s(watcher, running=0, cap_s=60.0) == 2.0
    assert wait_s(None, running=0, cap_s=60.0, other_deadlines_s=(-1.0,)) == 0.0


async def test_periodic_work_runs_once_per_interval_across_workers(
    aredis: redis.asyncio.Redis,
) -> None:
    """Of several workers due at once, the one that takes the interval's lock runs it."""
    runs: list[int] = []

    async def run(ctx: dict[str, Any]) -> None:
        runs.append(1)

    ps = [Periodic("p", interval_s=30, lock_key="t:lock", run=run) for _ in range(3)]
    for p in ps:
        p.next_at = 0.0  # due now
    assert [await p.maybe_run(aredis, {}) for p in ps] == [True, False, False]
    assert runs == [1]
    assert not await ps[0].maybe_run(aredis, {})  # not due again before its interval


async def test_an_idle_worker_waits_and_is_woken_by_an_arm(
    redis_url: str, aredis: redis.asyncio.Redis
) -> None:
    """A waiting worker makes no looks while idle (its periodic work runs without one), and
    runs a job armed later at once (the arm woke it); without wake keys it would look every
    ``poll_delay_s`` (here 10 ms)."""
    ran = asyncio.Event()
    ticks: list[int] = []

    async def tick(ctx: dict[str, Any]) -> None:
        ticks.append(1)
        await aredis.delete("t:lock")  # each tick may run again at the next one

    async def poll(ctx: dict[str, Any], request_id: str, seq: int, v: int = 1) -> None:
        ran.set()

    w = TimerWorker(
        functions=[func(poll, name="poll")],
        queue_name=QUEUE,
        redis_settings=RedisSettings.from_dsn(redis_url),
        poll_delay=0.01,
        keep_result=0,
        handle_signals=False,
        job_serializer=dumps,
        job_deserializer=loads,
        wake=WAKE,
        max_wait_s=60.0,
        periodic=[Periodic("tick", interval_s=0.05, lock_key="t:lock", run=tick)],
    )
    task = asyncio.create_task(w.async_run())
    try:
        for _ in range(1000):  # started: its first look made
            if w.looks:
                break
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.5)
        assert w.looks <= 2  # polling would have made ~50
        assert len(ticks) >= 3
        await AsyncTimers(aredis, QUEUE).arm(Timer("poll", "r1", 1))
        await asyncio.wait_for(ran.wait(), timeout=10)
    finally:
        await stop_worker(w)
        await asyncio.gather(task, return_exceptions=True)


async def test_cron_jobs_of_the_previous_version_still_have_their_functions(
    settings: Settings,
) -> None:
    """The reconciler and the outbox dispatcher are no arq crons any more, but a cron job the
    previous version enqueued still finds its function (and no cron is scheduled)."""
    cfg = worker_config(settings)
    main, side = build_worker(cfg), build_side_worker(cfg)
    assert RECONCILE_TASK in main.functions and not main.cron_jobs
    assert DISPATCH_TASK in side.functions and not side.cron_jobs


def test_the_side_worker_is_woken_through_the_outbox_keys() -> None:
    """``owe`` in the Lua knows only the outbox key: the side wake keys are derived from it."""
    k = Keys("gq")
    assert k.side_wake == WakeKeys("gq:outbox:wake", "gq:outbox:wake:at")
    assert "K_OUTBOX .. WAKE_SUFFIX" in source("finish")


async def test_a_job_running_elsewhere_is_watched_until_its_lock_expires(
    aredis: redis.asyncio.Redis,
) -> None:
    """A due job whose worker died becomes claimable when its in-progress key expires: the
    look says to look again then (nothing else would wake a worker for it)."""
    now = redis_time_ms(await aredis.time())
    await aredis.zadd(QUEUE, {"poll:orphan:1": now - 10, "poll:later:1": now + 50_000})
    await aredis.set(in_progress_key_prefix + "poll:orphan:1", "1", px=7_000)
    claimed, look = await _look(aredis)
    assert claimed == [] and look is not None and look.watcher
    assert look.next_in_s is not None and 6 < look.next_in_s <= 7


async def test_an_idle_worker_still_looks_once_per_max_wait(
    redis_url: str, aredis: redis.asyncio.Redis
) -> None:
    """However often its own schedule wakes it, an idle worker looks at least every
    ``max_wait_s`` (the bound on a lost wake-up)."""

    async def tick(ctx: dict[str, Any]) -> None:
        await aredis.delete("t:lock")

    async def noop(ctx: dict[str, Any]) -> None:
        pass

    w = TimerWorker(
        functions=[func(noop, name="noop")],
        queue_name=QUEUE,
        redis_settings=RedisSettings.from_dsn(redis_url),
        poll_delay=0.01,
        keep_result=0,
        handle_signals=False,
        wake=WAKE,
        max_wait_s=0.2,
        periodic=[Periodic("tick", interval_s=0.05, lock_key="t:lock", run=tick)],
    )
    task = asyncio.create_task(w.async_run())
    try:
        for _ in range(1000):
            if w.looks >= 3:
                break
            await asyncio.sleep(0.01)
        assert w.looks >= 3
    finally:
        await stop_worker(w)
        await asyncio.gather(task, return_exceptions=True)


async def test_a_dispatched_outbox_entry_is_put_off_by_its_lease(
    settings: Settings, aredis: redis.asyncio.Redis
) -> None:
    """The dispatcher arms a due entry's side job and puts the entry off by the lease (else the
    side worker, which dispatches when an entry is due, would dispatch it at every look); an
    entry whose record is gone leaves the outbox."""
    from genqueue.worker.runtime import Runtime
    from genqueue.worker.side_effects import dispatch_outbox
    from genqueue.worker.upstream import UpstreamClient

    rt = Runtime(
        config=worker_config(settings),
        redis=aredis,
        upstream=UpstreamClient(base_url="http://sim", api_key="k"),
    )
    try:
        keys = settings.keys
        now = redis_time_ms(await aredis.time())
        await aredis.hset(keys.record("r1"), mapping={"side_seq": "3", "status": "completed"})
        await aredis.zadd(keys.outbox, {"r1": now - 5, "gone": now - 5})
        assert await dispatch_outbox(rt, lease_ms=50_000) == 1
        assert await aredis.exists(job_key_prefix + "side:r1:3")
        leased = await aredis.zscore(keys.outbox, "r1")
        assert leased is not None and leased >= now + 50_000
        assert await aredis.zscore(keys.outbox, "gone") is None
        assert await aredis.llen(keys.side_wake.wake) == 1  # the armed job woke a side worker
    finally:
        await rt.upstream.aclose()
        await rt.webhook_http.aclose()
        await rt.download_http.aclose()


async def test_a_failed_wait_is_an_error_not_a_spin() -> None:
    """A wake listener whose ``BLPOP`` failed (Redis lost) raises, so the worker's loop ends
    and the supervisor restarts it, instead of waiting on a failing command again and again."""
    from genqueue.local_redis import free_port

    client = redis.asyncio.Redis(host="127.0.0.1", port=free_port(), socket_connect_timeout=1)
    listener = WakeListener(client, WAKE, timeout_s=5)
    try:
        await asyncio.wait([listener.task()], timeout=10)
        with pytest.raises((redis.RedisError, OSError)):
            listener.take()
    finally:
        await listener.close()
        await client.aclose()


async def test_due_jobs_left_behind_wake_another_worker(aredis: redis.asyncio.Redis) -> None:
    """A look that claims all it has slots for and leaves due jobs behind wakes another
    worker (an idle one that does not watch would otherwise sleep while this one is full);
    one that takes every due job wakes nobody."""
    now = redis_time_ms(await aredis.time())
    for k in range(3):
        await aredis.zadd(QUEUE, {f"poll:d:{k}": now - 10 - k})
        await aredis.set(job_key_prefix + f"poll:d:{k}", "payload")
    claimed, _ = await _look(aredis, want=2)
    assert len(claimed) == 2
    assert await aredis.llen(WAKE.wake) == 1
    await aredis.delete(WAKE.wake)
    claimed, _ = await _look(aredis, want=5)
    assert len(claimed) == 1
    assert await aredis.llen(WAKE.wake) == 0
