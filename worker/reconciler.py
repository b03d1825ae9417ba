"""The reconciler: re-arms timers that were lost (a crash between two writes, a Redis that
lost its last second of AOF). It only *arms*; the tasks themselves decide what to do. Its
periodic run is also admission's safety net (``worker/app.py`` ``reconcile``)."""

from __future__ import annotations

import time

import structlog

from genqueue.producer.scripts import ms
from genqueue.producer.stats import oldest_due_age_ms, redis_time_ms
from genqueue.worker.runtime import Runtime
from genqueue.worker.tasks import current_timer

log = structlog.get_logger(__name__)


async def queue_lag_ms(rt: Runtime, now_ms: int) -> int:
    """How far behind the workers are: age of the oldest due timer (0 when none is due)."""
    return oldest_due_age_ms(await rt.redis.zrange(rt.keys.queue, 0, 0, withscores=True), now_ms)


async def reconcile_once(rt: Runtime) -> int:
    """Re-arm every in-flight request whose next check is overdue by more than the grace
    period; returns how many timers were really missing (and are now armed).

    The grace widens by the queue's own lag: when workers are behind, overdue checks are
    usually waiting their turn, not lost (arming them would only cost lookups).
    """
    cfg = rt.config
    now = redis_time_ms(await rt.redis.time())
    rt.metrics.clock_skew.set(time.time() - now / 1000)
    lag = await queue_lag_ms(rt, now)
    cutoff = now - ms(cfg.scaled(cfg.reconcile_grace_s)) - lag
    rearmed = 0
    # Paged by a (score, members seen at that score) cursor, not by offset from the start:
    # an offset costs Redis O(offset) per page, O(N²) per pass.
    low: float | str = "-inf"
    seen_at_low = 0
    while True:
        page: list[tuple[str, float]] = await rt.redis.zrangebyscore(
            rt.keys.inflight,
            low,
            cutoff,
            start=seen_at_low,
            num=cfg.reconcile_batch,
            withscores=True,
        )
        ids = [request_id for request_id, _ in page]
        # One round trip reads the whole batch's records, one more arms their timers.
        async with rt.redis.pipeline(transaction=False) as pipe:
            for request_id in ids:
                pipe.hgetall(rt.keys.record(request_id))
            records: list[dict[str, str]] = await pipe.execute()
        due = [
            current
            for request_id, raw in zip(ids, records, strict=True)
            if (current := current_timer(request_id, raw)) is not None
        ]
        rearmed += sum(await rt.timers.arm_many(due))
        if len(page) < cfg.reconcile_batch:
            break
        top = page[-1][1]
        at_top = sum(1 for _, score in page if score == top)
        seen_at_low = seen_at_low + at_top if top == low else at_top
        low = top
    if rearmed:
        rt.metrics.timers_rearmed.inc(rearmed)
        log.warning("timers_rearmed", count=rearmed, queue_lag_ms=lag)
    return rearmed
