"""Admission (issue #25): requests beyond the in-flight cap wait in their tenant's admission
queue with no timer; every event that frees a slot admits the next one in the same script
(weighted fair share between tenants, then priority, then the earliest deadline)."""

from __future__ import annotations

import asyncio
import itertools
import json
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis
import redis.asyncio

from genqueue.producer.admission import AsyncAdmission, QueueFull
from genqueue.producer.client import AsyncClient
from genqueue.producer.contracts import Cancel
from genqueue.producer.keys import SCHEMA_VERSION, Field, Tag
from genqueue.producer.settings import Settings
from genqueue.producer.tenants import TenantConfig, TenantError, list_tenants, set_tenant
from genqueue.worker import admission as worker_admission
from genqueue.worker.admission import run_admit
from genqueue.worker.app import reconcile
from genqueue.worker.pause import CreatePause
from genqueue.worker.runtime import CTX_KEY, Runtime
from genqueue.worker.upstream import UpstreamClient
from tests.conftest import submit_release, worker_config
from tests.test_every_dollar import track_extra
from tests.test_transitions import Scripts

REQ = {"model": "minimax/video-01-director", "prompt": "a paper boat"}
#: Deadlines a little later for each request: waiting requests of equal priority go earliest
#: deadline first, and two created in the same millisecond with the same deadline_s tie.
_LATER = itertools.count()


async def sub(client: AsyncClient, **kw: Any) -> str:
    """Submit REQ (each request's default deadline a little later than the previous one's)."""
    kw.setdefault("deadline_s", 3000 + next(_LATER) / 100)
    return await client.submit(REQ, **kw)


@pytest.fixture
async def runtime(settings: Settings, aredis: redis.asyncio.Redis) -> AsyncIterator[Runtime]:
    """A worker runtime (nothing upstream is called)."""
    rt = Runtime(
        config=worker_config(settings, reconcile_grace_s=0.0),
        redis=aredis,
        upstream=UpstreamClient(base_url="http://sim", api_key="k"),
    )
    yield rt
    await rt.upstream.aclose()
    await rt.webhook_http.aclose()
    await rt.download_http.aclose()


async def set_cap(s: Scripts, cap: int) -> None:
    """The deployment's in-flight cap, as a worker announces it at start."""
    await s.redis.hset(s.keys.admission, "max_inflight", str(cap))  # type: ignore[misc]


async def waiting(s: Scripts, rid: str) -> str | None:
    return (await s.rec(rid)).get(Field.WAITING)


async def admitted(s: Scripts, rid: str) -> bool:
    return (await s.rec(rid)).get(Field.ADMITTED) == "1"


async def first_admitted(s: Scripts, ids: list[str]) -> str:
    """The first of ``ids`` holding a reserved slot."""
    for rid in ids:
        if await admitted(s, rid):
            return rid
    raise AssertionError("none admitted")


async def to_polling(s: Scripts, rid: str) -> None:
    """An admitted request's create goes through (it now holds an upstream job)."""
    ok = await s.begin(rid)
    assert ok.tag is Tag.OK, ok
    assert (await s.submitted(rid, ok.submit_seq, f"up-{rid[:8]}")).tag is Tag.OK


# --- waiting costs nothing ------------------------------------------------------------------


async def test_beyond_the_cap_a_request_waits_with_no_timer(
    client: AsyncClient, s: Scripts
) -> None:
    """A create beyond the cap joins its tenant's queue: pending, no timer, no arq job, not in
    the in-flight index; one within the cap reserves its slot and has its submit timer."""
    await set_cap(s, 1)
    first, second = await sub(client), await sub(client)
    assert await admitted(s, first)
    assert await s.redis.exists(f"arq:job:submit:{first}:0") == 1
    rec = await s.rec(second)
    assert (rec[Field.STATUS], rec[Field.WAITING], rec[Field.TIMER]) == ("pending", "cap", "")
    assert await s.redis.zscore(s.keys.inflight, second) is None
    assert not [k async for k in s.redis.scan_iter(f"arq:job:*{second}*")]
    assert await s.redis.zrange(s.keys.waiting("default"), 0, -1) == [second]
    stats = await client.stats()
    assert (stats.admitted, stats.waiting["cap"]) == (1, 1)
    assert (await client.get(second)).waiting == "cap"


# --- every admitting event --------------------------------------------------------------------


async def test_a_finish_admits_the_next_and_arms_its_submit_timer(
    client: AsyncClient, s: Scripts
) -> None:
    """A finish frees its slot and, in the same script, admits the waiting request: its slot
    reserved, its submit timer armed as arq's own JSON payload."""
    await set_cap(s, 1)
    first, second = await sub(client), await sub(client)
    await to_polling(s, first)
    assert (await s.finish(first)).tag is Tag.OK
    rec = await s.rec(second)
    assert (rec[Field.ADMITTED], rec[Field.TIMER], rec[Field.SEQ]) == ("1", "submit", "1")
    assert Field.WAITING not in rec
    payload = json.loads(await s.redis.get(f"arq:job:submit:{second}:1"))
    assert payload["f"] == "submit" and payload["a"] == [second, 1, SCHEMA_VERSION]
    assert payload["t"] is None and isinstance(payload["et"], int) and payload["k"] == {}
    assert await s.redis.zscore(s.keys.queue, f"submit:{second}:1") is not None
    assert await s.redis.zscore(s.keys.inflight, second) is not None
    assert (await s.begin(second)).tag is Tag.OK


async def test_a_failed_create_admits_the_next(client: AsyncClient, s: Scripts) -> None:
    """A create that fails for good frees its slot for the waiting request; one that will
    retry keeps its slot (its backoff is honoured) and admits nobody."""
    await set_cap(s, 1)
    first, second = await sub(client), await sub(client)
    ok = await s.begin(first)
    retry = await s.run(submit_release(first, ok.submit_seq, "retry", 10, "HTTP 503"))
    assert retry.tag is Tag.RETRY and await waiting(s, second) == "cap"
    ok = await s.begin(first)
    assert (
        await s.run(submit_release(first, ok.submit_seq, "fail", 0, "HTTP 400"))
    ).tag is Tag.FAILED
    assert await admitted(s, second)


async def test_a_cancel_of_a_request_holding_a_slot_admits_the_next(
    client: AsyncClient, s: Scripts
) -> None:
    """Cancelling an admitted request (its slot reserved) admits the next; cancelling one
    whose upstream job runs does not (its billed job is still tracked and holds the slot)."""
    await set_cap(s, 1)
    first, second, third = [await sub(client) for _ in range(3)]
    assert await client.cancel(first) == "cancelled"
    assert await admitted(s, second) and await waiting(s, third) == "cap"
    await to_polling(s, second)
    assert await client.cancel(second) == "cancelled"
    assert await waiting(s, third) == "cap"


async def test_the_end_of_tracking_admits_the_next(client: AsyncClient, s: Scripts) -> None:
    """A cancelled request's billed job, once seen to end, frees the slot for the next."""
    await set_cap(s, 1)
    first, second = await sub(client), await sub(client)
    await to_polling(s, first)
    await client.cancel(first)
    assert (await s.rec(first))[Field.TRACKING] == "1"
    assert await waiting(s, second) == "cap"
    assert (await s.finish(first, outcome="completed")).tag is Tag.OK
    assert await admitted(s, second)


async def test_tracking_given_up_admits_the_next(client: AsyncClient, s: Scripts) -> None:
    """A tracked job abandoned at the tracking limit frees its slot for the next."""
    await set_cap(s, 1)
    first, second = await sub(client), await sub(client)
    await to_polling(s, first)
    await s.run(Cancel(request_id=first, tracking_limit_ms=0))
    assert (await s.poll(first, status="in_progress")).tag is Tag.ABANDONED
    assert await admitted(s, second)


async def test_an_admitted_request_past_its_deadline_admits_the_next(
    client: AsyncClient, s: Scripts
) -> None:
    """An admitted request whose deadline passed before its create ends and gives its
    reserved slot to the next."""
    await set_cap(s, 1)
    first = await sub(client, deadline_s=0.001)
    second = await sub(client)
    await asyncio.sleep(0.01)
    assert (await s.begin(first)).tag is Tag.EXPIRED
    assert await admitted(s, second)


async def test_a_superseded_jobs_end_admits_the_next(client: AsyncClient, s: Scripts) -> None:
    """A superseded upstream job seen to end frees its slot for the next request."""
    await set_cap(s, 2)
    first, second = await sub(client), await sub(client)
    third = await sub(client)
    await to_polling(s, first)
    # A late answer of an earlier attempt: a second upstream job, holding a slot of its own.
    rec = await s.rec(first)
    assert (await s.submitted(first, int(rec[Field.SUBMIT_SEQ]) - 1, "up-late")).tag is Tag.STALE
    await to_polling(s, second)
    assert await waiting(s, third) == "cap"
    assert (await s.finish(first)).tag is Tag.OK  # its own job: the superseded one still runs
    assert await waiting(s, third) == "cap"
    assert (await track_extra(s, first, "up-late", "completed", None)).tag is Tag.DONE
    assert await admitted(s, third)


async def test_a_pause_ending_admits_one_probe_then_its_success_the_rest(
    client: AsyncClient, s: Scripts, runtime: Runtime
) -> None:
    """Requests meeting a pause wait (`paused`); the pause arms one `admit` timer at its end,
    whose run admits one request (the half-open probe); the probe's success admits the rest."""
    first, second, third = [await sub(client) for _ in range(3)]
    pause = CreatePause(s.redis, s.keys)
    until = await pause.pause(reason="test", code=402, duration_ms=50)
    job = f"admit:pause:{until}"
    assert await s.redis.zscore(s.keys.queue, job) == until
    assert json.loads(await s.redis.get(f"arq:job:{job}"))["a"] == ["pause", until, SCHEMA_VERSION]
    for rid in (first, second, third):
        assert (await s.begin(rid)).tag is Tag.WAITING
        assert await waiting(s, rid) == "paused"
    assert await run_admit(runtime, "pause") == 0  # still paused
    await asyncio.sleep(0.06)
    assert await run_admit(runtime, "pause") == 1  # half-open: one probe
    probe = await first_admitted(s, [first, second, third])
    went = await s.begin(probe)
    assert went.tag is Tag.OK and went.probe
    assert await pause.resume()
    assert (await s.submitted(probe, went.submit_seq)).tag is Tag.OK
    assert all([await admitted(s, r) for r in (first, second, third) if r != probe])


async def test_a_raised_global_cap_admits_at_a_workers_start(
    client: AsyncClient, s: Scripts, aredis: redis.asyncio.Redis
) -> None:
    """A worker announcing a higher cap (at its start) admits as many as it lets through."""
    await set_cap(s, 1)
    ids = [await sub(client) for _ in range(5)]
    assert await AsyncAdmission(aredis, s.keys).announce_cap(3) == 2
    assert [await admitted(s, r) for r in ids] == [True, True, True, False, False]


async def test_a_tenant_cap_or_weight_raised_admits(
    client: AsyncClient, s: Scripts, conn: redis.Redis
) -> None:
    """`tenant set --max-inflight` raised admits the tenant's waiting requests at once."""
    set_tenant(conn, s.keys, "acme", max_inflight=1)
    ids = [await sub(client, tenant="acme") for _ in range(3)]
    assert [await waiting(s, r) for r in ids] == [None, "tenant_cap", "tenant_cap"]
    set_tenant(conn, s.keys, "acme", max_inflight=2)
    assert [await admitted(s, r) for r in ids] == [True, True, False]
    set_tenant(conn, s.keys, "acme", weight=2.0)  # a weight change runs admission too
    assert not await admitted(s, ids[2])


async def test_a_tenants_freed_slot_admits_its_next(
    client: AsyncClient, s: Scripts, conn: redis.Redis
) -> None:
    """A tenant at its own cap leaves the ready set; one of its slots freeing brings it back,
    while another tenant goes on using the rest of the global cap."""
    set_tenant(conn, s.keys, "acme", max_inflight=1)
    set_tenant(conn, s.keys, "beta")
    await set_cap(s, 3)
    a = [await sub(client, tenant="acme") for _ in range(3)]
    b = [await sub(client, tenant="beta") for _ in range(3)]
    assert [await admitted(s, r) for r in a] == [True, False, False]
    assert [await admitted(s, r) for r in b] == [True, True, False]
    await to_polling(s, a[0])
    assert (await s.finish(a[0])).tag is Tag.OK
    assert await admitted(s, a[1]) and not await admitted(s, b[2])


async def test_the_reconciler_admits_what_an_old_workers_step_left(
    client: AsyncClient, s: Scripts, runtime: Runtime
) -> None:
    """A slot freed by a step that does not admit (a worker of the previous version) is taken
    by the reconciler's safety net."""
    await set_cap(s, 1)
    first, second = await sub(client), await sub(client)
    await client.cancel(first)
    assert await admitted(s, second)
    # As a previous worker would leave it: a free slot, a request waiting.
    await s.redis.hset(s.keys.record(second), mapping={Field.WAITING: "cap", Field.TIMER: ""})
    await s.redis.hdel(s.keys.record(second), Field.ADMITTED)
    await s.redis.hincrby(s.keys.counts, "admitted", -1)
    await s.redis.zadd(s.keys.waiting("default"), {second: 1})
    await s.redis.zadd(s.keys.admission_ready, {"default": 0})
    await reconcile({CTX_KEY: runtime})
    assert await admitted(s, second)


async def test_a_reservation_an_old_worker_left_behind_is_given_back(
    client: AsyncClient, s: Scripts, runtime: Runtime
) -> None:
    """An admitted request a worker of the previous version created (never giving back its
    reservation) has its slot counted again once the safety net sees it."""
    await set_cap(s, 1)
    first, second = await sub(client), await sub(client)
    # The old begin_submit: pending -> submitting, the reservation left as it was.
    await s.redis.hset(s.keys.record(first), Field.STATUS, "submitting")
    await s.redis.hincrby(s.keys.counts, "pending", -1)
    await s.redis.hincrby(s.keys.counts, "submitting", 1)
    # Old enough to be looked at.
    await s.redis.zadd(s.keys.admission_reserved, {f"default|{first}": 1})
    await reconcile({CTX_KEY: runtime})
    assert (await client.stats()).admitted == 0
    assert Field.ADMITTED not in await s.rec(first)
    assert await waiting(s, second) == "cap"  # the submitting one holds the only slot


# --- waiting requests end on time -----------------------------------------------------------


async def test_a_waiting_request_is_cancelled_at_once_and_leaves_every_key(
    client: AsyncClient, s: Scripts
) -> None:
    """Cancelling a waiting request ends it at once and removes it from every admission key."""
    await set_cap(s, 1)
    await sub(client)
    rid = await sub(client)
    assert await client.cancel(rid) == "cancelled"
    assert (await client.get(rid)).status == "cancelled"
    assert await s.redis.zrange(s.keys.waiting("default"), 0, -1) == []
    assert await s.redis.zscore(s.keys.admission_deadlines, rid) is None
    stats = await client.stats()
    assert (stats.waiting["cap"], stats.requests_by_status["pending"]) == (0, 1)


async def test_one_expiry_timer_at_the_earliest_waiting_deadline(
    client: AsyncClient, s: Scripts
) -> None:
    """Waiting requests share one expiry timer, armed at the earliest deadline and moved
    earlier when an earlier one joins (no timer per request)."""
    await set_cap(s, 1)
    await sub(client)
    late = await sub(client, deadline_s=300)
    at_late = int((await s.rec(late))[Field.DEADLINE_AT_MS])
    early = await sub(client, deadline_s=100)
    at_early = int((await s.rec(early))[Field.DEADLINE_AT_MS])
    await sub(client, deadline_s=200)
    jobs = [j async for j in s.redis.scan_iter("arq:job:admit:*")]
    assert sorted(jobs) == sorted(
        [f"arq:job:admit:expire:{at_late}", f"arq:job:admit:expire:{at_early}"]
    )
    assert await s.redis.hget(s.keys.admission, "expiry_at") == str(at_early)


async def test_a_waiting_request_expires_at_its_deadline(
    client: AsyncClient, s: Scripts, runtime: Runtime
) -> None:
    """The expiry timer's run ends the waiting requests past their deadline (not the others)
    and re-arms itself at the next deadline."""
    await set_cap(s, 1)
    await sub(client)
    short = await sub(client, deadline_s=0.02)
    long = await sub(client, deadline_s=100)
    await asyncio.sleep(0.05)
    await run_admit(runtime, "expire")
    view = await client.get(short)
    assert view.status == "expired" and "waiting" in (view.error or "")
    assert (await client.get(long)).status == "pending"
    at_long = (await s.rec(long))[Field.DEADLINE_AT_MS]
    assert await s.redis.hget(s.keys.admission, "expiry_at") == at_long
    assert await s.redis.exists(f"arq:job:admit:expire:{at_long}") == 1


async def test_the_reconciler_expires_waiting_requests_if_the_timer_was_lost(
    client: AsyncClient, s: Scripts, runtime: Runtime
) -> None:
    """A lost expiry timer delays no expiry past the reconciler's next pass."""
    await set_cap(s, 1)
    await sub(client)
    rid = await sub(client, deadline_s=0.02)
    async for key in s.redis.scan_iter("arq:job:admit:*"):
        await s.redis.delete(key)
    await s.redis.delete(s.keys.queue)
    await asyncio.sleep(0.05)
    await reconcile({CTX_KEY: runtime})
    assert (await client.get(rid)).status == "expired"


async def test_expiry_is_bounded_per_run(
    client: AsyncClient, s: Scripts, runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One run ends a bounded batch of due requests and re-arms the expiry timer due at once
    for the rest."""
    monkeypatch.setattr(worker_admission, "EXPIRE_BATCH", 2)
    await set_cap(s, 1)
    await sub(client)
    ids = [await sub(client, deadline_s=0.02) for _ in range(5)]
    await asyncio.sleep(0.05)
    await run_admit(runtime, "expire")
    assert sum([(await client.get(r)).status == "expired" for r in ids]) == 2
    sec, usec = await s.redis.time()
    at = int(await s.redis.hget(s.keys.admission, "expiry_at"))  # type: ignore[arg-type]
    assert at <= int(sec) * 1000 + int(usec) // 1000 + 1  # due now: the rest go next
    assert await s.redis.exists(f"arq:job:admit:expire:{at}") == 1


# --- fair share, caps, priorities -------------------------------------------------------------


async def test_weights_share_admissions_3_1_1(
    client: AsyncClient, s: Scripts, conn: redis.Redis
) -> None:
    """With three tenants all backlogged, weights 3:1:1 give them 60/20/20 % of 300
    admissions (each within 5 % of its share)."""
    for name, weight in (("a", 3.0), ("b", 1.0), ("c", 1.0)):
        set_tenant(conn, s.keys, name, weight=weight)
    await set_cap(s, 1)
    for _ in range(200):
        for name in ("a", "b", "c"):
            await sub(client, tenant=name)
    seen: Counter[str] = Counter()
    for _ in range(300):
        ((tenant, rid),) = [
            k.split("|") for k in await s.redis.zrange(s.keys.admission_reserved, 0, -1)
        ]
        seen[tenant] += 1
        assert await client.cancel(rid) == "cancelled"  # frees the slot: the next is admitted
    for name, share in (("a", 0.6), ("b", 0.2), ("c", 0.2)):
        assert abs(seen[name] / 300 - share) <= 0.05 * share, seen


async def test_a_tenant_alone_uses_the_whole_cap_and_idle_time_banks_no_credit(
    client: AsyncClient, s: Scripts, conn: redis.Redis
) -> None:
    """Work-conserving: a tenant alone takes every slot whatever its weight; a tenant that
    was idle meanwhile gets its weighted share from then on, not a burst of back credit."""
    set_tenant(conn, s.keys, "big", weight=1.0)
    set_tenant(conn, s.keys, "late", weight=1.0)
    await set_cap(s, 2)
    big = [await sub(client, tenant="big") for _ in range(40)]
    assert sum([await admitted(s, r) for r in big]) == 2
    for _ in range(20):  # "big" alone for a while
        rid = await first_admitted(s, big)
        await client.cancel(rid)
        big.remove(rid)
    late = [await sub(client, tenant="late") for _ in range(20)]
    order: list[str] = []
    for _ in range(10):
        rid = await first_admitted(s, big + late)
        order.append("late" if rid in late else "big")
        await client.cancel(rid)
        (big if rid in big else late).remove(rid)
    assert 4 <= order.count("late") <= 6, order


async def test_a_tenant_cap_holds_only_that_tenant(
    client: AsyncClient, s: Scripts, conn: redis.Redis
) -> None:
    """A tenant at its own max_inflight waits (`tenant_cap`) while others use the rest."""
    set_tenant(conn, s.keys, "capped", max_inflight=2)
    set_tenant(conn, s.keys, "free")
    await set_cap(s, 5)
    capped = [await sub(client, tenant="capped") for _ in range(5)]
    free = [await sub(client, tenant="free") for _ in range(5)]
    assert sum([await admitted(s, r) for r in capped]) == 2
    assert sum([await admitted(s, r) for r in free]) == 3
    assert {await waiting(s, r) for r in capped if not await admitted(s, r)} == {"tenant_cap"}
    assert (await client.stats(tenant="capped")).waiting["tenant_cap"] == 3


async def test_default_tenant_cap_counts_its_slots_exactly(
    client: AsyncClient, s: Scripts, conn: redis.Redis
) -> None:
    """`default`'s own max_inflight counts its slots as the cluster's minus the others'."""
    set_tenant(conn, s.keys, "default", max_inflight=1)
    set_tenant(conn, s.keys, "other")
    o = [await sub(client, tenant="other") for _ in range(2)]
    d = [await sub(client) for _ in range(2)]
    assert [await admitted(s, r) for r in o + d] == [True, True, True, False]
    assert await waiting(s, d[1]) == "tenant_cap"


async def test_max_waiting_refuses_a_submit_and_writes_nothing(
    client: AsyncClient, s: Scripts, conn: redis.Redis
) -> None:
    """Beyond its max_waiting, a tenant's submit is refused with QueueFull, nothing written."""
    set_tenant(conn, s.keys, "small", max_waiting=2)
    await set_cap(s, 1)
    ids = [await sub(client, tenant="small") for _ in range(3)]
    before = await s.redis.dbsize()
    with pytest.raises(QueueFull) as refused:
        await sub(client, tenant="small", idempotency_key="k")
    assert refused.value.tenant == "small" and "max_waiting" in str(refused.value)
    assert await s.redis.dbsize() == before
    await client.cancel(ids[1])
    assert await sub(client, tenant="small")  # room again


async def test_priority_then_earliest_deadline_orders_admission(
    client: AsyncClient, s: Scripts
) -> None:
    """Within a tenant, high goes before normal before low; within a priority the earliest
    deadline goes first."""
    await set_cap(s, 1)
    holder = await sub(client)
    low = await sub(client, priority="low", deadline_s=10)
    normal_late = await sub(client, deadline_s=300)
    normal_soon = await sub(client, deadline_s=60)
    high = await sub(client, priority="high", deadline_s=600)
    assert (await client.get(high)).priority == "high"
    order = []
    current = holder
    for _ in range(4):
        await client.cancel(current)
        current = await first_admitted(
            s, [r for r in (low, normal_late, normal_soon, high) if r not in order]
        )
        order.append(current)
    assert order == [high, normal_soon, normal_late, low]


async def test_a_bad_priority_is_refused(client: AsyncClient) -> None:
    """An unknown priority is refused before anything is written."""
    from genqueue.producer import InvalidRequest

    with pytest.raises(InvalidRequest) as bad:
        await sub(client, priority="urgent")  # type: ignore[arg-type]
    assert [e.field for e in bad.value.errors] == ["priority"]


async def test_status_checks_are_never_held_by_admission(client: AsyncClient, s: Scripts) -> None:
    """A request already created keeps its poll steps while the cap is full and others wait."""
    await set_cap(s, 1)
    first = await sub(client)
    waiting_ids = [await sub(client) for _ in range(3)]
    await to_polling(s, first)
    for _ in range(3):
        assert (await s.poll(first, status="in_progress")).tag is Tag.OK
    assert all([await waiting(s, r) == "cap" for r in waiting_ids])


# --- tenant settings ------------------------------------------------------------------------


def test_tenant_settings_are_validated_stored_and_keep_unknown_ones(
    settings: Settings, conn: redis.Redis
) -> None:
    """weight > 0, caps >= 0 are stored beside the settings a newer version wrote."""
    conn.hset(settings.keys.tenants, "acme", json.dumps({"webhook_secrets": [], "budget": 5}))
    set_tenant(conn, settings.keys, "acme", weight=2.5, max_inflight=4, max_waiting=100)
    (_, acme) = list_tenants(conn, settings.keys)
    assert (acme.weight, acme.max_inflight, acme.max_waiting) == (2.5, 4, 100)
    assert json.loads(conn.hget(settings.keys.tenants, "acme") or "{}")["budget"] == 5  # type: ignore[arg-type]
    for bad in ({"weight": 0.0}, {"max_inflight": -1}, {"max_waiting": -1}):
        with pytest.raises(TenantError):
            set_tenant(conn, settings.keys, "acme", **bad)  # type: ignore[arg-type]
    assert TenantConfig.from_json("x", '{"webhook_secrets":[]}').weight == 1.0


def test_the_exporter_counts_waiting_requests_by_tenant_and_reason(
    settings: Settings, conn: redis.Redis
) -> None:
    """`genqueue_tenant_waiting{tenant,reason}` counts each tenant's waiting requests
    (`default`'s: the cluster's minus the others')."""
    from prometheus_client import CollectorRegistry, generate_latest

    from genqueue.producer.sync_client import Client
    from genqueue.worker.tenant_metrics import TenantCollector

    set_tenant(conn, settings.keys, "acme", max_inflight=1)
    conn.hset(settings.keys.admission, "max_inflight", "2")
    with Client(settings) as client:
        for _ in range(3):
            client.submit(REQ, tenant="acme")  # one slot, two wait for acme's own cap
        for _ in range(3):
            client.submit(REQ)  # the second slot, two wait for the global cap
    registry = CollectorRegistry()
    registry.register(TenantCollector(settings, conn))
    text = generate_latest(registry).decode()
    assert 'genqueue_tenant_waiting{reason="tenant_cap",tenant="acme"} 2.0' in text
    assert 'genqueue_tenant_waiting{reason="cap",tenant="default"} 2.0' in text
    assert 'genqueue_tenant_waiting{reason="cap",tenant="acme"} 0.0' in text
