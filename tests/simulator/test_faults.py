"""Upstream fault injection in the simulator: profiles, shares, rate limits, hangs."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import math
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from genqueue.simulator import FAULT_PROFILES, FaultProfile, SimConfig, SimServer, parse_faults
from genqueue.simulator import running_simulator as running
from genqueue.simulator.faults import CREATE_KINDS, RETRIEVE_KINDS

MINIMAX = "minimax/video-01-director"
AUTH = {"Authorization": "Bearer test-key"}
SERVER_ERRORS = {500, 502, 503, 504}
RATE_LIMIT_HEADERS = (
    "x-ratelimit-limit",
    "x-ratelimit-remaining",
    "x-ratelimit-reset",
)

Make = Callable[..., Any]
# In-process (ASGITransport) a hung request waits for its cap: chaos without the hangs.
CHAOS = dataclasses.replace(FAULT_PROFILES["chaos"], hang_share=0.0, create_then_hang_share=0.0)


def near(count: int, n: int, share: float) -> bool:
    """``count`` is a plausible binomial draw of ``n`` trials at ``share`` (within 5 sigma)."""
    sigma = math.sqrt(n * share * (1 - share))
    return abs(count - n * share) <= 5 * sigma + 2


def error_of(r: httpx.Response) -> dict[str, Any]:
    """The error object of an answer, checked for the API's four-key shape."""
    err: dict[str, Any] = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert isinstance(err["message"], str) and err["message"]
    return err


def parses(r: httpx.Response) -> bool:
    try:
        json.loads(r.content)
    except ValueError:
        return False
    return True


def assert_rate_limited(r: httpx.Response, *, retry_after: bool = False) -> None:
    """A 429 as Together sends it: x-ratelimit-* (reset > 0), ``dynamic_request_limited``;
    Retry-After/retry-after-ms only when the profile asks for them."""
    assert r.status_code == 429
    for name in RATE_LIMIT_HEADERS:
        assert name in r.headers, name
    if retry_after:
        assert int(r.headers["retry-after"]) >= 1
        assert int(r.headers["retry-after-ms"]) >= 1
    else:
        assert "retry-after" not in r.headers and "retry-after-ms" not in r.headers
    assert float(r.headers["x-ratelimit-reset"]) > 0
    assert r.headers["x-ratelimit-remaining"] == "0"
    err = error_of(r)
    assert (err["type"], err["code"]) == ("dynamic_request_limited", "rate_limit_exceeded")


async def stats(c: Any) -> dict[str, Any]:
    body: dict[str, Any] = (await c.http.get("/_sim/stats")).json()
    return body


def seeded_jobs(c: Any, n: int) -> list[str]:
    """Create ``n`` jobs directly in the simulator (no HTTP, so no faults)."""
    profile = c.sim.config.profile(MINIMAX)
    return [c.sim.create(MINIMAX, profile, {})[0].id for _ in range(n)]


# --- parse() and profiles ----------------------------------------------------------------------


def test_parse_named_profiles() -> None:
    """parse() returns the named profiles; an empty spec or "none" means no faults."""
    assert parse_faults("chaos") == FAULT_PROFILES["chaos"]
    assert parse_faults(" Flaky ") == FAULT_PROFILES["flaky"]
    assert parse_faults("none") == parse_faults("") == FaultProfile()
    assert not FaultProfile().active
    chaos = FAULT_PROFILES["chaos"]
    assert chaos.active
    assert (chaos.error_5xx_share, chaos.rate_limit_share) == (0.05, 0.02)
    assert (chaos.hang_share, chaos.malformed_share) == (0.01, 0.01)
    assert (chaos.unknown_status_share, chaos.not_found_share) == (0.01, 0.005)
    assert chaos.create_then_error_share == 0.01
    flaky = FAULT_PROFILES["flaky"]
    assert flaky.error_5xx_share < chaos.error_5xx_share and flaky.hang_share == 0


def test_parse_overrides() -> None:
    """Overrides after the profile name replace single fields; a spec without a name starts
    from none."""
    p = parse_faults("none,error_5xx_share=0.1,rate_limit_rps=50")
    assert p == FaultProfile(error_5xx_share=0.1, rate_limit_rps=50.0)
    assert parse_faults("hang_share=0.02") == FaultProfile(hang_share=0.02)
    chaos = parse_faults("chaos, hang_share = 0 ,rate_limit_rps=5,unknown_status=weird")
    assert chaos == dataclasses.replace(
        FAULT_PROFILES["chaos"], hang_share=0.0, rate_limit_rps=5.0, unknown_status="weird"
    )
    assert parse_faults("none,rate_limit_rps=5,rate_limit_rps=none").rate_limit_rps is None
    for spec in ("chaos", "flaky", "none", "slow_share=0.5,slow_s=0.25,rate_limit_rps=2"):
        profile = parse_faults(spec)
        assert parse_faults(profile.to_spec()) == profile


@pytest.mark.parametrize(
    ("spec", "named"),
    [
        ("bogus", "'bogus'"),
        ("none,nope=1", "'nope'"),
        ("none,hang_share=abc", "hang_share must be a number, got 'abc'"),
        ("hang_share=1.5", "hang_share must be within"),
        ("error_5xx_share=-0.1", "error_5xx_share must be within"),
        ("none,rate_limit_rps=0", "rate_limit_rps must be a positive number"),
        ("none,slow_s=nan", "slow_s must be finite"),
        ("none,hang_share", "expected key=value"),
        ("error_5xx_share=0.6,hang_share=0.6", "error_5xx_share \\+ hang_share"),
        ("unknown_status_share=0.6,not_found_share=0.6", "retrieve fault shares add up"),
    ],
)
def test_parse_errors_name_the_bad_part(spec: str, named: str) -> None:
    """A bad spec raises ValueError naming the unknown profile, key or the bad value."""
    with pytest.raises(ValueError, match=named):
        parse_faults(spec)


def test_shares_per_endpoint_may_each_reach_one() -> None:
    """Create-only and retrieve-only shares are separate budgets: each may add up to 1."""
    profile = FaultProfile(create_then_error_share=1.0, not_found_share=1.0)
    assert profile.active


def test_from_env() -> None:
    """GENQUEUE_SIM_FAULTS sets SimConfig.faults to the parsed profile; unset leaves none."""
    cfg = SimConfig.from_env({"GENQUEUE_SIM_FAULTS": "chaos,rate_limit_rps=20"})
    assert cfg.faults == dataclasses.replace(FAULT_PROFILES["chaos"], rate_limit_rps=20.0)
    assert SimConfig.from_env({}).faults is None
    assert SimConfig.from_env({"GENQUEUE_SIM_FAULTS": ""}).faults is None
    assert FaultProfile.from_env({}) == FaultProfile()
    assert FaultProfile.from_env({"GENQUEUE_SIM_FAULTS": "hang_share=0.1"}).hang_share == 0.1
    with pytest.raises(ValueError, match="'bogus'"):
        SimConfig.from_env({"GENQUEUE_SIM_FAULTS": "bogus"})


# --- shares, status codes, bodies ----------------------------------------------------------------


async def test_create_faults_at_their_shares(make_client: Make) -> None:
    """Every create fault shows at roughly its share with its status, headers and body, and
    the ground truth counts exactly what was injected."""
    shares: dict[str, Any] = {
        "error_5xx": 0.1,
        "rate_limit": 0.05,
        "slow": 0.05,
        "malformed": 0.05,
        "create_then_error": 0.05,
    }
    profile = FaultProfile(
        slow_s=0.0, send_retry_after=True, **{f"{k}_share": v for k, v in shares.items()}
    )
    c = make_client(seed=11, faults=profile, failure_share=0.0)
    n = 1500
    seen: Counter[str] = Counter()
    statuses: Counter[str] = Counter()
    server_errors: set[int] = set()
    retry_after_503 = 0
    for i in range(n):
        r = await c.http.post("/v2/videos", json={"model": MINIMAX, "prompt": f"v{i}"})
        statuses[str(r.status_code)] += 1
        if r.status_code in SERVER_ERRORS:
            assert error_of(r)["type"] == "server_error"
            server_errors.add(r.status_code)
            retry_after_503 += r.status_code == 503 and "retry-after" in r.headers
            seen["5xx"] += 1
        elif r.status_code == 429:
            assert_rate_limited(r, retry_after=True)
            seen["rate_limit"] += 1
        elif not parses(r):
            assert r.status_code == 200
            assert r.headers["content-type"] == "application/json"
            seen["malformed"] += 1
        else:
            assert r.status_code == 200 and r.json()["status"] == "queued"
            seen["ok"] += 1
    truth = await stats(c)
    injected = truth["faults_injected"]
    assert set(injected) == set(shares)
    for kind, share in shares.items():
        assert near(injected[kind], n, share), (kind, injected[kind])
    assert seen["5xx"] == injected["error_5xx"] + injected["create_then_error"]
    assert seen["rate_limit"] == injected["rate_limit"]
    assert seen["malformed"] == injected["malformed"]
    assert server_errors == SERVER_ERRORS and retry_after_503 > 0
    # Malformed and create_then_error answers hide a job that does exist.
    created = seen["ok"] + injected["malformed"] + injected["create_then_error"]
    assert truth["jobs_created"] == created == len((await c.http.get("/_sim/jobs")).json())
    assert truth["requests"] == {"POST /v2/videos": dict(statuses)}
    # Those hidden jobs are ordinary: they complete and are billed.
    c.clock.advance(100_000)
    truth = await stats(c)
    assert truth["completed"] == created
    assert truth["billed_micro_usd"] == created * 280_000


@pytest.mark.parametrize("legacy", [False, True])
async def test_retrieve_faults_at_their_shares(make_client: Make, legacy: bool) -> None:
    """Every retrieve fault (both GET endpoints) shows at roughly its share with the right
    answer, and never changes the job itself."""
    shares: dict[str, Any] = {
        "error_5xx": 0.05,
        "rate_limit": 0.05,
        "malformed": 0.05,
        "unknown_status": 0.05,
        "not_found": 0.05,
    }
    profile = FaultProfile(**{f"{k}_share": v for k, v in shares.items()})
    c = make_client(seed=5, faults=profile)
    ids = seeded_jobs(c, 10)
    n = 1500
    seen: Counter[str] = Counter()
    for i in range(n):
        job_id = ids[i % len(ids)]
        if legacy:
            r = await c.http.get("/v2/videos/status", params={"id": job_id})
        else:
            r = await c.http.get(f"/v2/videos/{job_id}")
        if r.status_code in SERVER_ERRORS:
            error_of(r)
            seen["error_5xx"] += 1
        elif r.status_code == 429:
            assert_rate_limited(r)
            seen["rate_limit"] += 1
        elif r.status_code == 404:
            err = error_of(r)
            assert (err["param"], err["code"]) == ("id", "not_found")
            assert job_id in err["message"]
            seen["not_found"] += 1
        elif not parses(r):
            assert r.status_code == 200
            seen["malformed"] += 1
        else:
            assert r.status_code == 200 and r.json()["id"] == job_id
            if r.json()["status"] == "mystery_state":
                seen["unknown_status"] += 1
            else:
                assert r.json()["status"] == "queued"
                seen["ok"] += 1
    injected = (await stats(c))["faults_injected"]
    assert injected == {k: v for k, v in seen.items() if k != "ok"}
    for kind, share in shares.items():
        assert near(injected[kind], n, share), (kind, injected[kind])
    assert {j["status"] for j in (await c.http.get("/_sim/jobs")).json()} == {"queued"}


async def test_slow_answers_are_normal_answers(make_client: Make) -> None:
    """A slow answer (client still waiting) is the ordinary answer, counted as a slow fault."""
    c = make_client(faults=FaultProfile(slow_share=1.0, slow_s=0.01))
    r = await c.http.post("/v2/videos", json={"model": MINIMAX})
    assert r.status_code == 200
    assert (await c.http.get(f"/v2/videos/{r.json()['id']}")).json()["id"] == r.json()["id"]
    truth = await stats(c)
    assert truth["faults_injected"] == {"slow": 2}
    assert truth["requests"] == {"POST /v2/videos": {"200": 1}, "GET /v2/videos/{id}": {"200": 1}}


async def test_faults_never_touch_sim_endpoints(make_client: Make) -> None:
    """Even when every API request fails, /_sim/stats, /_sim/jobs, /_sim/reset and /_sim/files
    answer normally and are not counted as faults."""
    c = make_client(faults=FaultProfile(error_5xx_share=1.0), failure_share=0.0)
    (job_id,) = seeded_jobs(c, 1)
    c.clock.advance(100_000)
    for _ in range(30):
        assert (await c.http.get("/_sim/stats")).status_code == 200
        assert (await c.http.get("/_sim/jobs")).json()[0]["id"] == job_id
        r = await c.http.get(f"/shrt/{job_id}", follow_redirects=True)
        assert r.status_code == 200 and r.headers["content-type"] == "video/mp4"
    assert (await c.http.get(f"/v2/videos/{job_id}")).status_code in SERVER_ERRORS
    truth = await stats(c)
    assert truth["faults_injected"] == {"error_5xx": 1}
    assert truth["requests"]["GET /_sim/files/{id}.mp4"] == {"200": 30}
    assert truth["requests"]["GET /shrt/{id}"] == {"302": 30}
    assert (await c.http.post("/_sim/reset")).status_code == 200


# --- rate limit ---------------------------------------------------------------------------------


async def test_burst_above_rate_limit_gets_429s(make_client: Make) -> None:
    """With the clock still, requests beyond rate_limit_rps get 429 with x-ratelimit-* (no
    Retry-After: Together documents none); a second later the bucket has refilled."""
    c = make_client(faults=FaultProfile(rate_limit_rps=5))
    (job_id,) = seeded_jobs(c, 1)
    transport = httpx.ASGITransport(app=c.app)
    other = httpx.AsyncClient(transport=transport, base_url="http://sim", headers=AUTH)
    answers = []
    async with other:
        for i in range(8):  # two clients share the one limit
            client = c.http if i % 2 else other
            answers.append(await client.get(f"/v2/videos/{job_id}"))
    ok, limited = answers[:5], answers[5:]
    assert [r.status_code for r in ok] == [200] * 5
    assert [r.headers["x-ratelimit-remaining"] for r in ok] == ["4", "3", "2", "1", "0"]
    assert {r.headers["x-ratelimit-limit"] for r in answers} == {"5"}
    for r in limited:
        assert_rate_limited(r)
        assert float(r.headers["x-ratelimit-reset"]) <= 0.2
    truth = await stats(c)
    assert truth["faults_injected"] == {"rate_limit_rps": 3}
    assert truth["requests"]["GET /v2/videos/{id}"] == {"200": 5, "429": 3}
    c.clock.advance(1.0)
    again = [await c.http.post("/v2/videos", json={"model": MINIMAX}) for _ in range(6)]
    assert [r.status_code for r in again] == [200] * 5 + [429]


async def test_within_rate_limit_no_429(make_client: Make) -> None:
    """Requests paced at exactly rate_limit_rps are never refused."""
    c = make_client(faults=FaultProfile(rate_limit_rps=5))
    (job_id,) = seeded_jobs(c, 1)
    for _ in range(50):
        assert (await c.http.get(f"/v2/videos/{job_id}")).status_code == 200
        c.clock.advance(0.2)
    assert (await stats(c))["faults_injected"] == {}


# --- ambiguous creates --------------------------------------------------------------------------


async def _create_until_ok(c: Any, key: str) -> tuple[int, dict[str, Any]]:
    """Create with ``key`` until one answer is 200; return (attempts, job)."""
    for attempt in range(1, 50):
        r = await c.http.post(
            "/v2/videos", json={"model": MINIMAX}, headers={"Idempotency-Key": key}
        )
        if r.status_code == 200:
            return attempt, r.json()
        assert r.status_code in SERVER_ERRORS
    raise AssertionError("never answered 200")


async def test_create_then_error_with_idempotency_returns_the_same_job(make_client: Make) -> None:
    """A create answered 5xx did create its job; retries with the same Idempotency-Key get
    that job back when the upstream honours the key."""
    c = make_client(
        seed=2, faults=FaultProfile(create_then_error_share=0.5), honour_idempotency=True
    )
    attempts, job = await _create_until_ok(c, "k1")
    assert attempts > 1
    jobs = (await c.http.get("/_sim/jobs")).json()
    assert [(j["id"], j["idempotency_key"]) for j in jobs] == [(job["id"], "k1")]
    truth = await stats(c)
    assert (truth["jobs_created"], truth["duplicate_creations"]) == (1, 0)
    assert truth["idempotent_replays"] == attempts - 1
    assert truth["faults_injected"] == {"create_then_error": attempts - 1}


async def test_create_then_error_without_idempotency_duplicates(make_client: Make) -> None:
    """When the key is not honoured, every retry of an ambiguous create buys another job and
    the ground truth counts the duplicates."""
    c = make_client(
        seed=2, faults=FaultProfile(create_then_error_share=0.5), honour_idempotency=False
    )
    attempts, job = await _create_until_ok(c, "k1")
    assert attempts > 1
    jobs = (await c.http.get("/_sim/jobs")).json()
    assert [j["idempotency_key"] for j in jobs] == ["k1"] * attempts
    assert jobs[-1]["id"] == job["id"]
    truth = await stats(c)
    assert (truth["jobs_created"], truth["duplicate_creations"]) == (attempts, attempts - 1)
    assert truth["creations_by_idempotency_key_max"] == attempts


# --- determinism --------------------------------------------------------------------------------


async def _statuses(c: Any, n: int) -> list[int]:
    (job_id,) = seeded_jobs(c, 1)  # the same id each time: same seed, first job
    return [(await c.http.get(f"/v2/videos/{job_id}")).status_code for _ in range(n)]


async def test_faults_are_seeded(make_client: Make) -> None:
    """The same seed replays the same faults (also after /_sim/reset); another seed differs."""
    chaos = CHAOS
    a = await _statuses(make_client(seed=1, faults=chaos), 400)
    b = await _statuses(make_client(seed=1, faults=chaos), 400)
    other = await _statuses(make_client(seed=9, faults=chaos), 400)
    assert a == b != other
    assert set(a) > {200}
    c = make_client(seed=1, faults=chaos)
    first = await _statuses(c, 400)
    await c.http.post("/_sim/reset")
    assert await _statuses(c, 400) == first == a


async def test_faults_do_not_change_the_jobs(make_client: Make) -> None:
    """With the same seed, the k-th job created has the same id, duration and outcome with or
    without faults."""

    async def jobs(c: Any, creates: int) -> list[tuple[str, float, str]]:
        for _ in range(creates):
            await c.http.post("/v2/videos", json={"model": MINIMAX})
        c.clock.advance(100_000)
        return [
            (j["id"], j["done_at"] - j["created_at"], j["status"])
            for j in (await c.http.get("/_sim/jobs")).json()
        ]

    faulty = await jobs(make_client(seed=4, failure_share=0.3, faults=CHAOS), 60)
    clean = await jobs(make_client(seed=4, failure_share=0.3), len(faulty))
    assert 40 < len(faulty) < 60
    assert faulty == clean


async def test_profile_none_is_no_faults(make_client: Make) -> None:
    """SimConfig(faults=FaultProfile()) installs no hook and answers exactly like no faults."""

    async def run(c: Any) -> dict[str, Any]:
        job = (await c.http.post("/v2/videos", json={"model": MINIMAX})).json()
        await c.http.get(f"/v2/videos/{job['id']}")
        await c.http.get("/v2/videos/nope")
        return await stats(c)

    none = make_client(faults=parse_faults("none"))
    assert none.app.state.faults is None
    truth = await run(none)
    assert truth == await run(make_client())
    assert truth["faults_injected"] == {}


def test_kinds_cover_every_share_field() -> None:
    """Every *_share field of FaultProfile is a fault kind of create or retrieve."""
    shares = {f.name for f in dataclasses.fields(FaultProfile) if f.name.endswith("_share")}
    assert shares == {f"{k}_share" for k in {*CREATE_KINDS, *RETRIEVE_KINDS}}


# --- hangs and abandoned answers, against a real server ------------------------------------------


def _wait_for(server: SimServer, check: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    """Poll /_sim/stats until ``check`` holds (the server notices a disconnect asynchronously)."""
    deadline = time.monotonic() + 10
    while True:
        truth: dict[str, Any] = httpx.get(f"{server.base_url}/_sim/stats").json()
        if check(truth) or time.monotonic() > deadline:
            return truth
        time.sleep(0.02)


async def test_hung_requests_time_out_while_others_are_served() -> None:
    """Hung requests never answer (the client's read timeout fires) while concurrent requests
    are answered; once the clients give up the server counts them as "hung"."""
    config = SimConfig(seed=3, faults=FaultProfile(hang_share=0.3))
    with running(config) as server:
        (job_id,) = seeded_jobs(server, 1)
        timeout = httpx.Timeout(5.0, read=0.3)
        async with httpx.AsyncClient(
            base_url=server.base_url, headers=AUTH, timeout=timeout
        ) as http:

            async def one() -> int | str:
                try:
                    return (await http.get(f"/v2/videos/{job_id}")).status_code
                except httpx.ReadTimeout:
                    return "timeout"

            outcomes = Counter(await asyncio.gather(*(one() for _ in range(20))))
        assert set(outcomes) == {200, "timeout"}
        truth = _wait_for(
            server,
            lambda s: s["requests"]["GET /v2/videos/{id}"].get("hung") == outcomes["timeout"],
        )
    assert truth["faults_injected"] == {"hang": outcomes["timeout"]}
    assert truth["requests"]["GET /v2/videos/{id}"] == {
        "200": outcomes[200],
        "hung": outcomes["timeout"],
    }


def test_create_then_hang_creates_the_job() -> None:
    """A create that hangs after creating its job times out on the client, yet the job exists
    and a retry with the same Idempotency-Key finds it; the request counts as "hung"."""
    config = SimConfig(faults=FaultProfile(create_then_hang_share=1.0), honour_idempotency=True)
    with running(config) as server, httpx.Client(base_url=server.base_url, headers=AUTH) as http:
        key = {"Idempotency-Key": "k1"}
        with pytest.raises(httpx.ReadTimeout):
            http.post("/v2/videos", json={"model": MINIMAX}, headers=key, timeout=0.3)
        truth = _wait_for(server, lambda s: "hung" in s["requests"]["POST /v2/videos"])
        assert truth["requests"]["POST /v2/videos"] == {"hung": 1}
        assert truth["faults_injected"] == {"create_then_hang": 1}
        (job,) = http.get("/_sim/jobs").json()
        assert job["idempotency_key"] == "k1"
        server.app.state.faults = None  # the upstream recovers
        again = http.post("/v2/videos", json={"model": MINIMAX}, headers=key)
        assert again.json()["id"] == job["id"]
        assert http.get("/_sim/stats").json()["jobs_created"] == 1


def test_slow_answer_abandoned_by_its_client() -> None:
    """A slow create whose client gives up first still creates its job; the request counts as
    "abandoned" since the client saw no answer."""
    config = SimConfig(faults=FaultProfile(slow_share=1.0, slow_s=30.0))
    with running(config) as server, httpx.Client(base_url=server.base_url, headers=AUTH) as http:
        with pytest.raises(httpx.ReadTimeout):
            http.post("/v2/videos", json={"model": MINIMAX}, timeout=0.3)
        truth = _wait_for(server, lambda s: "abandoned" in s["requests"]["POST /v2/videos"])
    assert truth["requests"]["POST /v2/videos"] == {"abandoned": 1}
    assert (truth["faults_injected"], truth["jobs_created"]) == ({"slow": 1}, 1)


def test_late_answer_creates_the_job_before_answering() -> None:
    """A late-answer create has its job (billed) before the answer, which still comes, late,
    and names that job."""
    config = SimConfig(faults=FaultProfile(late_answer_share=1.0, late_answer_s=0.5))
    with running(config) as server, httpx.Client(base_url=server.base_url, headers=AUTH) as http:
        seen: dict[str, Any] = {}

        def watch() -> None:
            seen.update(_wait_for(server, lambda s: s["jobs_created"] == 1))
            seen["answered"] = "200" in seen["requests"].get("POST /v2/videos", {})

        t = threading.Thread(target=watch)
        t.start()
        r = http.post("/v2/videos", json={"model": MINIMAX}, timeout=10)
        t.join(10)
        assert seen["answered"] is False  # the job existed while its answer was held
        assert r.status_code == 200
        (job,) = http.get("/_sim/jobs").json()
        assert r.json()["id"] == job["id"]
        assert http.get("/_sim/stats").json()["faults_injected"] == {"late_answer": 1}
