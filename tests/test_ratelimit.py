"""The shared rate limit (GCRA in Redis, checked by the scripts that start a step)."""

from __future__ import annotations

import itertools
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import redis.asyncio

from genqueue.producer.client import AsyncClient
from genqueue.producer.keys import Field, Tag
from genqueue.producer.scripts import AsyncScripts, assemble
from genqueue.producer.settings import Settings
from genqueue.worker.metrics import WorkerMetrics
from genqueue.worker.ratelimit import RateLimit
from genqueue.worker.runtime import Runtime
from genqueue.worker.tasks import run_poll, run_submit
from genqueue.worker.upstream import UpstreamClient
from tests.conftest import begin_submit_call, submitted, worker_config
from tests.faults import FaultTransport, FirstAnswers, error, is_create

TakeSlot = Callable[..., Awaitable[int]]


@pytest.fixture
def take_slot(settings: Settings, aredis: redis.asyncio.Redis) -> TakeSlot:
    """``take_call_slot`` of ``lua/_rate_limit.lua``, called alone (as a ``check`` unless
    told): 0 = go, else the wait (ms)."""
    script = aredis.register_script(
        assemble(
            '--- @include "rate_limit"\n'
            "return take_call_slot(KEYS[1], KEYS[2], tonumber(ARGV[1]), tonumber(ARGV[2]),"
            " ARGV[3])"
        )
    )

    async def take(limit: RateLimit, mode: str = "check") -> int:
        return int(await script(keys=list(limit.keys), args=[*limit.args, mode]))

    return take


async def test_a_burst_goes_then_refused_calls_get_turns_at_the_rate(
    settings: Settings, aredis: redis.asyncio.Redis, take_slot: TakeSlot
) -> None:
    """``burst`` calls go at once; each call refused after them waits one turn (1/rps) longer
    than the one refused before it, instead of all coming back when the limit frees up."""
    limit = RateLimit.of(settings.keys, rps=10, burst=3, identity="x")
    taken = [await take_slot(limit) for _ in range(9)]
    assert taken[:3] == [0, 0, 0] and all(w > 0 for w in taken[3:]), taken
    # One turn (100 ms) apart, less the few ms Redis' clock moved between two calls.
    steps = [b - a for a, b in itertools.pairwise(taken[3:])]
    assert all(50 < s <= 100 for s in steps), taken
    assert 0 < await aredis.pttl(limit.keys[1]) <= taken[-1] + 1100


async def test_at_most_rate_plus_burst_calls_in_a_second(
    settings: Settings, take_slot: TakeSlot
) -> None:
    """Calls made at their turns go at most rps + burst in the first second, rps after."""
    limit = RateLimit.of(settings.keys, rps=20, burst=5, identity="y")
    went = 0
    while (wait := await take_slot(limit)) == 0:
        went += 1
    assert went == 5  # the burst, at once
    assert 0 < wait <= 50  # the next call may go one interval after the burst's first


def test_rate_limit_arguments() -> None:
    """The interval is 1/rps in µs; the tolerance lets ``burst`` calls through at once."""
    from genqueue.producer.keys import Keys

    limit = RateLimit.of(Keys("p"), rps=500, burst=50, identity="i")
    assert limit.args == (2000, 49 * 2000)
    assert limit.keys == ("p:ratelimit:i", "p:ratelimit:i:turn")
    assert RateLimit.of(Keys("p"), rps=0.5, burst=0, identity="i").args == (2_000_000, 0)
    with pytest.raises(ValueError):
        RateLimit.of(Keys("p"), rps=0, burst=1, identity="i")


async def _exhaust(aredis: redis.asyncio.Redis, limit: RateLimit) -> None:
    """Spend the limit for the next 100 s."""
    sec, usec = await aredis.time()
    await aredis.set(limit.keys[0], str(int(sec) * 1_000_000 + int(usec) + 100_000_000))


async def _queue_turns(aredis: redis.asyncio.Redis, limit: RateLimit, ahead_ms: int) -> None:
    """Free the limit itself, with refused calls holding turns for the next ``ahead_ms``."""
    sec, usec = await aredis.time()
    await aredis.delete(limit.keys[0])
    await aredis.set(limit.keys[1], f"{int(sec) * 1000 + int(usec) // 1000 + ahead_ms:.3f}")


async def test_while_turns_wait_a_new_check_queues_and_a_turn_goes(
    settings: Settings, aredis: redis.asyncio.Redis, take_slot: TakeSlot
) -> None:
    """While refused calls hold turns, a new check joins the queue behind them (it does not
    take the slot a turn is due to use), and a check coming back at its turn goes."""
    limit = RateLimit.of(settings.keys, rps=10, burst=1, identity="q")
    await _queue_turns(aredis, limit, 500)
    wait = await take_slot(limit, "check")
    assert 400 < wait <= 500  # behind the turns already given
    assert await take_slot(limit, "turn") == 0
    # With no turn waiting, a new check goes at once.
    await aredis.delete(*limit.keys)
    assert await take_slot(limit, "check") == 0


async def test_a_check_refused_once_keeps_its_turn_ahead_of_new_checks(
    settings: Settings, aredis: redis.asyncio.Redis, client: AsyncClient, sim_app: Any
) -> None:
    """A refused check is marked as holding a turn; when it comes back it goes even though
    later checks still wait for theirs (the mark is then cleared), while a check that was
    never refused waits behind them although the limit itself has room (a burst of 5)."""
    transport = FaultTransport(sim_app, lambda r: None)
    rt = Runtime(
        config=worker_config(settings, rate_limit_rps=5, rate_limit_burst=5),
        redis=aredis,
        upstream=UpstreamClient(base_url="http://sim", api_key="k", transport=transport),
    )
    assert rt.rate_limit is not None
    rids = [await client.submit({"model": "minimax/video-01-director", "prompt": p}) for p in "ab"]
    for rid in rids:
        await aredis.delete(*rt.rate_limit.keys)
        await run_submit(rt, rid, 0)
    first, fresh = rids
    rec_key = settings.keys.record(first)
    seq = int(await aredis.hget(rec_key, Field.SEQ) or 0)
    await _exhaust(aredis, rt.rate_limit)
    await run_poll(rt, first, seq)
    assert await aredis.hget(rec_key, Field.CALL_TURN) == "1"
    await _queue_turns(aredis, rt.rate_limit, 60_000)
    await run_poll(rt, first, seq + 1)
    fresh_seq = int(await aredis.hget(settings.keys.record(fresh), Field.SEQ) or 0)
    await run_poll(rt, fresh, fresh_seq)
    await rt.close()
    assert [m for m, _ in transport.seen] == ["POST", "POST", "GET"]
    assert Field.CALL_TURN not in await aredis.hgetall(rec_key)
    assert await aredis.hget(settings.keys.record(fresh), Field.CALL_TURN) == "1"


async def test_a_limited_create_takes_no_probe_and_changes_no_counter(
    settings: Settings, aredis: redis.asyncio.Redis, client: AsyncClient
) -> None:
    """A create the rate limit refuses is put off to its turn before anything is taken: no
    probe of a half-open pause, no status change, no submit attempt."""
    limit = RateLimit.of(settings.keys, rps=5, burst=1, identity="z")
    await _exhaust(aredis, limit)
    rid = await client.submit({"model": "m/x", "prompt": "p"})
    await aredis.hset(settings.keys.pause, mapping={"until_ms": "1", "probe_until_ms": "0"})
    before = await aredis.hgetall(settings.keys.record(rid))
    reply = await AsyncScripts(aredis).run(begin_submit_call(settings, rid, limit=limit))
    assert reply.tag is Tag.LIMITED and reply.step
    assert reply.step.seq == 1 and reply.step.delay_ms > 0
    assert await aredis.hget(settings.keys.pause, "probe_until_ms") == "0"
    after = await aredis.hgetall(settings.keys.record(rid))
    assert after[Field.STATUS] == "pending" and Field.SUBMIT_SEQ not in after
    assert after[Field.SEQ] == "1" and before[Field.SEQ] == "0"


async def test_a_limited_check_calls_nothing_and_comes_back_at_its_turn(
    settings: Settings, aredis: redis.asyncio.Redis, client: AsyncClient, sim_app: Any
) -> None:
    """A status check the rate limit refuses makes no upstream call, counts a refusal and
    arms its next step at the turn the limit gave it."""
    transport = FaultTransport(sim_app, lambda r: None)
    rt = Runtime(
        config=worker_config(settings, rate_limit_rps=5, rate_limit_burst=1),
        redis=aredis,
        upstream=UpstreamClient(base_url="http://sim", api_key="k", transport=transport),
    )
    rid = await client.submit({"model": "minimax/video-01-director", "prompt": "p"})
    await run_submit(rt, rid, 0)
    assert rt.rate_limit is not None
    await _exhaust(aredis, rt.rate_limit)
    seq = int(await aredis.hget(settings.keys.record(rid), Field.SEQ) or 0)
    await run_poll(rt, rid, seq)
    await rt.close()
    assert [m for m, _ in transport.seen] == ["POST"]
    assert rt.metrics.rate_limited.labels("local", "retrieve")._value.get() == 1
    assert rt.metrics.rate_limited.labels("local", "create")._value.get() == 0
    rec = await aredis.hgetall(settings.keys.record(rid))
    assert rec[Field.SEQ] == str(seq + 1)
    due = await aredis.zscore(settings.keys.queue, f"poll:{rid}:{seq + 1}")
    assert due == int(rec[Field.NEXT_CHECK_AT_MS])
    sec, _ = await aredis.time()
    assert due > int(sec) * 1000 + 90_000  # its turn: after the spent 100 s, not in 1 s


async def test_refusals_are_counted_by_source_and_operation(
    settings: Settings, aredis: redis.asyncio.Redis, client: AsyncClient, sim_app: Any
) -> None:
    """A create the local limit puts off counts as (local, create) and makes no call; an
    upstream 429 on the next create counts as (upstream, create)."""
    metrics = WorkerMetrics()
    transport = FaultTransport(
        sim_app, FirstAnswers(is_create, error(429, "slow down", {"retry-after-ms": "50"}))
    )
    rt = Runtime(
        config=worker_config(settings, rate_limit_rps=5, rate_limit_burst=1),
        redis=aredis,
        upstream=UpstreamClient(
            base_url="http://sim", api_key="k", transport=transport, on_call=metrics.observe_call
        ),
        metrics=metrics,
    )
    rid = await client.submit({"model": "minimax/video-01-director", "prompt": "p"})
    assert rt.rate_limit is not None
    await _exhaust(aredis, rt.rate_limit)
    await run_submit(rt, rid, 0)
    assert transport.seen == []
    await aredis.delete(*rt.rate_limit.keys)  # the limit has room again
    await run_submit(rt, rid, int(await aredis.hget(settings.keys.record(rid), Field.SEQ) or 0))
    await rt.close()
    assert [m for m, _ in transport.seen] == ["POST"]
    counts = {
        labels: metrics.rate_limited.labels(*labels)._value.get()
        for labels in itertools.product(("local", "upstream"), ("create", "retrieve"))
    }
    assert counts == {
        ("local", "create"): 1,
        ("local", "retrieve"): 0,
        ("upstream", "create"): 1,
        ("upstream", "retrieve"): 0,
    }


async def test_while_a_probe_is_out_others_wait_and_its_success_admits_them(
    settings: Settings, aredis: redis.asyncio.Redis, client: AsyncClient
) -> None:
    """During a half-open pause's probe, another create waits in its admission queue with no
    timer (not until the probe's lease ends), and the probe's success admits it at once."""
    probe = await client.submit({"model": "m/x", "prompt": "p"})
    other = await client.submit({"model": "m/x", "prompt": "p"})
    await aredis.hset(settings.keys.pause, mapping={"until_ms": "1", "probe_until_ms": "0"})
    scripts = AsyncScripts(aredis)
    went = await scripts.run(begin_submit_call(settings, probe))
    assert went.tag is Tag.OK and went.probe
    reply = await scripts.run(begin_submit_call(settings, other))
    assert reply.tag is Tag.WAITING and reply.waiting == "paused"
    rec = await aredis.hgetall(settings.keys.record(other))  # type: ignore[misc]
    assert (rec[Field.STATUS], rec[Field.TIMER], rec.get(Field.ADMITTED)) == ("pending", "", None)
    # The worker ends the pause, then records the probe's job: that step admits the rest.
    await aredis.delete(settings.keys.pause)
    assert (await scripts.run(submitted(probe, went.submit_seq).call(settings))).tag is Tag.OK
    rec = await aredis.hgetall(settings.keys.record(other))  # type: ignore[misc]
    assert (rec[Field.TIMER], rec[Field.ADMITTED], rec[Field.SEQ]) == ("submit", "1", "1")
    assert await aredis.zscore(settings.keys.queue, f"submit:{other}:1") is not None


async def test_a_create_gives_way_to_checks_waiting_for_their_turns(
    settings: Settings, aredis: redis.asyncio.Redis, client: AsyncClient, take_slot: TakeSlot
) -> None:
    """While refused checks hold turns, a create takes neither a slot nor a turn and asks
    again when the last turn is due; a check is still let through by the limit itself."""
    limit = RateLimit.of(settings.keys, rps=10, burst=2, identity="w")
    waits = [await take_slot(limit) for _ in range(6)]  # two go, four wait for turns
    assert waits[:2] == [0, 0] and min(waits[2:]) > 0
    before = (await aredis.get(limit.keys[0]), await aredis.get(limit.keys[1]))
    rid = await client.submit({"model": "m/x", "prompt": "p"})
    reply = await AsyncScripts(aredis).run(begin_submit_call(settings, rid, limit=limit))
    assert reply.tag is Tag.LIMITED and reply.step
    assert waits[-1] - 50 < reply.step.delay_ms <= waits[-1] + 100
    assert (await aredis.get(limit.keys[0]), await aredis.get(limit.keys[1])) == before
    assert await aredis.hget(settings.keys.record(rid), Field.STATUS) == "pending"
    # With no turn waiting, the same create goes.
    await aredis.delete(*limit.keys)
    other = await client.submit({"model": "m/x", "prompt": "p"})
    reply = await AsyncScripts(aredis).run(begin_submit_call(settings, other, limit=limit))
    assert reply.tag is Tag.OK
