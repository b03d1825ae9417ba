"""Spend budgets (issue 26): reserve before buying, settle with the real cost, hold or fail
what a budget cannot cover, roll over with the period. Driven at the scripts."""

from __future__ import annotations

import asyncio
import dataclasses
import re
from typing import Any

import pytest
import redis
import redis.asyncio

from genqueue.producer.admission import AsyncAdmission
from genqueue.producer.budgets import (
    COST_SAMPLES,
    DAY_MS,
    MIN_COSTS,
    TEST_CLOCK_FIELD,
    Budget,
    BudgetError,
    budget_status_async,
    parse_budget,
    periods_at,
    set_deployment_budget,
    set_tenant_budget,
)
from genqueue.producer.client import AsyncClient
from genqueue.producer.contracts import Cancel, ExpireWaiting, SubmitRelease
from genqueue.producer.keys import Field, Tag
from genqueue.producer.scripts import assemble, source
from genqueue.producer.settings import Settings
from genqueue.producer.tenants import set_tenant
from tests.test_transitions import REQ, Scripts

TENANT = "acme"
EST = 300_000  # $0.30: the configured estimate in these tests


@pytest.fixture
async def s(settings: Settings, aredis: redis.asyncio.Redis) -> Scripts:
    await aredis.hset(settings.keys.budget, "cost_estimate_micro_usd", str(EST))
    return Scripts(settings, aredis)


@pytest.fixture
def sync(settings: Settings) -> Any:
    conn = redis.Redis.from_url(settings.redis_url, decode_responses=True)
    set_tenant(conn, settings.keys, TENANT)
    yield conn
    conn.close()


def tenant_budget(sync: redis.Redis, settings: Settings, amount: str, **kw: Any) -> None:
    set_tenant_budget(sync, settings.keys, TENANT, budget=parse_budget(amount), **kw)


async def submit(client: AsyncClient, tenant: str = TENANT) -> str:
    return await client.submit(REQ, tenant=tenant)


async def admit(s: Scripts, rid: str) -> Any:
    """The submit step of an admitted request: takes its lease (``OK``)."""
    return await s.begin(rid)


async def waiting(s: Scripts, rid: str) -> str | None:
    """Why the request waits in its admission queue (None: admitted)."""
    rec = await s.rec(rid)
    if rec.get(Field.ADMITTED) == "1":
        return None
    return rec.get(Field.WAITING)


async def ledger(s: Scripts, tenant: str | None = TENANT, period: str = "day") -> dict[str, int]:
    status = await budget_status_async(s.redis, s.keys)
    line = status.deployment if tenant is None else status.tenants[tenant]
    led = line.day if period == "day" else line.month
    return {"spent": led.spent, "reserved": led.reserved, "estimated": led.estimated}


async def bought(s: Scripts, rid: str, cost: int | None, *, unknown: bool = False) -> None:
    """Admit, create upstream and finish at ``cost``."""
    ok = await admit(s, rid)
    assert ok.tag is Tag.OK, ok
    assert (await s.submitted(rid, ok.submit_seq, upstream_id=f"up-{rid}")).tag is Tag.OK
    seq = int((await s.rec(rid))[Field.SEQ])
    from tests.conftest import finish

    f = dataclasses.replace(finish(rid, seq, "completed", cost), cost_unknown=unknown)
    assert (await s.run(f)).tag is Tag.OK


# --- periods and settings ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "iso",
    [
        "1970-01-01T00:00:00",
        "2024-02-28T23:59:59.999",
        "2024-02-29T00:00:00",
        "2026-12-31T23:59:59.999",
        "2027-01-01T00:00:00",
        "2100-03-01T12:00:00",
    ],
)
async def test_lua_periods_match_python(aredis: redis.asyncio.Redis, iso: str) -> None:
    """The UTC day and month (and their ends) computed in Lua equal Python's for edge dates."""
    import datetime as dt

    ms = int(dt.datetime.fromisoformat(iso).replace(tzinfo=dt.UTC).timestamp() * 1000)
    lua = assemble(
        '--- @include "budget"\n'
        "local p = budget_periods(tonumber(ARGV[1]))\n"
        "return {p.day, p.month, istr(p.day_end_ms), istr(p.month_end_ms)}"
    )
    got = await aredis.eval(lua, 0, str(ms))  # type: ignore[misc]
    want = periods_at(ms)
    assert got == [want.day, want.month, str(want.day_end_ms), str(want.month_end_ms)]


def test_lua_sample_sizes_match_python() -> None:
    """The estimate's window and minimum in the Lua are the ones documented in Python."""
    lua = source("finish")
    assert re.search(rf"BUDGET_COST_SAMPLES = {COST_SAMPLES}\b", lua)
    assert re.search(rf"BUDGET_MIN_COSTS = {MIN_COSTS}\b", lua)


def test_parse_budget() -> None:
    """Budgets parse to exact micro-dollars per day or month; anything else is refused."""
    assert parse_budget("20/day") == Budget(20_000_000, "day")
    assert parse_budget("$150.000001/month") == Budget(150_000_001, "month")
    assert parse_budget("none") is None
    for bad in ("20", "20/week", "-1/day", "0.0000001/day", "abc/day"):
        with pytest.raises(BudgetError):
            parse_budget(bad)


def test_tenant_budget_keeps_other_settings(settings: Settings, sync: redis.Redis) -> None:
    """Setting a budget keeps every other setting of the tenant's JSON, even unknown ones."""
    sync.hset(settings.keys.tenants, TENANT, '{"webhook_secrets":[],"weight":3,"future":"x"}')
    tenant_budget(sync, settings, "5/month", over_budget="fail")
    import json

    stored = json.loads(sync.hget(settings.keys.tenants, TENANT))  # type: ignore[arg-type]
    assert stored["weight"] == 3 and stored["future"] == "x"
    assert stored["budget"] == {"over": "fail", "micro_usd": 5_000_000, "period": "month"}


# --- reserve and settle -----------------------------------------------------------------------


async def test_admission_reserves_the_estimate_and_finish_settles_the_real_cost(
    client: AsyncClient, s: Scripts, settings: Settings, sync: redis.Redis
) -> None:
    """Admission reserves the estimate (tenant and deployment); the finish moves it to spend
    at the real cost, in the day and the month."""
    tenant_budget(sync, settings, "10/day")
    rid = await submit(client)
    ok = await admit(s, rid)
    assert ok.tag is Tag.OK
    rec = await s.rec(rid)
    assert rec[Field.BUDGET_RESERVED_MICRO_USD] == str(EST)
    assert rec[Field.BUDGET_DAY] == (await budget_status_async(s.redis, s.keys)).periods.day
    assert await ledger(s) == {"spent": 0, "reserved": EST, "estimated": 0}
    assert await ledger(s, None) == {"spent": 0, "reserved": EST, "estimated": 0}
    assert (await s.submitted(rid, ok.submit_seq)).tag is Tag.OK
    assert (await s.finish(rid, cost=280_000)).tag is Tag.OK
    for tenant in (TENANT, None):
        for period in ("day", "month"):
            assert await ledger(s, tenant, period) == {
                "spent": 280_000,
                "reserved": 0,
                "estimated": 0,
            }
    assert Field.BUDGET_RESERVED_MICRO_USD not in await s.rec(rid)


async def test_held_until_the_budget_is_raised(
    client: AsyncClient, s: Scripts, settings: Settings, sync: redis.Redis
) -> None:
    """A request the budget cannot cover waits with reason `budget` (nothing reserved, an
    admit timer at the period's end) and is admitted as soon as the budget is raised."""
    tenant_budget(sync, settings, "0.5/day")
    first, second = await submit(client), await submit(client)
    assert await waiting(s, first) is None
    assert await waiting(s, second) == "budget"
    rec = await s.rec(second)
    assert rec[Field.STATUS] == "pending" and Field.BUDGET_RESERVED_MICRO_USD not in rec
    assert await ledger(s) == {"spent": 0, "reserved": EST, "estimated": 0}
    now = int((await s.redis.time())[0]) * 1000
    end = periods_at(now).day_end_ms
    assert await s.redis.zscore(s.keys.queue, f"admit:budget:{end}") == end
    assert await s.redis.hget(s.keys.budget_held, TENANT) == str(end)
    tenant_budget(sync, settings, "0.6/day")
    assert await waiting(s, second) is None
    assert (await admit(s, second)).tag is Tag.OK
    assert (await ledger(s))["reserved"] == 2 * EST
    assert not await s.redis.exists(s.keys.budget_held)


async def test_over_budget_fail_policy_fails_at_once(
    client: AsyncClient, s: Scripts, settings: Settings, sync: redis.Redis
) -> None:
    """With --over-budget fail, a new request the budget cannot cover fails at once with a
    clear error; ones already waiting for budget fail one after the other, never bought."""
    tenant_budget(sync, settings, "0.3/day")
    first, second, third = await submit(client), await submit(client), await submit(client)
    assert [await waiting(s, r) for r in (first, second, third)] == [None, "budget", "budget"]
    tenant_budget(sync, settings, "0.3/day", over_budget="fail")
    # The head of the queue (the earliest deadline; same-millisecond ties in id order) is
    # handed to its submit step, which fails it and hands on the next.
    reasons = {r: await waiting(s, r) for r in (second, third)}
    assert sorted(reasons.values(), key=str) == [None, "budget"]
    head = second if reasons[second] is None else third
    assert (await s.begin(head)).tag is Tag.FAILED
    other = third if head == second else second
    assert await waiting(s, other) is None
    assert (await s.begin(other)).tag is Tag.FAILED
    fresh = await submit(client)
    for rid in (second, third, fresh):
        rec = await s.rec(rid)
        assert rec[Field.STATUS] == "failed", rid
        assert rec[Field.ERROR] == (
            "over budget: tenant acme has 0 of its 300000 micro-USD per day left, this "
            "video is estimated at 300000"
        )
    assert await ledger(s) == {"spent": 0, "reserved": EST, "estimated": 0}


async def test_deployment_budget_holds_every_tenant(
    client: AsyncClient, s: Scripts, settings: Settings, sync: redis.Redis
) -> None:
    """The deployment's budget counts every tenant's videos; a tenant without one is held too."""
    set_deployment_budget(sync, settings.keys, Budget(2 * EST, "month"))
    a, b, c = await submit(client), await submit(client, "default"), await submit(client)
    assert [await waiting(s, r) for r in (a, b, c)] == [None, None, "budget"]
    assert (await ledger(s, None, "month"))["reserved"] == 2 * EST
    assert (await ledger(s, "default"))["reserved"] == EST


async def test_requests_that_buy_nothing_release_their_reservation(
    client: AsyncClient, s: Scripts, settings: Settings, sync: redis.Redis
) -> None:
    """A failed create and a cancel before any create release the reservation (no spend)."""
    tenant_budget(sync, settings, "10/day")
    failing, cancelled = await submit(client), await submit(client)
    ok = await admit(s, failing)
    release = SubmitRelease(
        request_id=failing,
        submit_seq=ok.submit_seq,
        mode="fail",
        ambiguous=False,
        retry_delay_ms=0,
        error="400 bad request",
        ambiguous_policy="resubmit",
    )
    assert (await s.run(release)).tag is Tag.FAILED
    # A retry keeps its reservation until the request ends.
    ok2 = await admit(s, cancelled)
    retry = dataclasses.replace(
        release, request_id=cancelled, submit_seq=ok2.submit_seq, mode="retry"
    )
    assert (await s.run(retry)).tag is Tag.RETRY
    assert (await ledger(s))["reserved"] == EST
    cancel = Cancel(request_id=cancelled, tracking_limit_ms=1000)
    assert (await s.run(cancel)).tag is Tag.CANCELLED
    assert await ledger(s) == {"spent": 0, "reserved": 0, "estimated": 0}


async def test_unknown_cost_counts_at_its_estimate(
    client: AsyncClient, s: Scripts, settings: Settings, sync: redis.Redis
) -> None:
    """A completed video whose cost came back unknown is spent at its estimate."""
    tenant_budget(sync, settings, "10/day")
    await bought(s, await submit(client), None, unknown=True)
    assert await ledger(s) == {"spent": EST, "reserved": 0, "estimated": EST}


async def test_ambiguous_create_counts_its_estimate_as_possible_spend(
    client: AsyncClient, s: Scripts, settings: Settings, sync: redis.Redis
) -> None:
    """A create that died mid-POST and was resubmitted counts one estimate as possible spend
    beside the video it then bought."""
    tenant_budget(sync, settings, "10/day")
    rid = await submit(client)
    assert (await s.begin(rid, seq=0, lease_ms=1)).tag is Tag.OK
    await asyncio.sleep(0.01)
    await bought(s, rid, 250_000)
    assert await ledger(s) == {"spent": 250_000 + EST, "reserved": 0, "estimated": EST}


async def test_real_cost_above_estimate_overspends_by_exactly_the_excess(
    client: AsyncClient, s: Scripts, settings: Settings, sync: redis.Redis
) -> None:
    """Budget $0.90, estimate $0.30: three are admitted, the fourth held; each costs $0.50,
    so spend ends at the documented bound: budget + the sum of (cost - reserved) = $1.50,
    and the fourth stays held."""
    tenant_budget(sync, settings, "0.9/day")
    rids = [await submit(client) for _ in range(4)]
    assert [await waiting(s, r) for r in rids] == [None, None, None, "budget"]
    for rid in rids[:3]:
        await bought(s, rid, 500_000)
    spent = (await ledger(s))["spent"]
    assert spent == 900_000 + 3 * (500_000 - EST) == 1_500_000
    assert await waiting(s, rids[3]) == "budget"


async def test_estimate_becomes_the_highest_recent_cost(
    client: AsyncClient, s: Scripts, settings: Settings, sync: redis.Redis
) -> None:
    """Once MIN_COSTS completions of a model are known, the estimate is their highest cost
    (the configured estimate before)."""
    tenant_budget(sync, settings, "100/day")
    costs = [100_000 + 1000 * i for i in range(MIN_COSTS)]
    costs[7] = 420_000
    for cost in costs[:-1]:
        await bought(s, await submit(client), cost)
    rid = await submit(client)
    assert (await s.rec(rid))[Field.BUDGET_ESTIMATE_MICRO_USD] == str(EST)
    await bought(s, rid, costs[-1])
    nxt = await submit(client)
    assert (await s.rec(nxt))[Field.BUDGET_ESTIMATE_MICRO_USD] == "420000"
    key = settings.keys.budget_costs(REQ["model"])
    assert await s.redis.llen(key) == MIN_COSTS  # type: ignore[misc]


async def test_period_rollover_with_the_test_clock(
    client: AsyncClient, s: Scripts, settings: Settings, sync: redis.Redis
) -> None:
    """A day's exhausted budget admits again the next UTC day (admission at the period's
    start), charged to the new day; the old day keeps its own reservation."""
    tenant_budget(sync, settings, "0.3/day")
    first, second = await submit(client), await submit(client)
    assert await waiting(s, second) == "budget"
    day1 = (await s.rec(first))[Field.BUDGET_DAY]
    now = int((await s.redis.time())[0]) * 1000
    to_next_day = periods_at(now).day_end_ms - now + 1000
    await s.redis.hset(s.keys.budget, TEST_CLOCK_FIELD, str(to_next_day))  # type: ignore[misc]
    assert await AsyncAdmission(s.redis, s.keys).admit_all() == 1  # what the admit timer runs
    assert await waiting(s, second) is None
    day2 = (await s.rec(second))[Field.BUDGET_DAY]
    assert day2 != day1 and periods_at(now + to_next_day).day == day2
    assert await ledger(s) == {"spent": 0, "reserved": EST, "estimated": 0}
    old = await s.redis.hgetall(s.keys.budget_ledger("day", day1))  # type: ignore[misc]
    assert old[f"t|{TENANT}|reserved_micro"] == str(EST)
    ttl = await s.redis.pttl(s.keys.budget_ledger("day", day2))
    assert DAY_MS < ttl <= 5 * DAY_MS


async def test_record_admitted_before_budgets_settles_without_error(
    client: AsyncClient, s: Scripts, settings: Settings, sync: redis.Redis
) -> None:
    """A record admitted by a version without budgets (no budget fields) finishes, unknown
    cost and all, without touching any ledger."""
    tenant_budget(sync, settings, "10/day")
    rid = await submit(client)
    await s.redis.hdel(  # type: ignore[misc]
        s.keys.record(rid),
        Field.BUDGET_DAY,
        Field.BUDGET_RESERVED_MICRO_USD,
        Field.BUDGET_ESTIMATE_MICRO_USD,
    )
    day = (await budget_status_async(s.redis, s.keys)).periods.day
    await s.redis.delete(s.keys.budget_ledger("day", day), s.keys.budget_ledger("month", day[:7]))
    await bought(s, rid, None, unknown=True)
    assert await ledger(s) == {"spent": 0, "reserved": 0, "estimated": 0}


async def test_concurrent_admissions_never_reserve_past_the_budget(
    settings: Settings, sync: redis.Redis, s: Scripts
) -> None:
    """Six clients racing to submit 60 requests against a budget for 10 admit exactly 10;
    then six workers' connections racing to finish them below their estimate admit exactly
    what the freed budget covers, and every figure settles exactly."""
    tenant_budget(sync, settings, "3/day")
    clients = [AsyncClient(settings) for _ in range(6)]
    conns = [
        redis.asyncio.Redis.from_url(settings.redis_url, decode_responses=True) for _ in range(6)
    ]
    try:
        rids = await asyncio.gather(*(submit(clients[i % 6]) for i in range(60)))
        reasons = [await waiting(s, r) for r in rids]
        admitted = [r for r, why in zip(rids, reasons, strict=True) if why is None]
        assert len(admitted) == 10 and reasons.count("budget") == 50
        workers = [Scripts(settings, c) for c in conns]
        await asyncio.gather(
            *(bought(workers[i % 6], rid, 100_000) for i, rid in enumerate(admitted))
        )
        # $1.00 spent: $2.00 left covers 6 more at $0.30 (the 7th would need $2.10).
        reasons = [await waiting(s, r) for r in rids]
        assert reasons.count(None) == 16 and reasons.count("budget") == 44
        assert await ledger(s) == {"spent": 1_000_000, "reserved": 6 * EST, "estimated": 0}
    finally:
        for c in conns:
            await c.aclose()
        for cl in clients:
            await cl.aclose()


# --- seen -------------------------------------------------------------------------------------


async def test_stats_and_metrics_show_spend_against_budget(
    client: AsyncClient, s: Scripts, settings: Settings, sync: redis.Redis
) -> None:
    """Stats (cluster and tenant) and both collectors show budget, spend and reservations."""
    from prometheus_client import CollectorRegistry, generate_latest

    from genqueue.worker.cluster_metrics import ClusterCollector
    from genqueue.worker.tenant_metrics import TenantCollector

    tenant_budget(sync, settings, "1/day")
    set_deployment_budget(sync, settings.keys, Budget(10_000_000, "month"))
    await bought(s, await submit(client), 500_000)
    await submit(client)
    cluster = (await client.stats()).to_json_dict()["budget"]
    assert cluster["deployment"]["budget"] == "$10.00/month"
    assert cluster["tenants"][TENANT]["day"]["spent_usd"] == "0.500000"
    assert cluster["tenants"][TENANT]["left_usd"] == "0.200000"
    own = (await client.stats(tenant=TENANT)).to_json_dict()["budget"]
    assert own["tenant"]["day"]["reserved_usd"] == "0.300000"
    assert "deployment" not in own
    registry = CollectorRegistry()
    registry.register(TenantCollector(settings, sync))
    registry.register(ClusterCollector(settings, sync))
    text = generate_latest(registry).decode()
    assert 'genqueue_tenant_budget_usd{period="day",tenant="acme"} 1.0' in text
    assert 'genqueue_tenant_budget_spent_usd{tenant="acme"} 0.5' in text
    assert 'genqueue_tenant_budget_reserved_usd{tenant="acme"} 0.3' in text
    assert 'genqueue_tenant_budget_used_ratio{tenant="acme"} 0.8' in text
    assert 'genqueue_tenant_budget_used_ratio{tenant="default"}' not in text
    assert 'genqueue_budget_usd{period="month"} 10.0' in text
    assert "genqueue_budget_used_ratio 0.08" in text


# --- held requests, and the worker ------------------------------------------------------------


async def test_a_request_held_for_budget_still_honours_cancel_and_deadline(
    client: AsyncClient, s: Scripts, settings: Settings, sync: redis.Redis
) -> None:
    """A request waiting for budget is cancelled at once, and expires at its deadline; no
    reservation is left behind by either."""
    tenant_budget(sync, settings, "0.3/day")
    await submit(client)
    cancelled = await submit(client)
    expiring = await client.submit(REQ, tenant=TENANT, deadline_s=0.05)
    assert await waiting(s, cancelled) == "budget" and await waiting(s, expiring) == "budget"
    assert await client.cancel(cancelled, tenant=TENANT) == "cancelled"
    await asyncio.sleep(0.1)
    expire = ExpireWaiting(request_id=expiring, tenant=TENANT)
    assert (await s.run(expire)).tag is Tag.EXPIRED
    for rid, status in ((cancelled, "cancelled"), (expiring, "expired")):
        rec = await s.rec(rid)
        assert rec[Field.STATUS] == status and Field.WAITING not in rec
    assert await ledger(s) == {"spent": 0, "reserved": EST, "estimated": 0}


async def test_workers_settle_real_costs_and_admit_at_the_next_period(
    client: AsyncClient, settings: Settings, sync: redis.Redis, start_worker: Any
) -> None:
    """With real workers and the simulator: a $1/day budget at a $0.50 estimate buys two
    videos, settles them at their real cost, holds the other two with reason `budget`, and
    the admit timer armed for the next UTC day (5 s away on the test clock) buys them then,
    charged to the new day."""
    tenant_budget(sync, settings, "1/day", estimate_micro_usd=500_000)
    await start_worker(budget_test_clock=True, cost_estimate_usd=0.5)
    now = int(sync.time()[0]) * 1000
    to_day_end = periods_at(now).day_end_ms - now
    sync.hset(settings.keys.budget, TEST_CLOCK_FIELD, str(to_day_end - 5000))
    rids = [await submit(client) for _ in range(4)]
    s = Scripts(settings, client.redis)
    assert [await waiting(s, r) for r in rids] == [None, None, "budget", "budget"]
    assert TENANT in (await budget_status_async(client.redis, settings.keys)).held
    first = [await client.wait(r, timeout_s=10, tenant=TENANT) for r in rids[:2]]
    assert [v.status for v in first] == ["completed", "completed"]
    real = 0
    for r in rids[:2]:
        real += int((await s.rec(r))[Field.COST_MICRO_USD])
    assert real == 2 * 280_000
    day1 = (await s.rec(rids[0]))[Field.BUDGET_DAY]
    old_day = await s.redis.hgetall(settings.keys.budget_ledger("day", day1))
    assert old_day[f"t|{TENANT}|spent_micro"] == str(real)
    assert old_day[f"t|{TENANT}|reserved_micro"] == "0"
    last = [await client.wait(r, timeout_s=15, tenant=TENANT) for r in rids[2:]]
    assert [v.status for v in last] == ["completed", "completed"]
    days = {(await s.rec(r))[Field.BUDGET_DAY] for r in rids[2:]}
    assert len(days) == 1 and days != {day1}
    new_day = await s.redis.hgetall(settings.keys.budget_ledger("day", days.pop()))
    assert new_day[f"t|{TENANT}|spent_micro"] == str(2 * 280_000)


async def test_every_waiting_request_of_a_held_tenant_shows_budget(
    settings: Settings, sync: redis.Redis, s: Scripts
) -> None:
    """Requests queued for the cap show `budget` (record view, gateway, stats, metrics) once
    their tenant's budget holds the next of them, and what else holds them once it is
    raised."""
    import httpx
    from asgi_lifespan import LifespanManager
    from prometheus_client import CollectorRegistry, generate_latest

    from genqueue.gateway.app import create_app
    from genqueue.producer.api_keys import create_key
    from genqueue.worker.tenant_metrics import TenantCollector

    await s.redis.hset(s.keys.admission, "max_inflight", "1")  # type: ignore[misc]
    tenant_budget(sync, settings, "0.6/day")
    async with AsyncClient(settings) as client:
        rids = [await submit(client) for _ in range(4)]
        assert [await waiting(s, r) for r in rids] == [None, "cap", "cap", "cap"]
        await bought(s, rids[0], 300_000)  # frees the slot: the next admitted ($0.60 used)
        (nxt,) = [r for r in rids[1:] if await waiting(s, r) is None]  # same-ms ties: id order
        await bought(s, nxt, 300_000)  # then the budget holds the next and all behind it
        rest = [r for r in rids[1:] if r != nxt]
        assert [await waiting(s, r) for r in rest] == ["cap", "cap"]  # as queued
        assert [(await client.get(r)).waiting for r in rest] == ["budget", "budget"]
        stats = await client.stats(tenant=TENANT)
        assert stats.waiting["budget"] == 2 and stats.waiting["cap"] == 0
        assert (await client.stats()).waiting["budget"] == 2
        registry = CollectorRegistry()
        registry.register(TenantCollector(settings, sync))
        text = generate_latest(registry).decode()
        assert 'genqueue_tenant_waiting{reason="budget",tenant="acme"} 2.0' in text
        key, _ = create_key(sync, settings.keys, tenant=TENANT)
        app = create_app(settings, api_keys=None)
        async with LifespanManager(app) as manager:
            transport = httpx.ASGITransport(app=manager.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://gw") as http:
                got = await http.get(
                    f"/v1/generations/{rest[0]}", headers={"Authorization": f"Bearer {key}"}
                )
        assert got.status_code == 200, got.text
        assert got.json()["waiting"] == "budget"
        tenant_budget(sync, settings, "0.9/day")  # raised: the next goes, the last waits
        assert sorted([(await client.get(r)).waiting for r in rest], key=str) == [None, "cap"]


async def test_random_lives_keep_the_ledger_equal_to_the_records(
    client: AsyncClient, s: Scripts, settings: Settings, sync: redis.Redis
) -> None:
    """Over 300 seeded random steps, checked every 5 (submits, creates that answer, fail or
    die mid-POST, costs above and below the estimate or unknown, cancels at every stage), the
    ledger's
    reserved equals the records' open reservations, its spent equals what the records were
    charged, and spent + reserved never passes the budget plus the records' excess."""
    import random

    from tests.conftest import finish, submit_release

    rng = random.Random(26)
    budget = 3_000_000
    tenant_budget(sync, settings, "3/day")
    rids: list[str] = []

    async def check() -> None:
        recs = [await s.rec(r) for r in rids]
        reserved = sum(int(x.get(Field.BUDGET_RESERVED_MICRO_USD) or 0) for x in recs)
        charged, excess = 0, 0
        for x in recs:
            # Ended (nothing left to learn) or waiting: no reservation left open.
            done = x[Field.STATUS] not in ("pending", "submitting", "queued", "in_progress")
            if (done and x.get(Field.TRACKING) != "1") or x.get(Field.WAITING):
                assert Field.BUDGET_RESERVED_MICRO_USD not in x, x
            est = int(x.get(Field.BUDGET_ESTIMATE_MICRO_USD) or 0)
            c = int(x.get(Field.COST_MICRO_USD) or 0)
            c += est * (x.get(Field.COST_UNKNOWN) == "1")
            c += est * int(x.get(Field.POSSIBLY_BILLED) or 0)
            charged += c
            excess += max(0, c - est)
        led = await ledger(s)
        assert (led["reserved"], led["spent"]) == (reserved, charged)
        assert led["spent"] + led["reserved"] <= budget + excess

    for step in range(300):
        op = rng.random()
        live = [r for r in rids if (await s.rec(r))[Field.STATUS] in ("pending", "submitting")]
        polling = [r for r in rids if (await s.rec(r)).get(Field.TIMER) == "poll"]
        if op < 0.3 or not (live or polling):
            rids.append(await submit(client))
        elif op < 0.55 and live:
            rid = rng.choice(live)
            rec = await s.rec(rid)
            if rec.get(Field.TIMER) != "submit" or rec.get(Field.WAITING):
                continue
            crash = rng.random() < 0.15
            ok = await s.begin(rid, lease_ms=1 if crash else 60_000)
            if ok.tag is not Tag.OK or crash:
                await asyncio.sleep(0.005)
                continue
            if rng.random() < 0.2:
                await s.run(submit_release(rid, ok.submit_seq, "fail", 0, "400 bad request"))
            else:
                await s.submitted(rid, ok.submit_seq, upstream_id=f"up-{rid}-{ok.submit_seq}")
        elif op < 0.85 and polling:
            rid = rng.choice(polling)
            seq = int((await s.rec(rid))[Field.SEQ])
            unknown = rng.random() < 0.15
            cost = None if unknown else rng.choice([150_000, 280_000, 300_000, 450_000])
            f = dataclasses.replace(finish(rid, seq, "completed", cost), cost_unknown=unknown)
            await s.run(f)
        elif rids:
            rid = rng.choice(rids)
            await s.run(Cancel(request_id=rid, tenant=TENANT, tracking_limit_ms=60_000))
        if step % 5 == 4:
            await check()
    led = await ledger(s)
    assert led["spent"] > budget // 2 and sum([await waiting(s, r) == "budget" for r in rids])


async def test_a_request_sent_back_by_a_pause_gives_its_reservation_back(
    client: AsyncClient, s: Scripts, settings: Settings, sync: redis.Redis
) -> None:
    """An admitted request whose submit step meets a pause returns to the queue without its
    reservation; admitted again after the pause, it reserves again (once)."""
    tenant_budget(sync, settings, "10/day")
    rid = await submit(client)
    assert (await ledger(s))["reserved"] == EST
    now = int((await s.redis.time())[0]) * 1000
    await s.redis.hset(s.keys.pause, mapping={"until_ms": now + 60_000, "reason": "402"})
    assert (await s.begin(rid)).tag is Tag.WAITING
    assert await waiting(s, rid) == "paused"
    assert (await ledger(s))["reserved"] == 0
    assert Field.BUDGET_RESERVED_MICRO_USD not in await s.rec(rid)
    await s.redis.delete(s.keys.pause)
    await AsyncAdmission(s.redis, s.keys).admit_all()
    assert await waiting(s, rid) is None
    assert (await ledger(s))["reserved"] == EST
    assert (await admit(s, rid)).tag is Tag.OK


async def test_gateway_create_over_budget_with_fail_policy_answers_the_failed_generation(
    settings: Settings, sync: redis.Redis, s: Scripts
) -> None:
    """Over the gateway, a create its tenant's budget cannot cover under --over-budget fail
    is answered with the generation already failed and the budget's reason; nothing reserved."""
    import httpx
    from asgi_lifespan import LifespanManager

    from genqueue.gateway.app import create_app
    from genqueue.producer.api_keys import create_key

    tenant_budget(sync, settings, "0.1/day", over_budget="fail")
    key, _ = create_key(sync, settings.keys, tenant=TENANT)
    app = create_app(settings, api_keys=None)
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as http:
            got = await http.post(
                "/v1/generations", json=REQ, headers={"Authorization": f"Bearer {key}"}
            )
    assert got.status_code == 201, got.text
    body = got.json()
    assert body["status"] == "failed" and body["waiting"] is None
    assert body["error"].startswith("over budget: tenant acme has 100000 of its 100000")
    assert await ledger(s) == {"spent": 0, "reserved": 0, "estimated": 0}
