"""Every dollar recorded (issue 19): crashed creates ended by a cancel or deadline, superseded
upstream jobs, odd costs, and what a request may store in Redis. Driven at the scripts."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import random
import string
from typing import Any

import pytest
import redis
import redis.asyncio

from genqueue.producer.client import AsyncClient
from genqueue.producer.contracts import Cancel, Create, SubmitRelease, TrackExtra
from genqueue.producer.errors import InvalidRequest
from genqueue.producer.keys import SCHEMA_VERSION, Field, Tag
from genqueue.producer.scripts import ms, source
from genqueue.producer.settings import Settings
from genqueue.producer.timers import Timer
from genqueue.worker.cluster_metrics import ClusterCollector
from tests.conftest import finish
from tests.test_transitions import MODEL, Scripts, new

MAY_EXIST = "may have been created upstream"


async def crash_a_create(s: Scripts, rid: str) -> None:
    """Take the submit lease and let it expire, as when a worker died during its POST."""
    assert (await s.begin(rid, seq=0, lease_ms=1)).tag is Tag.OK
    await asyncio.sleep(0.01)


async def completed_once(client: AsyncClient, s: Scripts, cost: int = 280_000) -> None:
    """One request of MODEL created and completed at ``cost``: the model is accepted and
    its mean recorded cost known."""
    rid = await new(client)
    await s.to_polling(rid, upstream_id=f"up-{rid}")
    assert (await s.finish(rid, cost=cost)).tag is Tag.OK


async def track_extra(s: Scripts, rid: str, upstream_id: str, ended: str, cost: int | None) -> Any:
    seq = int((await s.rec(rid))[Field.SEQ])
    return await s.run(
        TrackExtra(
            request_id=rid,
            expected_seq=seq,
            upstream_id=upstream_id,
            ended=ended,
            cost_micro_usd=cost,
            next_delay_ms=1000,
            tracking_limit_ms=3_600_000,
        )
    )


# --- 1: a cancel or deadline after a crashed create -----------------------------------------


async def test_cancel_after_a_crashed_create_is_ambiguous_and_possibly_billed(
    client: AsyncClient, s: Scripts
) -> None:
    """A cancel that ends a request whose create crashed counts it as ambiguous and possibly
    billed, says the job may exist upstream, and stats price it at the model's mean cost."""
    await completed_once(client, s)
    rid = await new(client)
    await crash_a_create(s, rid)
    assert await client.cancel(rid) == "requested"
    assert (await s.begin(rid)).tag is Tag.CANCELLED
    view = await client.get(rid)
    assert view.status == "cancelled" and MAY_EXIST in (view.error or "")
    assert view.ambiguous_submits == 1 and view.possibly_billed == 1
    st = await client.stats()
    assert st.possibly_billed == {MODEL: 1}
    assert st.possibly_billed_estimate_micro_usd == {MODEL: 280_000}
    assert st.to_json_dict()["possibly_billed"]["estimate_usd"] == {MODEL: "0.280000"}


async def test_deadline_after_a_crashed_create_says_the_job_may_exist(
    client: AsyncClient, s: Scripts
) -> None:
    """A deadline that ends a request whose create crashed never claims the job was not
    created: it is ambiguous and possibly billed."""
    rid = await new(client, deadline_s=0.02)
    await crash_a_create(s, rid)
    await asyncio.sleep(0.03)
    assert (await s.begin(rid)).tag is Tag.EXPIRED
    view = await client.get(rid)
    assert view.status == "expired" and MAY_EXIST in (view.error or "")
    assert "before the upstream job was created" not in (view.error or "")
    assert view.ambiguous_submits == 1 and view.possibly_billed == 1
    # Possibly billed: kept for the full retention, not the short one of a never-created one.
    assert await s.redis.pttl(s.keys.record(rid)) > ms(s.settings.unsubmitted_retention_s)


async def test_every_unlearnable_create_is_possibly_billed(client: AsyncClient, s: Scripts) -> None:
    """A resubmit after a crash, the 'fail' policy, and a create that failed ambiguously each
    count one possibly billed attempt."""
    resubmitted = await new(client)
    await crash_a_create(s, resubmitted)
    assert (await s.begin(resubmitted)).ambiguous
    failed = await new(client)
    await crash_a_create(s, failed)
    assert (await s.begin(failed, policy="fail")).tag is Tag.FAILED
    timed_out = await new(client)
    ok = await s.begin(timed_out, seq=0)
    release = SubmitRelease(
        request_id=timed_out,
        submit_seq=ok.submit_seq,
        mode="retry",
        ambiguous=True,
        retry_delay_ms=10,
        error="read timeout",
        ambiguous_policy="resubmit",
    )
    assert (await s.run(release)).tag is Tag.RETRY
    for rid in (resubmitted, failed, timed_out):
        assert (await client.get(rid)).possibly_billed == 1
    assert (await client.stats()).possibly_billed == {"other": 3}


# --- 2: superseded upstream jobs ---------------------------------------------------------------


async def test_late_answer_is_tracked_to_its_end_and_its_cost_added_once(
    client: AsyncClient, s: Scripts
) -> None:
    """A create answered after a second attempt went out: its job holds a slot, is checked
    once the request's own job ends, and its cost is added once."""
    rid = await new(client)
    await crash_a_create(s, rid)
    second = await s.begin(rid)
    assert (await client.get(rid)).possibly_billed == 1
    assert (await s.submitted(rid, 1, "up-late")).tag is Tag.STALE
    view = await client.get(rid)
    assert view.possibly_billed == 0  # the job it may have made is known now
    assert view.superseded_pending == ("up-late",)
    assert (await client.stats()).active_upstream == 2  # the attempt out + the late job
    assert (await s.submitted(rid, second.submit_seq, "up-own")).tag is Tag.OK
    assert (await client.stats()).active_upstream == 2
    assert (await s.finish(rid, cost=280_000)).tag is Tag.OK
    rec = await s.rec(rid)
    assert rec[Field.TRACKING] == "extra" and rec[Field.TIMER] == "poll"
    assert await s.redis.zscore(s.keys.inflight, rid) is not None
    assert (await client.stats()).active_upstream == 1
    assert (await track_extra(s, rid, "up-late", "", None)).tag is Tag.OK  # still running
    assert (await track_extra(s, rid, "up-late", "completed", 100_000)).tag is Tag.DONE
    again = await track_extra(s, rid, "up-late", "completed", 100_000)
    assert again.tag is Tag.STALE  # the chain ended: the cost is never added twice
    view = await client.get(rid)
    assert view.status == "completed" and view.cost_micro_usd == 280_000
    assert view.superseded_cost_micro_usd == 100_000 and view.superseded_pending == ()
    st = await client.stats()
    assert st.cost_micro_usd == {MODEL: 380_000} and st.superseded == {MODEL: 1}
    assert st.active_upstream == 0 and st.inflight == 0 and st.superseded_running == 0


async def test_late_answer_after_the_request_ended_restarts_its_chain(
    client: AsyncClient, s: Scripts
) -> None:
    """A late answer for a request that already ended and left every index puts it back on
    one poll chain for that job, holding a slot the in-flight cap counts."""
    rid = await new(client)
    await crash_a_create(s, rid)
    await client.cancel(rid)
    assert (await s.begin(rid)).tag is Tag.CANCELLED
    assert await s.redis.zcard(s.keys.inflight) == 0
    assert (await s.submitted(rid, 1, "up-late")).tag is Tag.STALE
    rec = await s.rec(rid)
    assert (rec[Field.TRACKING], rec[Field.TIMER]) == ("extra", "poll")
    assert await s.redis.zscore(s.keys.inflight, rid) is not None
    assert (await client.stats()).active_upstream == 1
    await s.redis.hset(s.keys.admission, "max_inflight", "1")  # type: ignore[misc]
    other = await new(client)
    assert (await s.rec(other))[Field.WAITING] == "cap"
    # The superseded job's end frees its slot: that step admits the waiting request.
    assert (await track_extra(s, rid, "up-late", "cancelled", None)).tag is Tag.DONE
    assert (await client.get(rid)).status == "cancelled"
    assert (await s.rec(other))[Field.ADMITTED] == "1"
    assert (await s.begin(other)).tag is Tag.OK


async def test_record_of_the_previous_version_gets_its_extra_ids_tracked(
    client: AsyncClient, s: Scripts
) -> None:
    """A record written before superseded jobs were tracked (``upstream_ids`` only) has its
    extra ids tracked when its own job ends, each counted as holding a slot from then."""
    rid = await new(client)
    await s.to_polling(rid, upstream_id="up-own")
    # As the previous version left it: every id listed, none tracked or counted.
    await s.redis.hset(s.keys.record(rid), Field.UPSTREAM_IDS, json.dumps(["up-old", "up-own"]))
    assert (await s.finish(rid, cost=280_000)).tag is Tag.OK
    rec = await s.rec(rid)
    assert rec[Field.TRACKING] == "extra" and json.loads(rec[Field.EXTRA_IDS]) == ["up-old"]
    assert (await client.stats()).superseded_running == 1
    assert (await track_extra(s, rid, "up-old", "gone", None)).tag is Tag.DONE
    assert (await client.stats()).superseded_running == 0


async def test_superseded_tracking_ends_at_the_hard_limit(client: AsyncClient, s: Scripts) -> None:
    """Superseded jobs that never end are given up at the tracking limit, their slots freed."""
    rid = await new(client)
    await crash_a_create(s, rid)
    await client.cancel(rid)
    await s.begin(rid)
    await s.submitted(rid, 1, "up-late")
    seq = int((await s.rec(rid))[Field.SEQ])
    step = TrackExtra(
        request_id=rid,
        expected_seq=seq,
        upstream_id="up-late",
        ended="",
        cost_micro_usd=None,
        next_delay_ms=10,
        tracking_limit_ms=1,
    )
    assert (await s.run(step)).tag is Tag.OK
    await asyncio.sleep(0.01)
    assert (await s.run(dataclasses.replace(step, expected_seq=seq + 1))).tag is Tag.ABANDONED
    assert (await client.stats()).active_upstream == 0
    assert await s.redis.zcard(s.keys.inflight) == 0


# --- 3: a completed video with an odd cost ----------------------------------------------------


async def test_completed_job_of_unknown_cost_keeps_its_video(
    client: AsyncClient, s: Scripts
) -> None:
    """A completed job without a usable cost ends completed with its URL, the cost flagged
    unknown (never zero) on the record and in the totals."""
    rid = await new(client)
    await s.to_polling(rid)
    seq = int((await s.rec(rid))[Field.SEQ])
    odd = dataclasses.replace(finish(rid, seq, "completed", None), cost_unknown=True)
    assert (await s.run(odd)).tag is Tag.OK
    view = await client.get(rid)
    assert view.status == "completed" and view.video_url == "https://v/1.mp4"
    assert view.cost_unknown and view.cost_micro_usd is None
    st = await client.stats()
    assert st.cost_unknown == {MODEL: 1} and st.cost_micro_usd == {}


# --- 4: what a request can store --------------------------------------------------------------


async def test_spec_is_stored_as_utf8(client: AsyncClient, s: Scripts) -> None:
    """The spec key holds UTF-8 as it is: an emoji costs 4 bytes, not a 12-byte escape."""
    plain = await client.submit({"model": MODEL, "prompt": "x" * 100})
    emoji = await client.submit({"model": MODEL, "prompt": "🎬" * 100})
    size = await s.redis.strlen(s.keys.spec(emoji)) - await s.redis.strlen(s.keys.spec(plain))
    assert size == 300
    assert (await client.get(emoji)).request["prompt"] == "🎬" * 100


async def test_request_over_the_byte_cap_is_refused(settings: Settings) -> None:
    """A request whose stored form exceeds ``max_request_bytes`` is refused before any write."""
    small = dataclasses.replace(settings, max_request_bytes=2_000)
    async with AsyncClient(small) as client:
        await client.submit({"model": MODEL, "prompt": "é" * 900})
        with pytest.raises(InvalidRequest, match="bytes"):
            await client.submit({"model": MODEL, "prompt": "é" * 1_100})


async def test_never_created_request_has_the_short_retention(
    client: AsyncClient, s: Scripts
) -> None:
    """A request cancelled while pending, or expired before any create, is kept (record and
    spec) only for the shorter retention; a created one for the full one."""
    short = ms(s.settings.unsubmitted_retention_s)
    cancelled = await new(client)
    await client.cancel(cancelled)
    expired = await new(client, deadline_s=0.01)
    await asyncio.sleep(0.02)
    assert (await s.begin(expired, seq=0)).tag is Tag.EXPIRED
    for rid in (cancelled, expired):
        for key in (s.keys.record(rid), s.keys.spec(rid)):
            assert 0 < await s.redis.pttl(key) <= short
    created = await new(client)
    await s.to_polling(created)
    await s.finish(created)
    assert await s.redis.pttl(s.keys.record(created)) > short


async def test_unknown_model_names_leave_totals_and_labels_bounded(
    settings: Settings, s: Scripts
) -> None:
    """10,000 requests with random model names the upstream never accepted are counted under
    'other': the totals hash and the exporter's model labels stay bounded."""
    rng = random.Random(19)

    def create(i: int) -> Any:
        model = "".join(rng.choices(string.ascii_lowercase, k=12)) + f"/{i}"
        return Create(
            request_id=f"r{i}",
            fields={Field.VERSION: str(SCHEMA_VERSION), Field.MODEL: model},
            deadline_ms=60_000,
            spec=json.dumps({"request": {"model": model, "prompt": "x"}}),
            arm=Timer("submit", f"r{i}", 0),
        ).call(settings)

    def cancel(i: int) -> Any:
        return Cancel(request_id=f"r{i}", tracking_limit_ms=1000).call(settings)

    sync = redis.Redis.from_url(settings.redis_url, decode_responses=True)
    try:
        for lo in range(0, 10_000, 500):
            with sync.pipeline(transaction=False) as pipe:
                for i in range(lo, lo + 500):
                    for call in (create(i), cancel(i)):
                        pipe.eval(source(call.name), len(call.keys), *call.keys, *call.args)
                pipe.execute()
        totals = sync.hgetall(settings.keys.totals)
        assert totals == {"finished|other|cancelled": "10000"}
        collector = ClusterCollector(settings, client=sync)
        labels = {
            sample.labels.get("model")
            for family in collector.collect()
            for sample in family.samples
            if "model" in sample.labels
        }
        assert labels == {"other"}
    finally:
        sync.close()


def test_stats_and_record_tables_show_the_uncertain_spend() -> None:
    """``genqueue stats`` prints possibly billed attempts with their estimate, unknown costs
    and superseded jobs; ``genqueue get`` the record's own figures."""
    from rich.console import Console

    from genqueue.cli import record_table, stats_tables
    from genqueue.producer.record import RequestView
    from genqueue.producer.stats import Stats

    stats = Stats(
        requests_by_status={},
        tracking=0,
        active_upstream=1,
        inflight=1,
        queue_ready=0,
        queue_deferred=0,
        finished={(MODEL, "completed"): 2},
        cost_micro_usd={MODEL: 600_000},
        superseded_running=1,
        superseded={MODEL: 1},
        possibly_billed={MODEL: 3},
        cost_unknown={MODEL: 1},
        costed={MODEL: 2},
    )
    console = Console(width=200, record=True)
    for table in stats_tables(stats):
        console.print(table)
    out = console.export_text()
    assert "possibly billed" in out and "$0.90" in out  # 3 x the mean $0.30
    assert "1 (1 running)" in out
    view = RequestView.from_hash(
        {
            Field.ID: "r",
            Field.STATUS: "completed",
            Field.COST_UNKNOWN: "1",
            Field.POSSIBLY_BILLED: "1",
            Field.SUPERSEDED_COST_MICRO_USD: "100000",
            Field.EXTRA_IDS: '["up-2"]',
        }
    )
    console.print(record_table(view))
    out = console.export_text()
    assert "cost unknown" in out and "1 still followed" in out and "possibly billed" in out
