"""Transition scripts enqueue the timer step they move to themselves (``inline_arm``): one
script call per step instead of two, and the arq job is the one ``AsyncTimers.arm`` makes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import redis
import redis.asyncio
from arq.constants import job_key_prefix
from arq.jobs import deserialize_job

from genqueue.producer.client import AsyncClient
from genqueue.producer.contracts import BeginPoll
from genqueue.producer.keys import POLL_TASK, SCHEMA_VERSION, Field, Tag
from genqueue.producer.replies import BeginPollReply
from genqueue.producer.scripts import SCRIPT_NAMES, AsyncScripts, source
from genqueue.producer.settings import Settings
from genqueue.producer.timers import Timer, loads
from genqueue.worker.runtime import Runtime
from genqueue.worker.tasks import run_poll, run_submit
from genqueue.worker.upstream import UpstreamClient
from tests.conftest import worker_config
from tests.faults import FaultTransport, is_create
from tests.test_reconciler_batch import command_calls

MODEL = "minimax/video-01-director"
REQ = {"model": MODEL, "prompt": "a paper boat"}


async def load_scripts(r: redis.asyncio.Redis) -> None:
    """Load every transition script, so a first call is not counted twice (NOSCRIPT)."""
    for name in SCRIPT_NAMES:
        await r.script_load(source(name))


async def queued_job(r: redis.asyncio.Redis, settings: Settings, timer: Timer) -> tuple[Any, ...]:
    """(score in the arq queue, deserialized job) of an armed timer."""
    score = await r.zscore(settings.keys.queue, timer.job_id)
    payload = await r.get(job_key_prefix + timer.job_id)
    assert score is not None and payload is not None, timer
    return int(score), deserialize_job(payload.encode(), deserializer=loads)


@pytest.fixture
async def runtime(
    settings: Settings, aredis: redis.asyncio.Redis, sim_app: Any
) -> AsyncIterator[Runtime]:
    """A worker runtime against the in-process simulator (no rate limit)."""
    rt = Runtime(
        config=worker_config(settings),
        redis=aredis,
        upstream=UpstreamClient(
            base_url="http://sim", api_key="k", transport=httpx.ASGITransport(app=sim_app)
        ),
    )
    yield rt
    await rt.close()


async def test_submit_enqueues_the_first_step_in_its_one_script_call(
    client: AsyncClient, settings: Settings, aredis: redis.asyncio.Redis
) -> None:
    """A submit is one script call, and the first step is an arq job due at the record's
    next_check_at_ms with the task's arguments."""
    await load_scripts(aredis)
    await aredis.config_resetstat()
    rid = await client.submit(REQ)
    calls = await command_calls(aredis)
    assert calls.get("evalsha") == 1 and "eval" not in calls, calls
    score, job = await queued_job(aredis, settings, Timer("submit", rid, 0))
    rec = await aredis.hgetall(settings.keys.record(rid))
    assert score == int(rec[Field.NEXT_CHECK_AT_MS])
    assert job.function == "submit" and list(job.args) == [rid, 0, SCHEMA_VERSION]


async def test_a_check_is_two_script_calls(
    client: AsyncClient, runtime: Runtime, settings: Settings, aredis: redis.asyncio.Redis
) -> None:
    """A status check that finds the job running is two script calls: ``begin_poll`` (which
    reads the record) and ``poll_update`` (which also enqueues the next check at the time
    it recorded)."""
    rid = await client.submit(REQ)
    await run_submit(runtime, rid, 0)
    seq = int(await aredis.hget(settings.keys.record(rid), Field.SEQ) or 0)
    await load_scripts(aredis)
    await aredis.config_resetstat()
    await run_poll(runtime, rid, seq)
    calls = await command_calls(aredis)
    rec = await aredis.hgetall(settings.keys.record(rid))
    assert int(rec[Field.SEQ]) == seq + 1 and rec[Field.TIMER] == POLL_TASK
    assert calls.get("evalsha") == 2 and calls.get("hgetall") == 1, calls
    score, job = await queued_job(aredis, settings, Timer(POLL_TASK, rid, seq + 1))
    assert score == int(rec[Field.NEXT_CHECK_AT_MS])
    assert job.function == POLL_TASK and list(job.args) == [rid, seq + 1, SCHEMA_VERSION]


async def test_a_script_enqueues_only_the_step_it_moves_to(
    client: AsyncClient, settings: Settings, aredis: redis.asyncio.Redis
) -> None:
    """A passed step that is not the one the script moves to is not enqueued (the caller
    arms the real one); an already armed step is left as it is."""
    scripts = AsyncScripts(aredis)
    rid = await client.submit(REQ)
    await aredis.hset(settings.keys.record(rid), mapping={Field.TIMER: POLL_TASK})
    limit = (settings.keys.rate_limit("t"), settings.keys.rate_turns("t"))

    async def begin_poll(expected_seq: int, passed: Timer) -> BeginPollReply:
        # One call per 10 s: the first goes, the next are put off (next_step).
        c = BeginPoll(
            request_id=rid,
            expected_seq=expected_seq,
            limit_keys=limit,
            limit_us=(10**7, 0),
            arm=passed,
        ).call(settings)
        return await scripts.run(c)

    assert (await begin_poll(0, Timer(POLL_TASK, rid, 1))).tag is Tag.GO
    wrong = Timer(POLL_TASK, rid, 7)
    reply = await begin_poll(0, wrong)
    assert reply.tag is Tag.LIMITED and reply.step and reply.step.seq == 1
    assert await aredis.zscore(settings.keys.queue, wrong.job_id) is None
    assert await aredis.zscore(settings.keys.queue, Timer(POLL_TASK, rid, 1).job_id) is None

    step = Timer(POLL_TASK, rid, 2)
    await aredis.set(job_key_prefix + step.job_id, b"armed before")
    reply = await begin_poll(1, step)
    assert reply.tag is Tag.LIMITED and reply.step and reply.step.seq == 2
    assert await aredis.get(job_key_prefix + step.job_id) == "armed before"
    assert await aredis.zscore(settings.keys.queue, step.job_id) is None


async def test_a_wrong_guess_is_armed_by_the_task(
    client: AsyncClient, settings: Settings, aredis: redis.asyncio.Redis, sim_app: Any
) -> None:
    """If the record's seq moved between the task's read and its script (its guess of the
    next step was wrong), the task arms the step the script really moved to."""
    rid = await client.submit(REQ)
    sync = redis.Redis.from_url(settings.redis_url, decode_responses=True)

    def move_seq_on_create(request: httpx.Request) -> None:
        if is_create(request):  # between begin_submit and `submitted`
            sync.hset(settings.keys.record(rid), Field.SEQ, "2")

    rt = Runtime(
        config=worker_config(settings),
        redis=aredis,
        upstream=UpstreamClient(
            base_url="http://sim",
            api_key="k",
            transport=FaultTransport(sim_app, move_seq_on_create),
        ),
    )
    await run_submit(rt, rid, 0)
    sync.close()
    await rt.upstream.aclose()
    rec = await aredis.hgetall(settings.keys.record(rid))
    assert rec[Field.SEQ] == "3" and rec[Field.TIMER] == POLL_TASK
    score, _ = await queued_job(aredis, settings, Timer(POLL_TASK, rid, 3))
    assert score == int(rec[Field.NEXT_CHECK_AT_MS])
    assert await aredis.zscore(settings.keys.queue, Timer(POLL_TASK, rid, 1).job_id) is None


async def test_a_learned_check_reads_redis_clock_from_begin_poll(
    client: AsyncClient,
    settings: Settings,
    aredis: redis.asyncio.Redis,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With learned durations the next check is placed on Redis' clock, which ``begin_poll``
    answers with the record: the check is still two script calls, with no ``TIME`` call of
    its own."""
    from genqueue.simulator import SimConfig, create_app
    from genqueue.worker import tasks

    sim = create_app(SimConfig(time_scale=1.0, seed=7, failure_share=0.0))  # still running
    rt = Runtime(
        config=worker_config(settings, time_scale=1.0),
        redis=aredis,
        upstream=UpstreamClient(
            base_url="http://sim", api_key="k", transport=httpx.ASGITransport(app=sim)
        ),
    )
    learned: list[float | None] = []
    real = tasks._learned_wait_s

    async def spy(*args: Any, **kw: Any) -> float | None:
        learned.append(await real(*args, **kw))
        return learned[-1]

    clock_reads: list[int] = []
    real_now = tasks._redis_now_s

    async def time_command(rt: Runtime) -> float:
        clock_reads.append(1)
        return await real_now(rt)

    monkeypatch.setattr(tasks, "_learned_wait_s", spy)
    monkeypatch.setattr(tasks, "_redis_now_s", time_command)
    try:
        for d in range(100, 160):
            await rt.durations.record(MODEL, 0.0, float(d), generation_s=d - 20.0)
        rid = await client.submit(REQ)
        await run_submit(rt, rid, 0)
        seq = int(await aredis.hget(settings.keys.record(rid), Field.SEQ) or 0)
        assert await rt.durations.get(MODEL) is not None  # cached: no refresh in the check
        await load_scripts(aredis)
        await aredis.config_resetstat()
        learned.clear()
        clock_reads.clear()
        await run_poll(rt, rid, seq)
        calls = await command_calls(aredis)
        assert len(learned) == 1 and learned[0] is not None  # the learned schedule placed it
        assert calls.get("evalsha") == 2 and not clock_reads, (calls, clock_reads)
        rec = await aredis.hgetall(settings.keys.record(rid))
        assert int(rec[Field.SEQ]) == seq + 1
    finally:
        await rt.close()


def test_timer_payload_is_arqs_serialize_job() -> None:
    """A timer's payload is byte for byte what arq's ``serialize_job`` writes with our
    serializer, whatever the request id holds."""
    from arq.jobs import serialize_job

    from genqueue.producer.keys import SCHEMA_VERSION
    from genqueue.producer.timers import Timer, dumps, timer_payload

    for rid in ("r1", "abc-0123", 'q"uote\\back', "ünï✓", "tab\tnl\n\x00", ""):
        for kind in ("poll", "submit", "admit"):
            for seq, now_ms in ((0, 1), (7, 1733371234567), (10**12, 0)):
                t = Timer(kind, rid, seq)
                expected = serialize_job(
                    kind, (rid, seq, SCHEMA_VERSION), {}, None, now_ms, serializer=dumps
                )
                assert timer_payload(t, now_ms) == expected
