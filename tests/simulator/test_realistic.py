"""The simulator is no kinder than Together by default: no idempotency, x-ratelimit-* on every
answer, and the faults and profiles Together shows (402, 503, upstream cancel, no ``queued``,
queue waits that grow with load)."""

from __future__ import annotations

from typing import Any

import pytest

from genqueue.simulator import FaultProfile, SimConfig, parse_faults
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


def test_realistic_settings_from_env() -> None:
    """The new profiles are set from GENQUEUE_SIM_* like the others; bad TTLs are refused."""
    cfg = SimConfig.from_env(
        {
            "GENQUEUE_SIM_HONOUR_IDEMPOTENCY": "1",
            "GENQUEUE_SIM_REPORT_QUEUED": "0",
            "GENQUEUE_SIM_SIGNED_URL_TTL_S": "60",
            "GENQUEUE_SIM_SHORT_LINK_TTL_S": "600",
            "GENQUEUE_SIM_CAPACITY": "8",
        }
    )
    assert (cfg.honour_idempotency, cfg.report_queued, cfg.capacity) == (True, False, 8)
    assert (cfg.signed_url_ttl_s, cfg.short_link_ttl_s) == (60.0, 600.0)
    with pytest.raises(ValueError, match="signed_url_ttl_s"):
        SimConfig(signed_url_ttl_s=600, short_link_ttl_s=60)
    with pytest.raises(ValueError, match="capacity"):
        SimConfig(capacity=0)


def test_new_faults_parse_and_round_trip() -> None:
    """The new fault keys parse from a spec (send_retry_after as a boolean) and round-trip."""
    p = parse_faults(
        "none,send_retry_after=true,payment_required_share=0.1,upstream_cancel_share=0.2"
    )
    assert (p.send_retry_after, p.payment_required_share, p.upstream_cancel_share) == (
        True,
        0.1,
        0.2,
    )
    assert parse_faults(p.to_spec()) == p
    with pytest.raises(ValueError, match="true or false"):
        parse_faults("send_retry_after=maybe")


async def test_send_retry_after_profile_adds_the_headers(make_client: MakeClient) -> None:
    """A profile asking for Retry-After gets it (and retry-after-ms) on its 429s."""
    c = make_client(faults=FaultProfile(rate_limit_share=1.0, send_retry_after=True))
    r = await _create(c)
    assert r.status_code == 429 and r.headers["retry-after"] == "1"
    assert r.headers["retry-after-ms"] == "1000" and r.headers["x-ratelimit-reset"] == "1.000"


async def test_queue_wait_shifts_at_the_configured_time(make_client: MakeClient) -> None:
    """The shift workload: jobs created ``queue_shift_at_s`` after the first wait
    ``queue_shift_factor`` times as long in the queue; earlier ones are unchanged."""
    c = make_client(queue_median_s=10, queue_shift_at_s=100, queue_shift_factor=2.0, **EXACT)
    for _ in range(2):
        await _create(c)
        c.clock.now += 60
    await _create(c)
    waits = [j["started_at"] - j["created_at"] for j in c.sim.jobs()]
    assert waits == [10.0, 10.0, 20.0]
    with pytest.raises(ValueError, match="queue_shift_factor"):
        SimConfig(queue_shift_factor=0)
