"""A create answered while its task is cancelled or Redis is down is recorded, never re-bought.

The upstream here ignores idempotency keys (as Together does): every second POST for a request
would be a second paid video.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import redis.asyncio
import redis.exceptions

from genqueue.local_redis import LocalRedis
from genqueue.producer.client import AsyncClient
from genqueue.producer.keys import Field
from genqueue.producer.record import read_full
from genqueue.producer.scripts import AsyncScripts, R, ScriptCall
from genqueue.producer.settings import Settings
from genqueue.simulator import SimConfig, create_app
from genqueue.worker.durability import Durability
from genqueue.worker.metrics import WorkerMetrics
from genqueue.worker.runtime import Runtime
from genqueue.worker.tasks import _record_submitted, run_submit
from genqueue.worker.upstream import UpstreamClient
from tests.conftest import FAST_SCALE, worker_config
from tests.faults import is_create

MODEL = "minimax/video-01-director"


class HeldAnswers(httpx.AsyncBaseTransport):
    """Forwards to the simulator; a create's answer (its job made upstream) is held until
    ``release`` is set, the moment a lost connection or a cancelled task would hit it."""

    def __init__(self, app: Any) -> None:
        self.inner = httpx.ASGITransport(app=app)
        self.created = asyncio.Event()
        self.release = asyncio.Event()
        self.posts = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        if is_create(request):
            self.posts += 1
            self.created.set()
            await self.release.wait()
        return response


@pytest.fixture
def sim_app() -> Any:
    return create_app(
        SimConfig(time_scale=FAST_SCALE, seed=11, failure_share=0.0, honour_idempotency=False)
    )


@pytest.fixture
def server() -> AsyncIterator[LocalRedis]:
    """A Redis of this test's own, to kill and start again."""
    with LocalRedis(appendfsync="always") as s:
        yield s


class SeenDown(Durability):
    """Runs writes undurably, as a hand-built runtime does; ``failed`` once one met Redis down."""

    def __init__(self) -> None:
        super().__init__()
        self.failed = asyncio.Event()

    async def run(self, client: redis.asyncio.Redis, scripts: AsyncScripts, c: ScriptCall[R]) -> R:
        try:
            return await super().run(client, scripts, c)
        except redis.exceptions.ConnectionError:
            self.failed.set()
            raise


def _runtime(
    settings: Settings,
    client: redis.asyncio.Redis,
    transport: HeldAnswers,
    durability: Durability | None = None,
) -> Runtime:
    upstream = UpstreamClient(base_url="http://sim", api_key="k", transport=transport)
    return Runtime(
        config=worker_config(settings),
        redis=client,
        upstream=upstream,
        durability=durability or Durability(),
        metrics=WorkerMetrics(),
    )


async def _rerun_submit(settings: Settings, transport: HeldAnswers, sim_app: Any, rid: str) -> None:
    """arq's re-run of the cancelled submit (at once, on a fresh client and runtime): the
    lease is held, so nothing is posted: one POST in all, no duplicate creation."""
    client = redis.asyncio.Redis.from_url(settings.redis_url, decode_responses=True)
    rt = _runtime(settings, client, transport)
    await run_submit(rt, rid, 0)
    await rt.close()
    assert transport.posts == 1
    assert sim_app.state.sim.stats()["duplicate_creations"] == 0


async def _cancelled(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert task.cancelled()


async def test_create_cancelled_mid_post_is_recorded_and_not_bought_again(
    server: LocalRedis, sim_app: Any
) -> None:
    """A submit task cancelled while its POST is in flight (the supervisor stopping arq) still
    records the job the POST made; the task's re-run finds the lease and posts nothing."""
    settings = Settings(redis_url=server.url, key_prefix="gq-outage-cancel")
    transport = HeldAnswers(sim_app)
    async with AsyncClient(settings) as producer:
        client = redis.asyncio.Redis.from_url(server.url, decode_responses=True)
        rt = _runtime(settings, client, transport)
        rid = await producer.submit({"model": MODEL, "prompt": "a kite"})
        task = asyncio.create_task(run_submit(rt, rid, 0))
        await transport.created.wait()
        await _cancelled(task)
        transport.release.set()
        await rt.close()  # waits for the create it cannot cancel
        view = await producer.get(rid)
        assert view.upstream_id == sim_app.state.sim.jobs()[0]["id"]
        assert view.status in ("queued", "in_progress")
    await _rerun_submit(settings, transport, sim_app, rid)


async def test_answer_held_through_a_redis_restart_is_recorded(
    server: LocalRedis, sim_app: Any
) -> None:
    """Redis SIGKILLed while a create is in flight and its task cancelled: once Redis is back
    (AOF) the answer is written under the same lease, and the request is never created again."""
    settings = Settings(redis_url=server.url, key_prefix="gq-outage-restart")
    transport = HeldAnswers(sim_app)
    async with AsyncClient(settings) as producer:
        rid = await producer.submit({"model": MODEL, "prompt": "a lantern"})
    client = redis.asyncio.Redis.from_url(server.url, decode_responses=True)
    rt = _runtime(settings, client, transport, durability := SeenDown())
    task = asyncio.create_task(run_submit(rt, rid, 0))
    await transport.created.wait()
    server.kill()
    await _cancelled(task)
    transport.release.set()
    # Redis comes back only once the write has met it down (and is retrying).
    await asyncio.wait_for(durability.failed.wait(), 30)  # a bound for a broken build
    await asyncio.to_thread(server.start)
    await rt.close()
    async with AsyncClient(settings) as producer:
        view = await producer.get(rid)
        assert view.upstream_id == sim_app.state.sim.jobs()[0]["id"]
        assert view.status in ("queued", "in_progress") and view.ambiguous_submits == 0
    await _rerun_submit(settings, transport, sim_app, rid)


async def test_a_retried_write_that_had_landed_is_not_a_superseded_job(
    server: LocalRedis, sim_app: Any
) -> None:
    """The write of an id whose first try went through (its reply lost with the connection)
    counts no superseded job and leaves an earlier attempt's possibly-billed count alone."""
    settings = Settings(redis_url=server.url, key_prefix="gq-outage-replay")
    transport = HeldAnswers(sim_app)
    transport.release.set()
    async with AsyncClient(settings) as producer:
        rid = await producer.submit({"model": MODEL, "prompt": "a comet"})
        client = redis.asyncio.Redis.from_url(server.url, decode_responses=True)
        rt = _runtime(settings, client, transport)
        before = await read_full(client, settings.keys, rid)
        await run_submit(rt, rid, 0)
        key = settings.keys.record(rid)
        # As if an earlier attempt of this request had died mid-POST (counted at takeover).
        await client.hset(key, Field.POSSIBLY_BILLED, "1")
        after = await client.hgetall(key)
        job = await rt.upstream.retrieve(after[Field.UPSTREAM_ID])
        await _record_submitted(rt, before, int(after[Field.SUBMIT_SEQ]), job)
        rec = await client.hgetall(key)
        assert rec[Field.POSSIBLY_BILLED] == "1" and "extra_ids" not in rec
        assert rt.metrics.superseded_jobs._value.get() == 0
        assert (await producer.stats()).requests_by_status.get("submitting", 0) == 0
        await rt.close()


async def test_a_probe_whose_resume_hangs_still_records_its_job(
    server: LocalRedis, sim_app: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The probe create's resume of a pause is bounded: a Redis call that never answers (a
    half-open connection) does not hold the write of the job's id, nor the worker's shutdown."""
    settings = Settings(redis_url=server.url, key_prefix="gq-outage-probe")
    transport = HeldAnswers(sim_app)
    transport.release.set()
    monkeypatch.setattr("genqueue.worker.tasks.WRITE_TRY_S", 0.2)
    async with AsyncClient(settings) as producer:
        rid = await producer.submit({"model": MODEL, "prompt": "a heron"})
        client = redis.asyncio.Redis.from_url(server.url, decode_responses=True)
        rt = _runtime(settings, client, transport)
        await rt.pause.pause(reason="test", code=503, duration_ms=1)
        await asyncio.sleep(0.05)  # past the pause: half-open, the next create is its probe
        resumes = 0

        async def never_answers() -> bool:
            nonlocal resumes
            resumes += 1
            await asyncio.Event().wait()
            return True

        monkeypatch.setattr(rt.pause, "resume", never_answers)
        await asyncio.wait_for(run_submit(rt, rid, 0), 30)  # a bound for a broken build
        await rt.close()
        view = await producer.get(rid)
        assert resumes == 1
        assert view.upstream_id == sim_app.state.sim.jobs()[0]["id"]
        assert transport.posts == 1
