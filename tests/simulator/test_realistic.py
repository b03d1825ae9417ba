"""The simulator is no kinder than Together by default: no idempotency, x-ratelimit-* on every
answer, and the faults and profiles Together shows (402, 503, upstream cancel, no ``queued``,
queue waits that grow with load)."""

from __future__ import annotations

from typing import Any

from genqueue.simulator import FaultProfile, SimConfig
from tests.simulator.conftest import MakeClient

MINIMAX = "minimax/video-01-director"
EXACT = {"queue_sigma": 0.0, "duration_sigma": 0.0, "failure_share": 0.0}


async def _create(c: Any, key: str | None = None) -> Any:
    headers = {"Idempotency-Key": key} if key else {}
    return await c.http.post("/v2/videos", json={"model": MINIMAX, "prompt": "p"}, headers=headers)


async def test_idempotency_key_is_ignored_by_default(make_client: MakeClient) -> None:
    """A repeated Idempotency-Key creates (and bills) a new job, and is counted as a duplicate."""
    assert SimConfig().honour_idempotency is False
    c = make_client()
    first, second = (await _create(c, "k")).json(), (await _create(c, "k")).json()
    assert first["id"] != second["id"]
    stats = (await c.http.get("/_sim/stats")).json()
    assert (stats["jobs_created"], stats["duplicate_creations"]) == (2, 1)
    assert stats["idempotent_replays"] == 0


async def test_rate_limit_headers_on_every_answer(make_client: MakeClient) -> None:
    """Creates, retrieves and their errors carry x-ratelimit-*, never Retry-After by default."""
    c = make_client()
    created = await _create(c)
    answers = [
        created,
        await c.http.get(f"/v2/videos/{created.json()['id']}"),
        await c.http.get("/v2/videos/nope"),
        await c.http.post("/v2/videos", json={"model": "unknown/model"}),
    ]
    assert [r.status_code for r in answers] == [200, 200, 404, 400]
    for r in answers:
        assert {"x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset"} <= set(r.headers)
        assert "retry-after" not in r.headers


async def test_402_and_503_faults(make_client: MakeClient) -> None:
    """payment_required answers 402 to creates; overloaded answers 503 (no Retry-After) to
    creates and retrieves; neither creates a job."""
    c = make_client(faults=FaultProfile(payment_required_share=1.0))
    r = await _create(c)
    assert r.status_code == 402 and r.json()["error"]["type"] == "insufficient_quota"
    c = make_client(faults=FaultProfile(overloaded_share=1.0))
    r = await _create(c)
    assert r.status_code == 503 and "retry-after" not in r.headers
    assert r.json()["error"]["type"] == "service_unavailable"
    profile = c.sim.config.profile(MINIMAX)
    assert profile is not None
    job, _ = c.sim.create(MINIMAX, profile, {})
    assert (await c.http.get(f"/v2/videos/{job.id}")).status_code == 503
    stats = (await c.http.get("/_sim/stats")).json()
    assert stats["jobs_created"] == 1 and stats["faults_injected"] == {"overloaded": 2}


async def test_upstream_cancel_fault_ends_cancelled_unbilled(make_client: MakeClient) -> None:
    """upstream_cancel creates the job, which then ends ``cancelled`` with an error and no cost."""
    c = make_client(faults=FaultProfile(upstream_cancel_share=1.0), **EXACT)
    job = (await _create(c)).json()
    assert job["status"] == "queued"
    c.clock.advance(10_000)
    c.app.state.faults = None
    done = (await c.http.get(f"/v2/videos/{job['id']}")).json()
    assert done["status"] == "cancelled" and done["outputs"] is None
    assert done["error"]["code"] == "cancelled" and done["completed_at"] is not None
    stats = (await c.http.get("/_sim/stats")).json()
    assert (stats["cancelled"], stats["completed"], stats["billed_micro_usd"]) == (1, 0, 0)


async def test_profile_that_never_reports_queued(make_client: MakeClient) -> None:
    """With report_queued off a job is in_progress from its creation (the spec's enum)."""
    c = make_client(report_queued=False, queue_median_s=30, **EXACT)
    job = (await _create(c)).json()
    assert job["status"] == "in_progress"
    c.clock.advance(1)
    assert (await c.http.get(f"/v2/videos/{job['id']}")).json()["status"] == "in_progress"


async def test_queue_wait_grows_with_load_over_capacity(make_client: MakeClient) -> None:
    """With a capacity, each job beyond it waits longer before generation; without, never."""
    loaded = make_client(capacity=2, queue_median_s=5, **EXACT)
    flat = make_client(queue_median_s=5, **EXACT)
    waits: dict[str, list[float]] = {"loaded": [], "flat": []}
    for name, c in (("loaded", loaded), ("flat", flat)):
        for _ in range(5):
            await _create(c)
        waits[name] = [j["started_at"] - j["created_at"] for j in c.sim.jobs()]
    assert waits["flat"] == [5.0] * 5
    assert waits["loaded"][:2] == [5.0, 5.0]
    assert waits["loaded"][2] < waits["loaded"][3] < waits["loaded"][4]
