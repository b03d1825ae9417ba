"""In-process tests of the simulated Together video API (httpx ASGI transport, fake clock)."""

from __future__ import annotations

import re
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime
from decimal import Decimal
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from genqueue.simulator import DEFAULT_MODELS, SimConfig
from genqueue.simulator.lifecycle import format_usd
from genqueue.simulator.shapes import ZERO_TIME, video_bytes

MINIMAX = "minimax/video-01-director"
VEO_FAST = "google/veo-3.0-fast"
RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")

# Sigma 0 makes every lognormal draw its median: exact, readable timings.
EXACT = {"queue_sigma": 0.0, "duration_sigma": 0.0, "failure_share": 0.0}

Make = Callable[..., Any]


async def create(client: Any, model: str = MINIMAX, **extra: Any) -> dict[str, Any]:
    headers = extra.pop("headers", None)
    r = await client.http.post("/v2/videos", json={"model": model, **extra}, headers=headers)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


async def get(client: Any, job_id: str) -> dict[str, Any]:
    r = await client.http.get(f"/v2/videos/{job_id}")
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def assert_error(r: httpx.Response, status: int, param: str | None = None) -> dict[str, Any]:
    assert r.status_code == status
    err: dict[str, Any] = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert isinstance(err["message"], str) and err["message"]
    assert isinstance(err["type"], str)
    assert err["param"] == param
    return err


async def test_lifecycle_queued_in_progress_completed(make_client: Make) -> None:
    """A job is queued for queue_s, in_progress for its duration, then completed with outputs."""
    c = make_client(queue_median_s=5, duration_median_s=150, **EXACT)
    job = await create(c)
    assert job["status"] == "queued"
    c.clock.advance(4.9)
    assert (await get(c, job["id"]))["status"] == "queued"
    c.clock.advance(0.2)
    assert (await get(c, job["id"]))["status"] == "in_progress"
    c.clock.advance(149.8)
    assert (await get(c, job["id"]))["status"] == "in_progress"
    c.clock.advance(0.2)
    done = await get(c, job["id"])
    assert done["status"] == "completed"
    assert done["outputs"]["cost"] == 0.28
    assert done["outputs"]["video_url"] == f"http://sim/shrt/{job['id']}"
    assert done["completed_at"] == pytest.approx(job["created_at"] + 155)
    assert done["error"] is None


async def test_failure_share_one_fails_every_job(make_client: Make) -> None:
    """With failure_share 1.0 every job ends failed with an error, no outputs, and costs 0."""
    c = make_client(failure_share=1.0)
    ids = [(await create(c))["id"] for _ in range(5)]
    c.clock.advance(10_000)
    for job_id in ids:
        job = await get(c, job_id)
        assert job["status"] == "failed"
        assert job["outputs"] is None
        assert job["error"]["message"] and job["error"]["code"]
        assert job["completed_at"] is not None
    stats = (await c.http.get("/_sim/stats")).json()
    assert (stats["failed"], stats["completed"], stats["billed_micro_usd"]) == (5, 0, 0)
    assert all(j["cost_micro_usd"] == 0 for j in (await c.http.get("/_sim/jobs")).json())


async def test_failure_share_zero_never_fails(make_client: Make) -> None:
    """With failure_share 0 every job completes."""
    c = make_client(failure_share=0.0)
    ids = [(await create(c))["id"] for _ in range(20)]
    c.clock.advance(10_000)
    assert {(await get(c, i))["status"] for i in ids} == {"completed"}


async def test_sdk_shape_fields(make_client: Make) -> None:
    """The sdk shape has exactly VideoJob's fields (no start time: the spec has none): floats
    for times, string seconds, WxH size."""
    c = make_client(**EXACT)
    job = await create(c, width=1280, height=720, seconds="6", prompt="a cat")
    assert set(job) == {
        "id",
        "object",
        "model",
        "status",
        "created_at",
        "completed_at",
        "seconds",
        "size",
        "error",
        "outputs",
    }
    assert job["object"] == "video"
    assert job["model"] == MINIMAX
    assert job["created_at"] == c.clock.now and isinstance(job["created_at"], float)
    assert (job["completed_at"], job["outputs"]) == (None, None)
    assert (job["seconds"], job["size"]) == ("6", "1280x720")
    c.clock.advance(6)
    running = await get(c, job["id"])
    assert running["status"] == "in_progress" and "started_at" not in running
    assert running["completed_at"] is None
    default = await create(c, VEO_FAST)
    profile = DEFAULT_MODELS[VEO_FAST]
    assert (default["seconds"], default["size"]) == (profile.seconds, profile.size)


async def test_legacy_shape_fields(make_client: Make) -> None:
    """The legacy shape uses RFC 3339 strings, Go's zero time while unclaimed, info and inputs."""
    c = make_client(shape="legacy", queue_median_s=5, duration_median_s=100, **EXACT)
    job = await create(c, prompt="a cat", width=1366, height=768)
    assert job["status"] == "queued"
    assert RFC3339.match(job["created_at"])
    assert job["created_at"] == "2025-10-20T06:57:18.154804Z"
    assert job["claimed_at"] == ZERO_TIME == "0001-01-01T00:00:00Z"
    assert job["done_at"] == ZERO_TIME
    assert "outputs" not in job
    assert set(job["info"]) == {"user_id", "errors"} and job["info"]["errors"] is None
    assert job["inputs"]["prompt"] == "a cat"
    assert (job["inputs"]["width"], job["inputs"]["seconds"]) == (1366, None)
    c.clock.advance(6)
    running = await get(c, job["id"])
    assert running["status"] == "in_progress"
    assert running["claimed_at"] == "2025-10-20T06:57:23.154804Z"
    c.clock.advance(100)
    done = await get(c, job["id"])
    assert done["status"] == "completed"
    assert done["outputs"] == {"cost": 0.28, "video_url": f"http://sim/shrt/{job['id']}"}
    done_at = datetime.fromisoformat(done["done_at"]).timestamp()
    assert done_at == pytest.approx(c.clock.now - 1)


async def test_legacy_failed_reports_info_errors(make_client: Make) -> None:
    """A failed job in the legacy shape lists its error in info.errors."""
    c = make_client(shape="legacy", failure_share=1.0)
    job = await create(c)
    c.clock.advance(10_000)
    failed = await get(c, job["id"])
    assert failed["status"] == "failed"
    assert failed["info"]["errors"][0]["message"]
    assert RFC3339.match(failed["done_at"])


async def test_legacy_status_endpoint_always_legacy(make_client: Make) -> None:
    """GET /v2/videos/status?id= answers in the legacy shape even when the sdk shape is set."""
    c = make_client(shape="sdk")
    job = await create(c)
    r = await c.http.get("/v2/videos/status", params={"id": job["id"]})
    assert r.status_code == 200
    assert r.json()["id"] == job["id"] and r.json()["claimed_at"] == ZERO_TIME
    assert_error(await c.http.get("/v2/videos/status"), 400, "id")
    assert_error(await c.http.get("/v2/videos/status", params={"id": "nope"}), 404, "id")


async def _outcomes(c: Any, n: int) -> list[tuple[str, float, str]]:
    ids = [(await create(c, MINIMAX if i % 2 else VEO_FAST))["id"] for i in range(n)]
    c.clock.advance(100_000)
    out = []
    for job_id in ids:
        job = await get(c, job_id)
        out.append((job_id, job["completed_at"] - job["created_at"], job["status"]))
    return out


async def test_same_seed_same_outcomes(make_client: Make) -> None:
    """The same seed and sequence of creates gives the same ids, durations and outcomes."""
    first = await _outcomes(make_client(seed=7, failure_share=0.5), 20)
    second = await _outcomes(make_client(seed=7, failure_share=0.5), 20)
    assert first == second
    assert {status for *_, status in first} == {"completed", "failed"}


async def test_different_seed_different_outcomes(make_client: Make) -> None:
    """A different seed gives different ids, durations and outcomes."""
    a = await _outcomes(make_client(seed=1, failure_share=0.5), 20)
    b = await _outcomes(make_client(seed=2, failure_share=0.5), 20)
    assert {i for i, *_ in a}.isdisjoint({i for i, *_ in b})
    assert [d for _, d, _ in a] != [d for _, d, _ in b]
    assert [s for *_, s in a] != [s for *_, s in b]


async def test_ids_look_like_together_ids(make_client: Make) -> None:
    """Job ids are unique UUIDv7-formatted strings that sort in creation order."""
    c = make_client()
    ids = [(await create(c))["id"] for _ in range(50)]
    assert len(set(ids)) == 50
    assert ids == sorted(ids)
    for job_id in ids:
        assert str(uuid.UUID(job_id)) == job_id
        assert uuid.UUID(job_id).version == 7


async def test_idempotency_key_honoured(make_client: Make) -> None:
    """When honoured, a repeated Idempotency-Key returns the existing job without creating one."""
    c = make_client(honour_idempotency=True)
    first = await create(c, headers={"Idempotency-Key": "k1"})
    c.clock.advance(1)
    again = await create(c, headers={"Idempotency-Key": "k1"})
    assert again["id"] == first["id"]
    stats = (await c.http.get("/_sim/stats")).json()
    assert stats["jobs_created"] == 1
    assert stats["idempotent_replays"] == 1
    assert stats["duplicate_creations"] == 0
    assert stats["creations_by_idempotency_key_max"] == 1


async def test_idempotency_key_ignored_counts_duplicates(make_client: Make) -> None:
    """When not honoured, a repeated key creates a new job and counts a duplicate creation."""
    c = make_client(honour_idempotency=False)
    ids = {(await create(c, headers={"Idempotency-Key": "k1"}))["id"] for _ in range(3)}
    await create(c, headers={"Idempotency-Key": "k2"})
    await create(c)
    await create(c)
    assert len(ids) == 3
    stats = (await c.http.get("/_sim/stats")).json()
    assert stats["jobs_created"] == 6
    assert stats["duplicate_creations"] == 2
    assert stats["idempotent_replays"] == 0
    assert stats["creations_by_idempotency_key_max"] == 3
    keys = [j["idempotency_key"] for j in (await c.http.get("/_sim/jobs")).json()]
    assert keys == ["k1", "k1", "k1", "k2", None, None]


@pytest.mark.parametrize(
    ("content", "param"),
    [
        (b"not json", None),
        (b"[1, 2]", None),
        (b'{"prompt": "no model"}', "model"),
        (b'{"model": "acme/unknown-model"}', "model"),
        (b'{"model": "minimax/video-01-director", "width": "wide"}', "width"),
        (b'{"model": "minimax/video-01-director", "seconds": "five"}', "seconds"),
        (b'{"model": "minimax/video-01-director", "output_format": "GIF"}', "output_format"),
    ],
)
async def test_bad_create_is_400(make_client: Make, content: bytes, param: str | None) -> None:
    """A malformed create gets 400 with the error JSON naming the bad parameter."""
    c = make_client()
    r = await c.http.post("/v2/videos", content=content)
    err = assert_error(r, 400, param)
    assert err["type"] == "invalid_request_error"
    assert (await c.http.get("/_sim/stats")).json()["jobs_created"] == 0


async def test_unknown_model_accepted_when_configured(make_client: Make) -> None:
    """accept_unknown_models lets any model id create a job."""
    c = make_client(accept_unknown_models=True)
    job = await create(c, "acme/unknown-model")
    assert job["model"] == "acme/unknown-model"


async def test_auth(make_client: Make) -> None:
    """No bearer token is 401; with api_key set, only that key passes; otherwise any token does."""
    open_sim = make_client(api_key=None)
    assert_error(await open_sim.http.get("/v2/videos/x", headers={"Authorization": ""}), 401)
    assert (
        await open_sim.http.get("/v2/videos/x", headers={"Authorization": "Bearer z"})
    ).status_code == 404
    locked = make_client(api_key="secret")
    r = await locked.http.post("/v2/videos", json={"model": MINIMAX})
    assert assert_error(r, 401)["code"] == "invalid_api_key"
    ok = await locked.http.post(
        "/v2/videos", json={"model": MINIMAX}, headers={"Authorization": "Bearer secret"}
    )
    assert ok.status_code == 200
    stats = (await locked.http.get("/_sim/stats")).json()
    assert stats["requests"]["POST /v2/videos"] == {"401": 1, "200": 1}


async def test_404s(make_client: Make) -> None:
    """Unknown job ids and unknown paths get 404 with the error JSON."""
    c = make_client()
    assert_error(await c.http.get("/v2/videos/does-not-exist"), 404, "id")
    assert_error(await c.http.get("/v1/v2/videos/does-not-exist"), 404)
    stats = (await c.http.get("/_sim/stats")).json()
    assert stats["requests"]["GET <unmatched>"] == {"404": 1}


async def test_stats_counts_requests_and_bills_completed(make_client: Make) -> None:
    """Stats count requests by endpoint and status, and bill completed jobs only, exactly."""
    c = make_client(failure_share=0.0)
    a = await create(c, MINIMAX)
    b = await create(c, VEO_FAST)
    await c.http.post("/v2/videos", json={})
    await get(c, a["id"])
    stats = (await c.http.get("/_sim/stats")).json()
    assert (stats["in_flight"], stats["completed"], stats["billed_usd"]) == (2, 0, "0.00")
    c.clock.advance(100_000)
    await get(c, a["id"])
    await get(c, b["id"])
    await c.http.get("/v2/videos/zzz")
    stats = (await c.http.get("/_sim/stats")).json()
    assert stats["requests"] == {
        "POST /v2/videos": {"200": 2, "400": 1},
        "GET /v2/videos/{id}": {"200": 3, "404": 1},
    }
    assert (stats["jobs_created"], stats["completed"], stats["in_flight"]) == (2, 2, 0)
    assert stats["billed_micro_usd"] == 680_000
    assert stats["billed_usd"] == "0.68"
    jobs = {j["id"]: j for j in (await c.http.get("/_sim/jobs")).json()}
    assert jobs[a["id"]]["polls"] == 2 and jobs[b["id"]]["polls"] == 1
    assert sum(j["cost_micro_usd"] for j in jobs.values()) == stats["billed_micro_usd"]


async def test_files_served_after_completion(make_client: Make) -> None:
    """The video URL answers 404 until the job completes, then redirects to a signed URL
    serving a few KB of video/mp4 bytes."""
    c = make_client(failure_share=0.0)
    job = await create(c)
    assert_error(await c.http.get(f"/shrt/{job['id']}"), 404)
    c.clock.advance(100_000)
    link = (await get(c, job["id"]))["outputs"]["video_url"]
    r = await c.http.get(link, follow_redirects=True)
    assert r.status_code == 200 and r.history[0].status_code == 302
    assert r.headers["content-type"] == "video/mp4"
    assert 1_000 <= len(r.content) <= 10_000
    assert r.content[4:8] == b"ftyp"
    assert r.content == video_bytes(job["id"]) != video_bytes("other")


async def test_files_of_failed_job_are_404(make_client: Make) -> None:
    """A failed job has no file."""
    c = make_client(failure_share=1.0)
    job = await create(c)
    c.clock.advance(100_000)
    assert_error(await c.http.get(f"/shrt/{job['id']}"), 404)
    assert_error(await c.http.get(f"/_sim/files/{job['id']}.mp4"), 404)


async def test_short_link_signs_a_url_that_expires(make_client: Make) -> None:
    """Each visit of the short link answers 302 to a freshly signed URL that answers 403
    once its time is up (or when tampered with); the link itself stops working later."""
    c = make_client(failure_share=0.0, signed_url_ttl_s=60, short_link_ttl_s=50_000)
    job = await create(c)
    c.clock.advance(10_000)
    link = (await get(c, job["id"]))["outputs"]["video_url"]
    first = (await c.http.get(link)).headers["location"]
    assert (await c.http.get(first)).status_code == 200
    assert_error(await c.http.get(first.replace("sig=", "sig=0")), 403)
    c.clock.advance(61)
    assert_error(await c.http.get(first), 403)
    fresh = (await c.http.get(link)).headers["location"]
    assert fresh != first and (await c.http.get(fresh)).status_code == 200
    c.clock.advance(50_000)
    assert_error(await c.http.get(link), 404)


async def test_time_scale_scales_durations(make_client: Make) -> None:
    """time_scale multiplies queue and generation times; the outcome sequence is unchanged."""
    full = await _outcomes(make_client(seed=3, failure_share=0.3), 10)
    fast = await _outcomes(make_client(seed=3, failure_share=0.3, time_scale=0.01), 10)
    for (id_a, dur_a, st_a), (id_b, dur_b, st_b) in zip(full, fast, strict=True):
        assert (id_a, st_a) == (id_b, st_b)
        assert dur_b == pytest.approx(dur_a * 0.01)


async def test_time_scale_exact(make_client: Make) -> None:
    """With time_scale 0.01, a 5 s queue and 120 s generation take 0.05 s and 1.2 s."""
    c = make_client(time_scale=0.01, queue_median_s=5, duration_median_s=120, **EXACT)
    job = await create(c)
    c.clock.advance(0.049)
    assert (await get(c, job["id"]))["status"] == "queued"
    c.clock.advance(0.002)
    assert (await get(c, job["id"]))["status"] == "in_progress"
    c.clock.advance(1.2)
    assert (await get(c, job["id"]))["status"] == "completed"


async def test_duration_override_applies_to_all_models(make_client: Make) -> None:
    """duration_median_s/duration_sigma override every model's own distribution."""
    c = make_client(queue_median_s=1, duration_median_s=120, **EXACT)
    for model in DEFAULT_MODELS:
        job = await create(c, model)
        sim_job = c.sim.get(job["id"])
        assert sim_job.done_at - sim_job.started_at == pytest.approx(120)


async def test_reset_forgets_jobs_and_counters(make_client: Make) -> None:
    """POST /_sim/reset clears jobs and counters; the same seed then replays the same ids."""
    c = make_client()
    first = await create(c)
    r = await c.http.post("/_sim/reset")
    assert r.status_code == 200
    assert (await c.http.get(f"/v2/videos/{first['id']}")).status_code == 404
    stats = (await c.http.get("/_sim/stats")).json()
    assert stats["jobs_created"] == 0
    assert stats["requests"] == {"GET /v2/videos/{id}": {"404": 1}}
    assert (await create(c))["id"] == first["id"]
    await c.http.post("/_sim/reset", params={"seed": 99})
    assert (await create(c))["id"] != first["id"]
    assert (await c.http.get("/_sim/jobs")).json()[0]["polls"] == 0


async def test_fault_hook_wraps_api_requests(make_client: Make) -> None:
    """A fault policy can answer instead of the API or replace its answer, and both are counted."""

    async def lose_create_answers(
        endpoint: str, request: Request, call_next: Callable[[], Awaitable[Response]]
    ) -> Response:
        response = await call_next()
        if endpoint == "POST /v2/videos":
            return JSONResponse({"error": {"message": "boom"}}, status_code=500)
        if endpoint == "GET /v2/videos/{id}":
            return JSONResponse({"error": {"message": "busy"}}, status_code=503)
        return response

    c = make_client(faults=lose_create_answers)
    r = await c.http.post("/v2/videos", json={"model": MINIMAX})
    assert r.status_code == 500
    stats = (await c.http.get("/_sim/stats")).json()
    assert stats["jobs_created"] == 1
    job_id = (await c.http.get("/_sim/jobs")).json()[0]["id"]
    assert (await c.http.get(f"/v2/videos/{job_id}")).status_code == 503
    stats = (await c.http.get("/_sim/stats")).json()
    assert stats["requests"] == {
        "POST /v2/videos": {"500": 1},
        "GET /v2/videos/{id}": {"503": 1},
    }


def test_from_env_reads_prefixed_variables() -> None:
    """SimConfig.from_env reads GENQUEUE_SIM_* variables and keeps defaults for the rest."""
    cfg = SimConfig.from_env(
        {
            "GENQUEUE_SIM_SEED": "5",
            "GENQUEUE_SIM_TIME_SCALE": "0.01",
            "GENQUEUE_SIM_SHAPE": "legacy",
            "GENQUEUE_SIM_HONOUR_IDEMPOTENCY": "false",
            "GENQUEUE_SIM_DURATION_MEDIAN_S": "120",
            "GENQUEUE_SIM_API_KEY": "",
        }
    )
    assert (cfg.seed, cfg.time_scale, cfg.shape) == (5, 0.01, "legacy")
    assert cfg.honour_idempotency is False
    assert cfg.duration_median_s == 120
    assert cfg.api_key is None and cfg.failure_share == SimConfig().failure_share


def test_config_rejects_nonsense() -> None:
    """SimConfig refuses a non-positive time scale and a failure share outside [0, 1]."""
    with pytest.raises(ValueError):
        SimConfig(time_scale=0)
    with pytest.raises(ValueError):
        SimConfig(failure_share=1.5)


@given(st.integers(min_value=0, max_value=10**12))
def test_format_usd_is_exact(micro: int) -> None:
    """billed_usd strings are exact decimal renderings of micro-dollars with 2+ decimals."""
    text = format_usd(micro)
    assert Decimal(text) * 1_000_000 == micro
    assert len(text.split(".")[1]) >= 2


@given(seed=st.integers(0, 2**32), index=st.integers(0, 50), scale=st.floats(0.001, 10))
def test_status_progresses_monotonically(seed: int, index: int, scale: float) -> None:
    """For any seed and job, status only moves forward: queued, in_progress, then terminal."""
    from genqueue.simulator import Simulator

    now = [0.0]
    sim = Simulator(SimConfig(seed=seed, time_scale=scale, failure_share=0.5), lambda: now[0])
    profile = SimConfig().profile(MINIMAX)
    assert profile is not None
    for _ in range(index + 1):
        job, _ = sim.create(MINIMAX, profile, {})
    order = ["queued", "in_progress", "terminal"]
    seen = []
    for t in (0.0, job.started_at - 1e-9, job.started_at, job.done_at - 1e-9, job.done_at, 1e9):
        status = job.status(t)
        seen.append(order.index("terminal" if status in ("completed", "failed") else status))
    assert seen == sorted(seen)
    assert job.created_at <= job.started_at < job.done_at
