"""Contract tests: every answer the simulator sends on ``/v2/videos*`` and every request the
worker sends validate against Together's OpenAPI document (exceptions: ``spec.EXCEPTIONS``)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from genqueue.producer.client import AsyncClient
from genqueue.producer.models import parse_request
from genqueue.simulator import FaultProfile, SimConfig, create_app
from genqueue.worker.upstream import UpstreamClient
from tests.conftest import StartWorker
from tests.contract.spec import (
    EXCEPTIONS,
    SpecRequest,
    contract,
    raw_spec,
    validate_exchange,
)
from tests.simulator.conftest import FakeClock

MINIMAX = "minimax/video-01-director"
KLING = "kwaivgI/kling-2.1-master"
#: Statuses for which the spec documents an answer (others: only the request is checked).
SPEC_STATUSES = {200, 400, 404}

#: Requests as genqueue users write them, spanning every CreateVideoBody field.
REQUESTS: list[dict[str, Any]] = [
    {"model": MINIMAX, "prompt": "a red fox in snow"},
    {
        "model": KLING,
        "media": {"frame_images": [{"input_image": "https://example.com/a.png"}]},
    },
    {
        "model": MINIMAX,
        "prompt": "p" * 32_000,
        "negative_prompt": "blur",
        "width": 1366,
        "height": 768,
        "seconds": 6,
        "fps": 24,
        "steps": 50,
        "seed": -7,
        "guidance_scale": 7.5,
        "output_format": "WEBM",
        "output_quality": 20,
        "ratio": "16:9",
        "resolution": "1080p",
        "generate_audio": True,
        "media": {
            "frame_images": [
                {"input_image": "a", "frame": "last"},
                {"input_image": "b", "frame": 3},
            ],
            "frame_videos": [{"video": "v"}],
            "reference_images": ["r"],
            "reference_videos": [{"video": "rv"}],
            "source_video": {"video": "s"},
            "audio_inputs": ["a.mp3", {"audio": "b.mp3"}],
        },
    },
    {
        "model": KLING,
        "frame_images": [{"input_image": "a", "frame": 0}],
        "reference_images": ["https://example.com/r.png"],
    },
    {"model": MINIMAX, "prompt": "x", "extra_body": {"camera": {"motion": "dolly"}}},
]


class Recorder(httpx.AsyncBaseTransport):
    """Forwards to the simulator and keeps every ``/v2/videos*`` exchange."""

    def __init__(self, app: Any) -> None:
        self.inner = httpx.ASGITransport(app=app)
        self.exchanges: list[tuple[httpx.Request, httpx.Response]] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        if request.url.path.startswith("/v2/videos"):
            await response.aread()
            self.exchanges.append((request, response))
        return response


def check_all(exchanges: list[tuple[httpx.Request, httpx.Response]], **kw: Any) -> None:
    assert exchanges
    for request, response in exchanges:
        if response.status_code in SPEC_STATUSES:
            validate_exchange(request, response, **kw)
        else:
            (kw.get("api") or contract()).validate_request(SpecRequest(request))


async def _walk(config: SimConfig) -> list[tuple[httpx.Request, httpx.Response]]:
    """Create, then follow each job through queued, in_progress and its end."""
    clock = FakeClock()
    recorder = Recorder(create_app(config, clock=clock))
    auth = {"Authorization": "Bearer k"}
    async with httpx.AsyncClient(transport=recorder, base_url="http://sim", headers=auth) as c:
        ids = []
        for body in REQUESTS:
            r = await c.post("/v2/videos", json=parse_request(body).upstream_body())
            ids.append(r.json()["id"])
        for step_s in (0.0, 30.0, 100_000.0):
            clock.advance(step_s)
            for job_id in ids:
                await c.get(f"/v2/videos/{job_id}")
        await c.get("/v2/videos/no-such-job")
    return recorder.exchanges


@pytest.mark.parametrize(
    "config",
    [
        SimConfig(failure_share=0.0),
        SimConfig(failure_share=1.0),
        SimConfig(report_queued=False, failure_share=0.5),
        SimConfig(faults=FaultProfile(upstream_cancel_share=1.0)),
    ],
    ids=["completed", "failed", "never-queued", "upstream-cancelled"],
)
async def test_every_simulator_answer_follows_the_spec(config: SimConfig) -> None:
    """Each request and answer of a job's whole life validates, and the answers carry no field
    outside the spec's VideoJob."""
    exchanges = await _walk(config)
    statuses = {r.json().get("status") for _, r in exchanges if r.status_code == 200}
    assert len(statuses) >= 2
    check_all(exchanges)


async def test_each_exception_is_needed() -> None:
    """Every named exception is needed: without it, something the simulator or the worker
    sends fails the spec (so the list never outgrows the real disagreements)."""
    exchanges = await _walk(SimConfig(failure_share=0.3))
    exchanges += await _walk(SimConfig(faults=FaultProfile(upstream_cancel_share=1.0)))
    for name in EXCEPTIONS:
        with pytest.raises(Exception, match=r"(?i)invalid|not valid"):
            check_all(exchanges, api=contract(frozenset({name})))


def test_the_spec_file_is_togethers_excerpt() -> None:
    """The copy the tests use is the one described in docs (two operations, VideoJob fields)."""
    spec = raw_spec()
    assert set(spec["paths"]) == {"/videos", "/videos/{id}"}
    job = spec["components"]["schemas"]["VideoJob"]["properties"]
    assert "started_at" not in job and set(job) >= {"id", "status", "outputs", "created_at"}


async def test_worker_requests_follow_the_spec_and_extra_body_arrives_unchanged(
    client: AsyncClient, start_worker: StartWorker, sim_app: Any
) -> None:
    """Every request the worker sends (creates and retrieves) validates; a media-only request
    is created; an extra_body field reaches the simulator unchanged."""
    recorder = Recorder(sim_app)
    await start_worker(transport=recorder)
    ids = [await client.submit(body) for body in REQUESTS]
    views = [await client.wait(rid, 30) for rid in ids]
    assert [v.status for v in views] == ["completed"] * len(REQUESTS)
    check_all(recorder.exchanges)
    sim = sim_app.state.sim
    inputs = [sim.get(v.upstream_id).inputs for v in views]
    assert inputs[1] == {"media": REQUESTS[1]["media"]}
    assert inputs[4]["camera"] == {"motion": "dolly"} and "extra_body" not in inputs[4]
    assert inputs[3]["frame_images"] == REQUESTS[3]["frame_images"]


async def test_upstream_client_create_validates() -> None:
    """UpstreamClient's create of each request is a valid createVideo call."""
    recorder = Recorder(create_app(SimConfig()))
    async with UpstreamClient(base_url="http://sim", api_key="k", transport=recorder) as up:
        for body in REQUESTS:
            await up.create(parse_request(body).upstream_body(), idempotency_key="k1")
    check_all(recorder.exchanges)
