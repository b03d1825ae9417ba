"""Superseded upstream jobs: jobs created by an attempt whose answer came after another attempt
had gone out. Each is checked until it ends (its cost added once, its slot freed), on the
record's one timer chain: once the request's own job has ended, each poll step checks one of
them in turn (``tracking=extra``, ``lua/track_extra.lua``; docs/architecture.md, "Superseded
jobs").
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable

import structlog

from genqueue.producer.contracts import TrackExtra
from genqueue.producer.keys import POLL_TASK, Field, Tag
from genqueue.producer.scripts import ms
from genqueue.producer.timers import Timer
from genqueue.worker.runtime import Runtime
from genqueue.worker.upstream import Disposition, UpstreamError, classify

log = structlog.get_logger(__name__)


def next_superseded(raw: dict[str, str]) -> str | None:
    """The superseded upstream id whose turn it is (the head of ``extra_ids``), or None.

    A record written before superseded jobs were tracked has only ``upstream_ids``: the
    script derives the list from it at the request's end, so it is here by the time this runs.
    """
    try:
        ids = json.loads(raw.get(Field.EXTRA_IDS) or "[]")
    except ValueError:
        return None
    return str(ids[0]) if isinstance(ids, list) and ids else None


async def check_superseded(
    rt: Runtime, raw: dict[str, str], seq: int, rearm: Callable[[], Awaitable[object]]
) -> None:
    """Check the superseded job whose turn it is (one HTTP call) and record what was seen;
    ``rearm`` makes sure the record's current timer exists when this step was stale."""
    cfg = rt.config
    upstream_id = next_superseded(raw) or ""
    ended, cost = "", None
    streak = int(raw.get(Field.EXTRA_NOT_FOUND_STREAK) or "0")
    with structlog.contextvars.bound_contextvars(superseded_id=upstream_id):
        if upstream_id:
            try:
                job = await rt.upstream.retrieve(upstream_id)
            except UpstreamError as exc:
                # 404s in a row up to the limit: the upstream no longer knows it (one 404 is
                # not enough: a billed job dropped on a spurious one is a dollar unrecorded);
                # anything else: ask again later.
                if classify(exc) is Disposition.NOT_FOUND:
                    streak += 1
                    if streak >= cfg.not_found_limit:
                        ended, streak = "gone", 0
                log.info("superseded_poll_failed", error=str(exc)[:200], not_found_streak=streak)
            else:
                streak = 0
                if job.is_terminal:
                    ended, cost = job.status, job.cost_micro_usd
                    if job.cost_unknown:
                        rt.metrics.cost_unknown.inc()
        c = TrackExtra(
            request_id=raw[Field.ID],
            idempotency_key=raw.get(Field.IDEMPOTENCY_KEY) or None,
            expected_seq=seq,
            upstream_id=upstream_id,
            ended=ended,
            cost_micro_usd=cost,
            next_delay_ms=ms(cfg.scaled(cfg.schedule.poll_cap_s)),
            tracking_limit_ms=ms(cfg.settings.tracking_limit_s),
            not_found_streak=streak,
            arm=(step := Timer(POLL_TASK, raw[Field.ID], seq + 1)),
        ).call(cfg.settings)
        reply = await rt.scripts.run(c)
        if ended:
            log.info("superseded_job_ended", outcome=ended, cost_micro_usd=cost)
        if reply.tag is Tag.OK:
            if reply.step is None or Timer(POLL_TASK, raw[Field.ID], reply.step.seq) != step:
                await rearm()
        elif reply.tag is Tag.STALE:
            await rearm()
        elif reply.tag is Tag.ABANDONED:
            log.error("superseded_tracking_abandoned")
