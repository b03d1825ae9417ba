"""Workers in-process against the simulator (httpx ASGI transport): the whole request path."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from typing import Any

import httpx
import pytest
import redis.asyncio
import structlog
from structlog.testing import capture_logs

from genqueue.producer.client import AsyncClient
from genqueue.producer.keys import Field
from genqueue.producer.settings import Settings
from genqueue.simulator import DEFAULT_MODELS, SimConfig, create_app
from genqueue.worker.reconciler import reconcile_once
from genqueue.worker.runtime import Runtime
from genqueue.worker.tasks import run_poll, run_submit
from tests.conftest import FAST_SCALE, StartWorker, worker_config
from tests.faults import FaultTransport, FirstAnswers, error, is_create, is_retrieve

MODEL = "minimax/video-01-director"


def req(i: int = 0) -> dict[str, Any]:
    return {"model": MODEL, "prompt": f"a paper boat #{i}"}


async def finish_all(client: AsyncClient, ids: list[str], timeout_s: float = 30) -> list[Any]:
    return list(await asyncio.gather(*(client.wait(i, timeout_s) for i in ids)))


@pytest.mark.parametrize("shape", ["sdk", "legacy"])
async def test_videos_complete_with_cost_and_timings(
    client: AsyncClient, start_worker: StartWorker, shape: str
) -> None:
    """Videos go from submit to completed with URL, cost and timings, for both job shapes."""
    app = create_app(SimConfig(time_scale=0.001, seed=3, failure_share=0.2, shape=shape))  # type: ignore[arg-type]
    await start_worker(transport=httpx.ASGITransport(app=app))
    ids = [await client.submit(req(i)) for i in range(30)]
    views = await finish_all(client, ids)
    truth = app.state.sim.stats()
    assert truth["jobs_created"] == 30 and truth["duplicate_creations"] == 0
    done = [v for v in views if v.status == "completed"]
    assert len(done) == truth["completed"] and len(views) - len(done) == truth["failed"]
    assert sum(v.cost_micro_usd or 0 for v in views) == truth["billed_micro_usd"]
    for v in done:
        assert v.video_url and "/shrt/" in v.video_url and v.polls >= 1  # a short link
        assert v.upstream_done_at and v.upstream_created_at and v.detection_lag_s is not None
        # Only the docs' older shape tells when generation started (claimed_at).
        assert (v.upstream_started_at is not None) == (shape == "legacy")
    for v in views:
        if v.status == "failed":
            assert v.error
    st = await client.stats()
    assert st.inflight == 0 and st.active_upstream == 0
    assert st.finished_by_outcome == {"completed": truth["completed"], "failed": truth["failed"]}


async def test_rejected_create_fails_only_that_request(
    client: AsyncClient, start_worker: StartWorker, sim_app: Any
) -> None:
    """A 400 on create fails that request with the upstream's message; others complete."""
    await start_worker()
    bad = await client.submit({"model": "nobody/unknown-model", "prompt": "x"})
    good = await client.submit(req())
    b, g = await finish_all(client, [bad, good])
    assert b.status == "failed" and "model" in (b.error or "").lower()
    assert g.status == "completed"


async def test_out_of_credits_pauses_creates_for_everyone(
    client: AsyncClient, start_worker: StartWorker, sim_app: Any, aredis: redis.asyncio.Redis
) -> None:
    """A 402 pauses all creates (shown in stats); requests wait instead of failing, then finish."""
    state = {"credit": False}

    def rule(r: httpx.Request) -> httpx.Response | None:
        return None if state["credit"] or not is_create(r) else error(402, "out of credits")

    transport = FaultTransport(sim_app, rule)
    await start_worker(transport=transport, pause_s=60.0)
    ids = [await client.submit(req(i)) for i in range(5)]
    for _ in range(200):
        if (await client.stats()).paused:
            break
        await asyncio.sleep(0.01)
    posts_when_paused = sum(1 for m, _ in transport.seen if m == "POST")
    await asyncio.sleep(0.3)
    st = await client.stats()
    assert st.paused.get("code") == "402"
    assert st.requests_by_status["pending"] == 5 and not st.finished
    assert sum(1 for m, _ in transport.seen if m == "POST") == posts_when_paused
    state["credit"] = True
    await aredis.delete(client.settings.keys.pause)
    queue = client.settings.keys.queue
    for job_id in await aredis.zrange(queue, 0, -1):  # fast-forward the deferred retries
        await aredis.zadd(queue, {job_id: 1}, xx=True)  # arq treats a score of 0 as "none"
    # Moving scores by hand bypasses the wake path arming takes (lua/_wake.lua): wake one.
    await aredis.rpush(client.settings.keys.queue_wake.wake, "1")
    views = await finish_all(client, ids)
    assert [v.status for v in views] == ["completed"] * 5


async def test_rate_limited_create_is_retried_after_retry_after(
    client: AsyncClient, start_worker: StartWorker, sim_app: Any
) -> None:
    """A 429 on create is retried later (honouring Retry-After) and creates the video once."""
    slow_down = [error(429, "slow down", {"retry-after-ms": "50"}) for _ in range(2)]
    await start_worker(transport=FaultTransport(sim_app, FirstAnswers(is_create, *slow_down)))
    rid = await client.submit(req())
    view = await client.wait(rid, 30)
    assert view.status == "completed" and view.attempts == 3 and view.ambiguous_submits == 0
    assert sim_app.state.sim.stats()["jobs_created"] == 1


async def test_poll_errors_never_fail_a_billed_job(
    client: AsyncClient, start_worker: StartWorker, sim_app: Any
) -> None:
    """5xx, timeouts and garbage on polls are retried; the job still completes."""
    answers = [
        a for _ in range(2) for a in (error(500), httpx.Response(200, content=b"{oops"), error(503))
    ]
    rule = FirstAnswers(is_retrieve, *answers)
    await start_worker(transport=FaultTransport(sim_app, rule))
    view = await client.wait(await client.submit(req()), 30)
    assert view.status == "completed" and view.cost_micro_usd == 280_000
    assert rule.calls > 6


async def test_a_404_after_other_poll_errors_does_not_fail_the_job(
    client: AsyncClient, start_worker: StartWorker, sim_app: Any
) -> None:
    """Only 404s in a row count towards "the job is gone": 5xx, 5xx, 404 keeps polling."""
    rule = FirstAnswers(is_retrieve, error(503), error(500), error(404))
    await start_worker(transport=FaultTransport(sim_app, rule))
    view = await client.wait(await client.submit(req()), 30)
    assert view.status == "completed" and view.cost_micro_usd == 280_000


async def test_404s_in_a_row_fail_the_job_even_with_errors_between(
    client: AsyncClient, start_worker: StartWorker, sim_app: Any
) -> None:
    """Three 404s with no answer that found the job between them (a 5xx is none) end it as
    failed; the streak counts 404s only."""

    seen = {"n": 0}

    def rule(r: httpx.Request) -> httpx.Response | None:
        if is_retrieve(r):
            seen["n"] += 1
            return error(404) if seen["n"] % 2 else error(503)
        return None

    await start_worker(transport=FaultTransport(sim_app, rule))
    view = await client.wait(await client.submit(req()), 30)
    assert view.status == "failed" and "no longer knows" in (view.error or "")
    assert seen["n"] == 5  # 404, 503, 404, 503, 404


@pytest.mark.parametrize("honour", [True, False], ids=["idem-honoured", "idem-ignored"])
async def test_ambiguous_create_timeout_resubmits_with_same_key(
    client: AsyncClient, start_worker: StartWorker, honour: bool
) -> None:
    """A create whose answer is lost is resubmitted with the same Idempotency-Key: one video
    when the upstream honours the key; against Together (which ignores it) a second video is
    bought, and the request records the one it holds."""
    sim_app = create_app(
        SimConfig(time_scale=FAST_SCALE, seed=7, failure_share=0.0, honour_idempotency=honour)
    )
    calls = {"n": 0}

    class LoseFirstAnswer(FaultTransport):
        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            response = await super().handle_async_request(request)
            if is_create(request):
                calls["n"] += 1
                if calls["n"] == 1:  # the upstream created it, but we never hear back
                    raise httpx.ReadTimeout("lost answer", request=request)
            return response

    await start_worker(transport=LoseFirstAnswer(sim_app, lambda r: None))
    view = await client.wait(await client.submit(req()), 30)
    truth = sim_app.state.sim.stats()
    assert view.status == "completed" and view.ambiguous_submits == 1
    if honour:
        assert truth["jobs_created"] == 1 and truth["idempotent_replays"] == 1
    else:
        assert (truth["jobs_created"], truth["duplicate_creations"]) == (2, 1)
        assert view.cost_micro_usd == DEFAULT_MODELS[req()["model"]].cost_micro_usd


async def test_cancel_in_progress_tracks_cost_to_the_end(
    client: AsyncClient, start_worker: StartWorker, settings: Settings
) -> None:
    """Cancelling a running video shows cancelled at once and still records its cost."""
    app = create_app(SimConfig(time_scale=0.005, seed=1, failure_share=0.0))
    await start_worker(transport=httpx.ASGITransport(app=app), time_scale=0.005)
    rid = await client.submit(req())
    for _ in range(500):
        if (await client.get(rid)).upstream_id:
            break
        await asyncio.sleep(0.01)
    assert await client.cancel(rid) == "cancelled"
    view = await client.wait(rid, 1)
    assert view.status == "cancelled" and view.tracking
    for _ in range(1000):
        view = await client.get(rid)
        if not view.tracking:
            break
        await asyncio.sleep(0.02)
    assert view.status == "cancelled" and not view.tracking
    assert view.cost_micro_usd == app.state.sim.stats()["billed_micro_usd"] == 280_000
    assert (await client.stats()).cost_micro_usd == {MODEL: 280_000}


async def test_duplicate_and_stale_tasks_are_harmless(
    client: AsyncClient, settings: Settings, sim_app: Any, aredis: redis.asyncio.Redis
) -> None:
    """Re-running a finished step (same or old seq) makes no upstream call and no change."""
    transport = FaultTransport(sim_app, lambda r: None)
    rt = Runtime(
        config=worker_config(settings),
        redis=aredis,
        upstream=__import__("genqueue.worker.upstream", fromlist=["UpstreamClient"]).UpstreamClient(
            base_url="http://sim", api_key="k", transport=transport
        ),
    )
    rid = await client.submit(req())
    await run_submit(rt, rid, 0)
    await run_submit(rt, rid, 0)  # duplicate of a step that already ran
    assert [m for m, _ in transport.seen] == ["POST"]
    rec = await aredis.hgetall(settings.keys.record(rid))
    seq = int(rec[Field.SEQ])
    await run_poll(rt, rid, seq - 1)  # a superseded timer
    assert [m for m, _ in transport.seen] == ["POST"]
    assert await aredis.hgetall(settings.keys.record(rid)) == rec
    assert await aredis.exists(f"arq:job:poll:{rid}:{seq}")
    await rt.upstream.aclose()


async def test_upstream_id_is_recorded_even_if_the_task_is_cancelled(
    client: AsyncClient, settings: Settings, sim_app: Any, aredis: redis.asyncio.Redis
) -> None:
    """Once create has answered, cancelling the task cannot lose the upstream id (rule 3)."""
    from genqueue.worker.upstream import UpstreamClient

    task_box: dict[str, asyncio.Task[None]] = {}

    def cancel_now(record: Any) -> None:
        if record.operation == "create":
            task_box["t"].cancel()  # lands on the next await: recording the id

    upstream = UpstreamClient(
        base_url="http://sim",
        api_key="k",
        transport=httpx.ASGITransport(app=sim_app),
        on_call=cancel_now,
    )
    rt = Runtime(config=worker_config(settings), redis=aredis, upstream=upstream)
    rid = await client.submit(req())
    task_box["t"] = asyncio.create_task(run_submit(rt, rid, 0))
    with contextlib.suppress(asyncio.CancelledError):
        await task_box["t"]
    assert task_box["t"].cancelled()
    for _ in range(100):
        if await aredis.hget(settings.keys.record(rid), Field.UPSTREAM_ID):
            break
        await asyncio.sleep(0.01)
    view = await client.get(rid)
    assert view.upstream_id == sim_app.state.sim.jobs()[0]["id"]
    assert view.status in ("queued", "in_progress")
    await upstream.aclose()


async def test_reconciler_rearms_lost_timers(
    client: AsyncClient, start_worker: StartWorker, settings: Settings, aredis: redis.asyncio.Redis
) -> None:
    """Timers deleted from under live requests are re-armed and every request finishes."""
    ids = [await client.submit(req(i)) for i in range(10)]
    await aredis.delete(settings.keys.queue)
    for i in ids:
        await aredis.delete(f"arq:job:submit:{i}:0")
    from genqueue.worker.upstream import UpstreamClient

    rt = Runtime(
        config=worker_config(settings, reconcile_grace_s=0.0),
        redis=aredis,
        upstream=UpstreamClient(base_url="http://sim", api_key="k"),
    )
    assert await reconcile_once(rt) == 10
    assert await reconcile_once(rt) == 0  # armed already: nothing counted twice
    await rt.upstream.aclose()
    await start_worker()
    views = await finish_all(client, ids)
    assert {v.status for v in views} == {"completed"}


async def test_timer_from_a_newer_schema_is_left_alone(
    client: AsyncClient, settings: Settings, aredis: redis.asyncio.Redis
) -> None:
    """A task payload with a newer schema version does nothing (rule 12)."""
    from genqueue.worker.app import submit

    rid = await client.submit(req())
    before = await aredis.hgetall(settings.keys.record(rid))
    with capture_logs() as logs:
        await submit({}, rid, 0, 99)
    assert await aredis.hgetall(settings.keys.record(rid)) == before
    assert any(e["event"] == "timer_from_newer_version" for e in logs)


async def test_logs_bind_ids_and_never_show_the_key(
    client: AsyncClient, settings: Settings, sim_app: Any, aredis: redis.asyncio.Redis
) -> None:
    """Task logs carry request and upstream ids and never the API key."""
    from genqueue.worker.upstream import UpstreamClient

    secret = "sk-very-secret-key-123"
    upstream = UpstreamClient(
        base_url="http://sim", api_key=secret, transport=httpx.ASGITransport(app=sim_app)
    )
    rt = Runtime(config=worker_config(settings, api_key=secret), redis=aredis, upstream=upstream)
    rid = await client.submit(req())
    with capture_logs(processors=[structlog.contextvars.merge_contextvars]) as logs:
        await run_submit(rt, rid, 0)
    created = [e for e in logs if e["event"] == "upstream_job_created"]
    assert created and created[0]["request_id"] == rid and created[0]["upstream_id"]
    assert secret not in repr(logs)
    await upstream.aclose()


def test_worker_config_is_a_plain_dataclass() -> None:
    """Test configs replace fields without surprises."""
    assert dataclasses.is_dataclass(worker_config(Settings()))


async def test_metrics_count_calls_polls_and_latency(
    client: AsyncClient, settings: Settings, sim_app: Any, aredis: redis.asyncio.Redis
) -> None:
    """A finished video shows in the per-process metrics: calls, polls, latency, lag."""
    from prometheus_client import generate_latest

    from genqueue.worker.metrics import WorkerMetrics
    from genqueue.worker.upstream import UpstreamClient

    metrics = WorkerMetrics()
    upstream = UpstreamClient(
        base_url="http://sim",
        api_key="k",
        transport=httpx.ASGITransport(app=sim_app),
        on_call=metrics.observe_call,
    )
    rt = Runtime(config=worker_config(settings), redis=aredis, upstream=upstream, metrics=metrics)
    rid = await client.submit(req())
    await run_submit(rt, rid, 0)
    for _ in range(200):
        rec = await aredis.hgetall(settings.keys.record(rid))
        if rec[Field.STATUS] == "completed":
            break
        await asyncio.sleep(0.01)
        await run_poll(rt, rid, int(rec[Field.SEQ]))
    await upstream.aclose()
    text = generate_latest(metrics.registry).decode()
    polls = int(rec[Field.POLLS])
    assert polls >= 1
    assert f'genqueue_polls_total{{model="{MODEL}"}} {float(polls)}' in text
    assert 'genqueue_upstream_requests_total{code="200",operation="create"} 1.0' in text
    assert (
        f'genqueue_upstream_requests_total{{code="200",operation="retrieve"}} {float(polls)}'
        in text
    )
    assert f'genqueue_request_duration_seconds_count{{model="{MODEL}",phase="total"}} 1.0' in text
    assert "genqueue_detection_lag_seconds_count 1.0" in text


async def test_worker_refuses_a_redis_that_may_evict(
    settings: Settings, aredis: redis.asyncio.Redis
) -> None:
    """Workers refuse to start against a Redis whose maxmemory-policy is not noeviction."""
    from genqueue.worker.runtime import UnsafeRedis

    await aredis.config_set("maxmemory-policy", "allkeys-lru")
    try:
        with pytest.raises(UnsafeRedis, match="noeviction"):
            await Runtime.start(worker_config(settings))
    finally:
        await aredis.config_set("maxmemory-policy", "noeviction")


async def test_reconciler_grace_widens_when_the_queue_lags(
    client: AsyncClient, settings: Settings, aredis: redis.asyncio.Redis
) -> None:
    """Overdue checks are left alone while the queue itself is that far behind."""
    from genqueue.worker.upstream import UpstreamClient

    rid = await client.submit(req())
    await aredis.delete(settings.keys.queue, f"arq:job:submit:{rid}:0")
    now_ms = int(float((await aredis.time())[0]) * 1000)
    await aredis.zadd(settings.keys.inflight, {rid: now_ms - 5_000})
    await aredis.zadd(settings.keys.queue, {"some-busy-job": now_ms - 60_000})
    rt = Runtime(
        config=worker_config(settings, reconcile_grace_s=0.0),
        redis=aredis,
        upstream=UpstreamClient(base_url="http://sim", api_key="k"),
    )
    assert await reconcile_once(rt) == 0
    await aredis.zrem(settings.keys.queue, "some-busy-job")
    assert await reconcile_once(rt) == 1
    await rt.upstream.aclose()
