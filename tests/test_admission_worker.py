"""Admission with workers running: a backlog costs no script call while it waits, and
admission drains it through the real events (creates, finishes) within the caps."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import redis
import redis.asyncio

from genqueue.producer.client import AsyncClient
from genqueue.producer.keys import Field
from genqueue.producer.settings import Settings
from genqueue.producer.tenants import set_tenant
from genqueue.simulator import SimConfig, create_app
from tests.conftest import StartWorker

REQ = {"model": "minimax/video-01-director", "prompt": "a kite"}


def script_calls(info: dict[str, Any]) -> int:
    """Script runs so far (``INFO commandstats``: EVAL and EVALSHA)."""
    return sum(int(info.get(f"cmdstat_{c}", {}).get("calls", 0)) for c in ("eval", "evalsha"))


async def test_a_waiting_backlog_costs_no_script_calls(
    client: AsyncClient, start_worker: StartWorker, aredis: redis.asyncio.Redis
) -> None:
    """With the cap full of long videos and 1,000 requests waiting, a worker runs a handful
    of scripts in three seconds (its own looks), none per waiting request (before admission,
    each re-armed and ran begin_submit every cap_wait_s)."""
    slow = create_app(SimConfig(time_scale=1.0, seed=3, failure_share=0.0))
    await start_worker(transport=httpx.ASGITransport(app=slow), max_inflight=5, time_scale=1.0)
    for _ in range(100):  # the worker announces its cap at start
        if await aredis.hget(client.settings.keys.admission, "max_inflight") == "5":  # type: ignore[misc]
            break
        await asyncio.sleep(0.02)
    ids = [await client.submit(REQ) for _ in range(1005)]
    for _ in range(200):  # the five admitted are created upstream
        if (await client.stats()).requests_by_status["queued"] + (
            await client.stats()
        ).requests_by_status["in_progress"] == 5:
            break
        await asyncio.sleep(0.02)
    stats = await client.stats()
    assert stats.waiting["cap"] == 1000 and stats.active_upstream == 5
    before = script_calls(await aredis.info("commandstats"))
    await asyncio.sleep(3.0)
    calls = script_calls(await aredis.info("commandstats")) - before
    assert calls < 30, calls
    waiting = [await aredis.hgetall(client.settings.keys.record(r)) for r in ids[-10:]]  # type: ignore[misc]
    assert all(r[Field.WAITING] == "cap" and r[Field.TIMER] == "" for r in waiting)


async def test_workers_drain_two_tenants_backlogs_within_the_caps(
    client: AsyncClient, start_worker: StartWorker, settings: Settings
) -> None:
    """Two tenants' backlogs beyond the cap all complete through the real admitting events,
    and at the end nothing is reserved, waiting or in flight."""
    with redis.Redis.from_url(settings.redis_url) as conn:
        set_tenant(conn, settings.keys, "acme", max_inflight=1)
        set_tenant(conn, settings.keys, "beta", weight=2.0)
    app = create_app(SimConfig(time_scale=0.001, seed=5, failure_share=0.0))
    await start_worker(transport=httpx.ASGITransport(app=app), max_inflight=3)
    for _ in range(100):
        if await client.redis.hget(settings.keys.admission, "max_inflight") == "3":  # type: ignore[misc]
            break
        await asyncio.sleep(0.02)
    ids = [await client.submit(REQ, tenant=t) for t in ("acme", "beta") * 12]
    views = [await client.wait(r, 60) for r in ids]
    assert {v.status for v in views} == {"completed"}
    assert app.state.sim.stats()["jobs_created"] == 24
    st = await client.stats()
    assert (st.active_upstream, st.admitted, sum(st.waiting.values())) == (0, 0, 0)
    assert sum(st.requests_by_status.values()) == 0
