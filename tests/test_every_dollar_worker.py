"""Every dollar recorded (issue 19), through a real worker against the in-process simulator:
an odd cost keeps its completed video, and a superseded job is checked to its end."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest
import redis.asyncio

from genqueue.producer.client import AsyncClient
from genqueue.producer.keys import Tag
from genqueue.producer.scripts import AsyncScripts
from genqueue.producer.settings import Settings
from genqueue.simulator import SimConfig, create_app
from tests.conftest import StartWorker, begin_submit, submitted
from tests.faults import FaultTransport, FirstAnswers, error, is_retrieve

MODEL = "minimax/video-01-director"


class OddCost(httpx.AsyncBaseTransport):
    """The simulator, with every completed job's cost replaced by ``cost``."""

    def __init__(self, app: Any, cost: object) -> None:
        self.inner = httpx.ASGITransport(app=app)
        self.cost = cost

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        if request.method != "GET" or not request.url.path.startswith("/v2/videos/"):
            return response
        job = json.loads(await response.aread())
        if job.get("status") == "completed":
            job["outputs"]["cost"] = self.cost
        return httpx.Response(response.status_code, json=job)


async def test_completed_video_with_an_odd_cost_is_completed_with_cost_unknown(
    client: AsyncClient, start_worker: StartWorker
) -> None:
    """A completed job whose cost is not a number ends completed with its URL at once (no
    retries to the deadline), its cost unknown on the record and in stats, never zero."""
    app = create_app(SimConfig(time_scale=0.001, seed=3, failure_share=0.0))
    await start_worker(transport=OddCost(app, "a lot"))
    rid = await client.submit({"model": MODEL, "prompt": "x"})
    view = await client.wait(rid, timeout_s=30)
    assert view.status == "completed" and view.video_url
    assert view.cost_unknown and view.cost_micro_usd is None
    st = await client.stats()
    assert st.cost_unknown == {MODEL: 1} and st.total_cost_micro_usd == 0


async def _superseded_run(
    client: AsyncClient,
    start_worker: StartWorker,
    settings: Settings,
    aredis: redis.asyncio.Redis,
    not_founds: int = 0,
) -> tuple[Any, Any, dict[str, Any], Any]:
    """A request whose first attempt's answer came late (its job exists upstream, superseded),
    run by a worker whose first ``not_founds`` checks of that job answer 404.
    Returns the request's view, the late job, the simulator's ground truth and the stats."""
    app = create_app(SimConfig(time_scale=0.001, seed=5, failure_share=0.0))
    scripts = AsyncScripts(aredis)
    rid = await client.submit({"model": MODEL, "prompt": "x"})
    # Two attempts whose leases ran out (workers that stalled mid-POST) ...
    for _ in range(2):
        call = begin_submit(settings, rid, seq=0, lease_ms=1).call(settings)
        assert (await scripts.run(call)).tag is Tag.OK
        await asyncio.sleep(0.01)
    # ... the first of which is answered now, late: its job exists upstream.
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://sim",
        headers={"Authorization": "Bearer test-key"},
    ) as http:
        late = (await http.post("/v2/videos", json={"model": MODEL, "prompt": "x"})).json()
    reply = await scripts.run(submitted(rid, 1, late["id"]).call(settings))
    assert reply.tag is Tag.STALE
    of_late = FirstAnswers(
        lambda r: is_retrieve(r) and r.url.path.endswith(late["id"]),
        *[error(404) for _ in range(not_founds)],
    )
    await start_worker(transport=FaultTransport(app, of_late), not_found_limit=3)
    await client.wait(rid, timeout_s=30)
    for _ in range(300):
        st = await client.stats()
        if st.inflight == 0 and st.superseded_running == 0:
            break
        await asyncio.sleep(0.05)
    return await client.get(rid), late, app.state.sim.stats(), st


@pytest.mark.parametrize("not_founds", [0, 2], ids=["answered", "two-404s-first"])
async def test_superseded_job_is_checked_by_the_worker_and_its_cost_recorded(
    client: AsyncClient,
    start_worker: StartWorker,
    settings: Settings,
    aredis: redis.asyncio.Redis,
    not_founds: int,
) -> None:
    """A job created by an attempt whose answer came after another attempt went out is
    checked by the record's poll chain once its own job ended, and its cost recorded once,
    even when 404s short of the limit came first: the records hold every billed dollar."""
    view, late, truth, st = await _superseded_run(
        client, start_worker, settings, aredis, not_founds
    )
    assert view.status == "completed" and view.upstream_id != late["id"]
    assert view.superseded_pending == () and view.superseded_cost_micro_usd
    assert truth["jobs_created"] == 2
    recorded = (view.cost_micro_usd or 0) + view.superseded_cost_micro_usd
    assert recorded == truth["billed_micro_usd"] == st.total_cost_micro_usd
    assert st.active_upstream == 0


async def test_superseded_job_404_to_the_limit_is_gone_without_a_cost(
    client: AsyncClient, start_worker: StartWorker, settings: Settings, aredis: redis.asyncio.Redis
) -> None:
    """A superseded job the upstream answers 404 for ``not_found_limit`` times in a row is
    taken as gone: it leaves the list and frees its slot, with no cost recorded for it."""
    view, late, truth, st = await _superseded_run(client, start_worker, settings, aredis, 3)
    assert view.superseded_pending == () and view.superseded_cost_micro_usd is None
    assert late["id"] in view.upstream_ids and truth["jobs_created"] == 2
    assert st.superseded_running == 0 and st.active_upstream == 0
