"""The Lua transitions against a real Redis: every correctness rule of the record path."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from collections.abc import Callable
from typing import Any

import pytest
import redis.asyncio

from genqueue.producer.client import AsyncClient
from genqueue.producer.contracts import Cancel
from genqueue.producer.keys import SCHEMA_VERSION, Field, Keys, Tag
from genqueue.producer.replies import BeginSubmitReply, FinishReply, StepReply
from genqueue.producer.scripts import AsyncScripts, ms
from genqueue.producer.settings import Settings
from genqueue.producer.stats import redis_time_ms
from tests.conftest import begin_submit, finish, poll_update, submit_release, submitted

MODEL = "minimax/video-01-director"
REQ = {"model": MODEL, "prompt": "a lighthouse at dusk"}


class Scripts:
    """Calls the transition scripts the way the worker does, with readable arguments."""

    def __init__(self, settings: Settings, client: redis.asyncio.Redis) -> None:
        self.settings = settings
        self.keys: Keys = settings.keys
        self.redis = client
        self.scripts = AsyncScripts(client)

    async def run(self, builder: Any, *, idem: str | None = None) -> Any:
        """Run a script builder, with the idempotency key the record names (as the worker
        passes it) unless ``idem`` is given."""
        if idem is None:
            idem = await self.redis.hget(
                self.keys.record(builder.request_id), Field.IDEMPOTENCY_KEY
            )
        if idem:
            builder = dataclasses.replace(builder, idempotency_key=idem)
        return await self.scripts.run(builder.call(self.settings))

    async def rec(self, rid: str) -> dict[str, str]:
        return await self.redis.hgetall(self.keys.record(rid))  # type: ignore[misc]

    async def begin(
        self,
        rid: str,
        *,
        seq: int | None = None,
        cap: int = 0,
        lease_ms: int = 60_000,
        policy: str = "resubmit",
    ) -> BeginSubmitReply:
        if seq is None:
            seq = int((await self.rec(rid))[Field.SEQ])
        return await self.run(
            begin_submit(
                self.settings,
                rid,
                seq=seq,
                cap=cap,
                lease_ms=lease_ms,
                owner="w1",
                policy=policy,
            )
        )

    async def submitted(
        self, rid: str, submit_seq: int, upstream_id: str = "up-1", status: str = "queued"
    ) -> StepReply:
        return await self.run(submitted(rid, submit_seq, upstream_id, status))

    async def poll(self, rid: str, *, status: str = "in_progress", error: str = "") -> StepReply:
        seq = int((await self.rec(rid))[Field.SEQ])
        return await self.run(poll_update(rid, seq, status, error))

    async def finish(
        self,
        rid: str,
        outcome: str = "completed",
        cost: int | None = 280_000,
        seq: int | None = None,
        error: str = "",
    ) -> FinishReply:
        if seq is None:
            seq = int((await self.rec(rid))[Field.SEQ])
        return await self.run(dataclasses.replace(finish(rid, seq, outcome, cost), error=error))

    async def to_polling(self, rid: str, upstream_id: str = "up-1") -> None:
        ok = await self.begin(rid)
        assert ok.tag is Tag.OK
        assert (await self.submitted(rid, ok.submit_seq, upstream_id)).tag is Tag.OK


async def new(client: AsyncClient, **kw: Any) -> str:
    return await client.submit(REQ, **kw)


# --- create / submit -------------------------------------------------------------------------


async def test_submit_writes_pending_record_indexes_and_one_timer(
    client: AsyncClient, s: Scripts
) -> None:
    """submit() writes a versioned pending record, indexes it, and arms exactly one timer."""
    rid = await new(client)
    rec = await s.rec(rid)
    assert rec[Field.STATUS] == "pending" and rec[Field.VERSION] == str(SCHEMA_VERSION)
    assert json.loads(await s.redis.get(s.keys.spec(rid))) == {"request": REQ}
    assert Field.REQUEST not in rec
    assert await s.redis.zscore(s.keys.inflight, rid) is not None
    assert (await client.stats()).requests_by_status["pending"] == 1
    assert await s.redis.zrange(s.keys.queue, 0, -1) == [f"submit:{rid}:0"]


async def test_timer_payload_is_json_with_schema_version(client: AsyncClient, s: Scripts) -> None:
    """Timer payloads are JSON (never pickle) and carry the schema version (rule 12)."""
    rid = await new(client)
    payload = json.loads(await s.redis.get(f"arq:job:submit:{rid}:0"))
    assert payload["f"] == "submit" and payload["a"] == [rid, 0, SCHEMA_VERSION]


async def test_same_idempotency_key_gives_same_id_and_one_record(
    client: AsyncClient, s: Scripts
) -> None:
    """The same idempotency key returns the same id and writes nothing new."""
    a = await new(client, idempotency_key="order-7")
    b = await new(client, idempotency_key="order-7")
    assert a == b
    assert len(await s.redis.keys(f"{s.keys.prefix}:req:*")) == 1
    assert await s.redis.zcard(s.keys.queue) == 1


async def test_invalid_request_writes_nothing(client: AsyncClient, s: Scripts) -> None:
    """A refused request leaves Redis untouched."""
    from genqueue.producer.errors import InvalidRequest

    with pytest.raises(InvalidRequest):
        await client.submit({"model": MODEL, "prompt": ""})
    assert await s.redis.dbsize() == 0


async def test_lease_blocks_a_second_submit_chain(client: AsyncClient, s: Scripts) -> None:
    """A live submit lease makes a second chain defer, never POST again (rule 1)."""
    rid = await new(client)
    first = await s.begin(rid, seq=0)
    assert first.tag is Tag.OK and not first.ambiguous
    second = await s.begin(rid, seq=0)
    assert second.tag is Tag.LEASED and second.step and second.step.delay_ms > 0
    rec = await s.rec(rid)
    assert rec[Field.SUBMIT_SEQ] == "1" and Field.AMBIGUOUS_SUBMITS not in rec  # absent = 0


async def test_expired_lease_is_an_ambiguous_submit(client: AsyncClient, s: Scripts) -> None:
    """Only an expired lease starts an ambiguous resubmit, and it is counted (rule 1)."""
    rid = await new(client)
    assert (await s.begin(rid, lease_ms=1)).tag is Tag.OK
    await asyncio.sleep(0.01)
    again = await s.begin(rid)
    assert again.tag is Tag.OK and again.submit_seq == 2 and again.ambiguous
    assert (await s.rec(rid))[Field.AMBIGUOUS_SUBMITS] == "1"


async def test_ambiguous_policy_fail_fails_the_request(client: AsyncClient, s: Scripts) -> None:
    """With the 'fail' policy an ambiguous submit ends the request as failed."""
    rid = await new(client)
    await s.begin(rid, lease_ms=1)
    await asyncio.sleep(0.01)
    assert (await s.begin(rid, policy="fail")).tag is Tag.FAILED
    view = await client.get(rid)
    assert view.status == "failed" and "ambiguous" in (view.error or "")
    assert (await client.stats()).active_upstream == 0


async def test_stale_timer_does_nothing(client: AsyncClient, s: Scripts) -> None:
    """A timer whose seq has moved on changes nothing."""
    rid = await new(client)
    before = await s.rec(rid)
    assert (await s.begin(rid, seq=5)).tag is Tag.STALE
    assert await s.rec(rid) == before


async def test_cap_admits_only_up_to_cap_under_concurrency(client: AsyncClient, s: Scripts) -> None:
    """Concurrent submits never hold more than the cap (rule 5): the rest wait without a
    timer, and a finish admits exactly the next one."""
    await s.redis.hset(s.keys.admission, "max_inflight", "5")  # type: ignore[misc]
    ids = list(await asyncio.gather(*(new(client) for _ in range(20))))
    recs = [await s.rec(r) for r in ids]
    admitted = [r for r, rec in zip(ids, recs, strict=True) if rec.get(Field.ADMITTED) == "1"]
    waiting = [r for r, rec in zip(ids, recs, strict=True) if rec.get(Field.WAITING) == "cap"]
    assert (len(admitted), len(waiting)) == (5, 15)
    assert all(rec[Field.TIMER] == "" for rec in recs if rec.get(Field.WAITING))
    replies = await asyncio.gather(*(s.begin(r, seq=0) for r in ids))
    assert sum(r.tag is Tag.OK for r in replies) == 5  # a waiting one has no submit step
    assert (await client.stats()).active_upstream == 5
    await s.submitted(admitted[0], 1)
    await s.finish(admitted[0])
    now = [await s.rec(r) for r in waiting]
    assert sum(rec.get(Field.ADMITTED) == "1" for rec in now) == 1
    stats = await client.stats()
    assert (stats.active_upstream, stats.admitted, stats.waiting["cap"]) == (4, 1, 14)


async def test_create_failure_releases_the_slot_and_retries(
    client: AsyncClient, s: Scripts
) -> None:
    """A create that did not happen re-arms the submit, its slot kept reserved for the retry
    (no upstream job in flight)."""
    rid = await new(client)
    ok = await s.begin(rid, seq=0)
    reply = await s.run(submit_release(rid, ok.submit_seq, "retry", 500, "HTTP 429"))
    assert reply.tag is Tag.RETRY and reply.step.delay_ms == 500
    rec = await s.rec(rid)
    assert rec[Field.STATUS] == "pending" and rec[Field.TIMER] == "submit"
    assert rec[Field.ADMITTED] == "1"
    stats = await client.stats()
    assert (stats.active_upstream, stats.admitted) == (0, 1)


async def test_bad_request_fails_once(client: AsyncClient, s: Scripts) -> None:
    """A rejected create fails the request with the upstream's message."""
    rid = await new(client)
    ok = await s.begin(rid, seq=0)
    reply = await s.run(submit_release(rid, ok.submit_seq, "fail", 0, "bad size"))
    assert reply.tag is Tag.FAILED
    view = await client.get(rid)
    assert view.status == "failed" and view.error == "bad size"


# --- submitted / poll / finish -----------------------------------------------------------------


async def test_submitted_records_upstream_id_and_arms_poll(client: AsyncClient, s: Scripts) -> None:
    """The upstream id is written with the status change and the first poll step."""
    rid = await new(client)
    ok = await s.begin(rid, seq=0)
    reply = await s.submitted(rid, ok.submit_seq, "up-A", "in_progress")
    assert reply.tag is Tag.OK
    rec = await s.rec(rid)
    assert rec[Field.UPSTREAM_ID] == "up-A" and rec[Field.STATUS] == "in_progress"
    assert rec[Field.TIMER] == "poll" and rec[Field.SEQ] == str(reply.step.seq)
    assert Field.UPSTREAM_IDS not in rec  # a lone id is not repeated
    assert (await client.get(rid)).upstream_ids == ["up-A"]


async def test_superseded_create_keeps_its_upstream_id(client: AsyncClient, s: Scripts) -> None:
    """An upstream id from a superseded attempt is kept in upstream_ids, not lost."""
    rid = await new(client)
    await s.begin(rid, seq=0, lease_ms=1)
    await asyncio.sleep(0.01)
    second = await s.begin(rid)
    assert (await s.submitted(rid, 1, "up-old")).tag is Tag.STALE
    assert (await s.submitted(rid, second.submit_seq, "up-new")).tag is Tag.OK
    rec = await s.rec(rid)
    assert rec[Field.UPSTREAM_ID] == "up-new"
    assert json.loads(rec[Field.UPSTREAM_IDS]) == ["up-old", "up-new"]
    # The other order: the late answer of the old attempt comes after the new one's.
    rid2 = await new(client)
    await s.begin(rid2, seq=0, lease_ms=1)
    await asyncio.sleep(0.01)
    second = await s.begin(rid2)
    assert (await s.submitted(rid2, second.submit_seq, "up-new")).tag is Tag.OK
    assert (await s.submitted(rid2, 1, "up-old")).tag is Tag.STALE
    view = await client.get(rid2)
    assert view.upstream_id == "up-new" and view.upstream_ids == ["up-new", "up-old"]


async def test_poll_with_old_seq_is_stale(client: AsyncClient, s: Scripts) -> None:
    """A duplicate poll with an old seq writes nothing."""
    rid = await new(client)
    await s.to_polling(rid)
    seq = (await s.rec(rid))[Field.SEQ]
    assert (await s.poll(rid)).tag is Tag.OK
    before = await s.rec(rid)
    reply = await s.run(poll_update(rid, int(seq), "in_progress"))
    assert reply.tag is Tag.STALE
    assert await s.rec(rid) == before


async def test_finish_updates_totals_indexes_and_ttl(client: AsyncClient, s: Scripts) -> None:
    """The terminal step updates totals, leaves every index and starts the retention TTL."""
    rid = await new(client, idempotency_key="k-1")
    await s.to_polling(rid)
    reply = await s.finish(rid, cost=280_000)
    assert (reply.tag, reply.status, reply.ended_now) == (Tag.OK, "completed", True)
    st = await client.stats()
    assert st.finished == {(MODEL, "completed"): 1}
    assert st.cost_micro_usd == {MODEL: 280_000}
    assert st.inflight == 0 and st.active_upstream == 0
    assert sum(st.requests_by_status.values()) == 0
    retention = ms(s.settings.retention_s)
    assert 0 < await s.redis.pttl(s.keys.record(rid)) <= retention
    assert 0 < await s.redis.pttl(s.keys.spec(rid)) <= retention
    assert 0 < await s.redis.pttl(s.keys.idempotency("k-1")) <= retention


async def test_polling_record_stays_a_compact_listpack(client: AsyncClient, s: Scripts) -> None:
    """A polling record whose request has a long prompt, metadata and webhook URL stays a
    listpack: every value that can be long lives in the spec key."""
    long_req = {"model": MODEL, "prompt": "a lighthouse at dusk, " * 40}
    metadata = {"customer": "c" * 100, "order": "o" * 100}
    rid = await client.submit(
        {**long_req, "metadata": metadata},
        webhook_url="https://hooks.example.com/" + "p" * 200,
        idempotency_key="short-key",
    )
    await s.to_polling(rid, upstream_id="019a0068-794a-7629-9f6d-a54988a935db")
    await s.poll(rid)
    assert await s.redis.object("encoding", s.keys.record(rid)) == "listpack"
    view = await client.get(rid)
    assert view.request == long_req and view.metadata["order"] == "o" * 100
    assert view.webhook_url == "https://hooks.example.com/" + "p" * 200


async def test_schema_1_record_is_read_and_finished(client: AsyncClient, s: Scripts) -> None:
    """A record written by schema 1 (body and webhook URL in the hash, no spec key) is read
    whole and still owes its webhook when it ends."""
    rid = await new(client)
    spec = json.loads(await s.redis.get(s.keys.spec(rid)))
    await s.redis.delete(s.keys.spec(rid))
    await s.redis.hset(
        s.keys.record(rid),
        mapping={
            Field.VERSION: "1",
            Field.REQUEST: json.dumps(spec["request"]),
            Field.METADATA: "{}",
            Field.WEBHOOK_URL: "https://hooks.example.com/x",
        },
    )
    view = await client.get(rid)
    assert view.request == REQ and view.webhook_url == "https://hooks.example.com/x"
    await s.to_polling(rid)
    assert (await s.finish(rid)).tag is Tag.OK
    rec = await s.rec(rid)
    assert rec[Field.WEBHOOK_STATE] == "pending"
    assert await s.redis.zscore(s.keys.outbox, rid) is not None


async def test_terminal_status_never_changes(client: AsyncClient, s: Scripts) -> None:
    """After a terminal state, cancel, poll and finish change nothing (no double count)."""
    rid = await new(client)
    await s.to_polling(rid)
    seq = (await s.rec(rid))[Field.SEQ]
    await s.finish(rid, outcome="failed", cost=None)
    before = await s.rec(rid)
    assert await client.cancel(rid) == "already_finished"
    assert (await s.finish(rid, seq=int(seq))).tag is Tag.STALE
    assert (await s.finish(rid)).tag is Tag.STALE
    assert await s.rec(rid) == before
    assert (await client.stats()).finished == {(MODEL, "failed"): 1}


async def test_upstream_cancelled_job_fails_the_request(client: AsyncClient, s: Scripts) -> None:
    """A job the upstream cancelled ends the request ``failed`` ("cancelled by the upstream"):
    ``cancelled`` stays the user's word; the upstream status is kept as sent."""
    rid = await new(client)
    await s.to_polling(rid)
    reply = await s.finish(rid, outcome="cancelled", cost=None, error="quota shift")
    assert reply.tag is Tag.OK and reply.status == "failed"
    rec = await s.rec(rid)
    assert rec[Field.STATUS] == "failed" and rec[Field.UPSTREAM_STATUS] == "cancelled"
    assert rec[Field.ERROR] == "cancelled by the upstream: quota shift"
    assert (await client.stats()).finished == {(MODEL, "failed"): 1}


async def test_money_is_integer_micro_dollars(client: AsyncClient, s: Scripts) -> None:
    """Cost totals are exact integer sums (0.1 + 0.2 is 0.3 to the micro-dollar) (rule 10)."""
    for cost in (100_000, 200_000, 280_000):
        rid = await new(client)
        await s.to_polling(rid)
        await s.finish(rid, cost=cost)
    st = await client.stats()
    assert st.total_cost_micro_usd == 580_000
    assert st.to_json_dict()["total_cost_usd"] == "0.580000"


# --- cancel, deadline, tracking (rule 2) ----------------------------------------------------------


async def test_cancel_pending_is_immediate(client: AsyncClient, s: Scripts) -> None:
    """Cancelling a pending request ends it at once and frees everything."""
    rid = await new(client)
    assert await client.cancel(rid) == "cancelled"
    assert (await client.get(rid)).status == "cancelled"
    assert (await s.begin(rid, seq=0)).tag is Tag.STALE
    assert await s.redis.zcard(s.keys.inflight) == 0


async def test_cancel_of_billed_job_shows_cancelled_and_keeps_tracking_cost(
    client: AsyncClient, s: Scripts
) -> None:
    """A cancelled request whose upstream job exists is still polled until its cost is known."""
    rid = await new(client)
    await s.to_polling(rid)
    assert await client.cancel(rid) == "cancelled"
    view = await client.get(rid)
    assert view.status == "cancelled" and view.tracking and view.is_terminal
    assert (await client.stats()).active_upstream == 1
    poll = await s.poll(rid)
    assert poll.tag is Tag.OK and poll.step and poll.step.delay_ms >= 1000
    reply = await s.finish(rid, cost=280_000)
    assert (reply.tag, reply.status, reply.ended_now) == (
        Tag.OK,
        "cancelled",
        False,
    )  # ended at the cancel
    st = await client.stats()
    assert st.cost_micro_usd == {MODEL: 280_000}
    assert st.finished == {(MODEL, "cancelled"): 1}
    assert st.active_upstream == 0 and st.tracking == 0
    assert (await client.get(rid)).status == "cancelled"


async def test_cancel_while_submitting_is_honoured_when_create_answers(
    client: AsyncClient, s: Scripts
) -> None:
    """A cancel during the create POST takes effect when the upstream id is recorded."""
    rid = await new(client)
    ok = await s.begin(rid, seq=0)
    assert await client.cancel(rid) == "requested"
    assert (await s.submitted(rid, ok.submit_seq)).tag is Tag.OK
    view = await client.get(rid)
    assert view.status == "cancelled" and view.tracking and view.upstream_id == "up-1"


async def test_deadline_expires_but_billed_job_is_tracked(client: AsyncClient, s: Scripts) -> None:
    """A passed deadline shows expired at once; the upstream job is still tracked."""
    rid = await new(client, deadline_s=0.05)
    await s.to_polling(rid)
    await asyncio.sleep(0.08)
    assert (await s.poll(rid)).tag is Tag.OK
    view = await client.get(rid)
    assert view.status == "expired" and view.tracking


async def test_pending_past_deadline_expires_without_submitting(
    client: AsyncClient, s: Scripts
) -> None:
    """A request still pending at its deadline expires instead of being created."""
    rid = await new(client, deadline_s=0.01)
    await asyncio.sleep(0.03)
    assert (await s.begin(rid, seq=0)).tag is Tag.EXPIRED
    assert (await client.get(rid)).status == "expired"


async def test_tracking_stops_at_the_hard_limit(client: AsyncClient, s: Scripts) -> None:
    """Tracking a cancelled job ends after the hard limit, freeing its slot."""
    rid = await new(client)
    await s.to_polling(rid)
    await s.run(Cancel(request_id=rid, tracking_limit_ms=1))
    await asyncio.sleep(0.01)
    assert (await s.poll(rid)).tag is Tag.ABANDONED
    assert (await client.stats()).active_upstream == 0
    assert (await client.get(rid)).status == "cancelled"


# --- nothing resurrects (rule 9), scripts survive restarts (rule 6), one clock (rule 7) ----------


@pytest.mark.parametrize(
    "make",
    [
        lambda st: begin_submit(st, "ghost", seq=0, lease_ms=1000),
        lambda st: submitted("ghost", 1, "up", "queued"),
        lambda st: submit_release("ghost", 1, "retry", 1, "e"),
        lambda st: poll_update("ghost", 1, "queued"),
        lambda st: finish("ghost", 1, "completed", 5),
        lambda st: Cancel(request_id="ghost", tracking_limit_ms=1),
    ],
    ids=["begin_submit", "submitted", "submit_release", "poll_update", "finish", "cancel"],
)
async def test_transition_on_missing_record_writes_nothing(
    s: Scripts, make: Callable[[Settings], Any]
) -> None:
    """Every transition on a missing record answers MISSING and writes no key."""
    assert (await s.run(make(s.settings))).tag is Tag.MISSING
    assert await s.redis.dbsize() == 0


async def test_scripts_survive_script_flush(client: AsyncClient, s: Scripts) -> None:
    """Transitions still work after Redis forgot every script (a restart) (rule 6)."""
    rid = await new(client)
    await s.redis.script_flush()
    assert (await s.begin(rid, seq=0)).tag is Tag.OK
    await s.redis.script_flush()
    assert (await new(client)) != rid


async def test_times_come_from_redis_not_the_host(
    client: AsyncClient, s: Scripts, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Record times use Redis TIME even when the host clock is wildly wrong (rule 7)."""
    monkeypatch.setattr(time, "time", lambda: 946_684_800.0)  # the year 2000
    rid = await new(client)
    await s.to_polling(rid)
    now = redis_time_ms(await s.redis.time())
    rec = await s.rec(rid)
    for f in (Field.ENQUEUED_AT_MS, Field.SUBMITTED_AT_MS, Field.NEXT_CHECK_AT_MS):
        assert abs(int(rec[f]) - now) < 60_000, f
    score = await s.redis.zscore(s.keys.queue, f"submit:{rid}:0")
    assert score is not None and abs(score - now) < 60_000


async def test_forgotten_idempotency_key_is_refused_before_any_write(
    client: AsyncClient, s: Scripts
) -> None:
    """A transition called without the request's idempotency mapping fails loudly, writing
    nothing, so a mapping can never outlive its record (rule 9)."""
    rid = await new(client, idempotency_key="k-2")
    before = await s.rec(rid)
    with pytest.raises(redis.exceptions.ResponseError, match="idempotency key"):
        await s.scripts.run(Cancel(request_id=rid, tracking_limit_ms=1).call(s.settings))
    assert await s.rec(rid) == before


async def test_event_stream_records_each_transition(client: AsyncClient, s: Scripts) -> None:
    """Each transition is appended to the event stream in the same step."""
    rid = await new(client)
    await s.to_polling(rid)
    await s.finish(rid)
    events = await s.redis.xrange(s.keys.events)
    assert [e[1]["status"] for e in events] == ["pending", "submitting", "queued", "completed"]
