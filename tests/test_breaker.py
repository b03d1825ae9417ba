"""The circuit breaker: creates pause for everyone, then one probe decides to resume."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import redis.asyncio

from genqueue.producer.client import AsyncClient
from genqueue.producer.keys import Field, Tag
from genqueue.producer.settings import Settings
from genqueue.worker.pause import CreatePause
from tests.conftest import StartWorker
from tests.faults import FaultTransport, error, is_create
from tests.test_transitions import Scripts

REQ = {"model": "minimax/video-01-director", "prompt": "rain on a tin roof"}


async def test_expired_pause_lets_exactly_one_probe_through(
    client: AsyncClient, settings: Settings, aredis: redis.asyncio.Redis
) -> None:
    """After a pause's time, one request goes through as a probe and the rest wait in their
    admission queue until the probe's success admits them."""
    s = Scripts(settings, aredis)
    pause = CreatePause(aredis, settings.keys)
    await pause.pause(reason="test", code=402, duration_ms=1)
    await asyncio.sleep(0.01)
    a, b = await client.submit(REQ), await client.submit(REQ)
    assert ((await s.rec(a)).get(Field.ADMITTED), (await s.rec(b)).get(Field.WAITING)) == (
        "1",
        "paused",
    )
    first = await s.begin(a, seq=0)
    assert first.tag is Tag.OK and first.probe
    assert (await s.begin(b, seq=0)).tag is Tag.STALE  # waiting: no submit step
    assert await pause.resume()
    assert (await s.submitted(a, first.submit_seq)).tag is Tag.OK
    assert (await s.begin(b)).tag is Tag.OK


async def test_outage_streak_pauses_creates_and_a_probe_resumes_them(
    client: AsyncClient,
    start_worker: StartWorker,
    sim_app: Any,
    aredis: redis.asyncio.Redis,
    settings: Settings,
) -> None:
    """A streak of 5xx creates pauses creates for everyone; after the pause one probe
    succeeds, creates resume, and every request completes without being failed."""
    state = {"down": True}

    def rule(r: httpx.Request) -> httpx.Response | None:
        return error(500, "outage") if state["down"] and is_create(r) else None

    transport = FaultTransport(sim_app, rule)
    # pause_s is not scaled: keep it short for the test.
    await start_worker(transport=transport, breaker_failure_streak=3, pause_s=0.3)
    ids = [await client.submit(REQ) for _ in range(6)]
    for _ in range(300):
        if (await client.stats()).paused:
            break
        await asyncio.sleep(0.01)
    st = await client.stats()
    assert st.paused.get("code") == "outage"
    assert not st.finished  # nobody was failed for the outage
    state["down"] = False
    views = await asyncio.gather(*(client.wait(i, 30) for i in ids))
    assert {v.status for v in views} == {"completed"}
    assert not (await client.stats()).paused
    assert not await aredis.exists(settings.keys.pause)


async def test_an_answered_create_ends_the_failure_streak(
    client: AsyncClient, settings: Settings, aredis: redis.asyncio.Redis, sim_app: Any
) -> None:
    """A create the upstream answers ends the outage streak other creates had begun, so
    failures far apart never add up to a pause."""
    from genqueue.worker.runtime import Runtime
    from genqueue.worker.tasks import run_submit
    from genqueue.worker.upstream import UpstreamClient
    from tests.conftest import worker_config

    pause = CreatePause(aredis, settings.keys)
    assert not await pause.record_outage_failure(3)
    assert not await pause.record_outage_failure(3)
    rt = Runtime(
        config=worker_config(settings),
        redis=aredis,
        upstream=UpstreamClient(
            base_url="http://sim", api_key="k", transport=httpx.ASGITransport(app=sim_app)
        ),
    )
    await run_submit(rt, await client.submit(REQ), 0)
    await rt.close()
    assert not await aredis.exists(settings.keys.pause_streak)
    assert not await pause.record_outage_failure(3)  # a new streak: 1 of 3
