"""The worker's side of admission (``producer/admission.py``): the ``admit`` task, the expiry
of waiting requests, and the cap a worker announces when it starts.

Admission itself happens in the scripts of the steps that free a slot; what runs here is for
the events that are no request's step: a pause's end (``admit:pause:{at}``, armed by
``lua/pause.lua``), the earliest waiting deadline (``admit:expire:{at}``, armed when a request
joins a queue), a worker's start, and the reconciler's periodic safety net.
"""

from __future__ import annotations

import structlog

from genqueue.producer.admission import EXPIRE_BATCH, AsyncAdmission
from genqueue.producer.contracts import ExpireWaiting
from genqueue.producer.keys import Field, Tag, tenant_of
from genqueue.producer.stats import redis_time_ms
from genqueue.worker.runtime import Runtime

log = structlog.get_logger(__name__)

#: What an ``admit`` timer is for (its first argument).
PAUSE_END = "pause"
EXPIRY = "expire"


def admission(rt: Runtime) -> AsyncAdmission:
    return AsyncAdmission(rt.redis, rt.keys)


async def expire_due(rt: Runtime) -> int:
    """End the waiting requests whose deadline has passed (at most ``EXPIRE_BATCH``; the
    expiry timer is re-armed at once for the rest); returns how many ended."""
    now = redis_time_ms(await rt.redis.time())
    ids: list[str] = await rt.redis.zrangebyscore(
        rt.keys.admission_deadlines, "-inf", now, start=0, num=EXPIRE_BATCH
    )
    if not ids:
        return 0
    async with rt.redis.pipeline(transaction=False) as pipe:
        for request_id in ids:
            pipe.hmget(rt.keys.record(request_id), [Field.IDEMPOTENCY_KEY, Field.TENANT])
        rows: list[list[str | None]] = await pipe.execute()
    expired = 0
    for request_id, (idem, tenant) in zip(ids, rows, strict=True):
        c = ExpireWaiting(
            request_id=request_id,
            idempotency_key=idem or None,
            tenant=tenant_of({Field.TENANT: tenant or ""}),
        ).call(rt.config.settings)
        reply = await rt.scripts.run(c)
        if reply.tag is Tag.EXPIRED:
            expired += 1
    if expired:
        rt.metrics.waiting_expired.inc(expired)
        log.info("waiting_requests_expired", count=expired)
    return expired


async def run_admit(rt: Runtime, what: str) -> int:
    """The ``admit`` task: expire due waiting requests (the expiry timer), then admit while
    slots are free; returns how many were admitted."""
    expiry = what == EXPIRY
    if expiry:
        await expire_due(rt)
    admitted = await admission(rt).admit_all(expired_run=expiry)
    if admitted:
        log.info("admitted", count=admitted, by=what)
    return admitted


async def safety_net(rt: Runtime) -> int:
    """The reconciler's periodic pass: waiting requests past their deadline end (the expiry
    timer may have been lost), free slots go to waiting requests (an event may have been
    missed: a step of a version before admission freed one), the expiry timer is re-armed
    if it was lost. Never the mechanism: every admitting event admits by itself."""
    await expire_due(rt)
    admitted = await admission(rt).admit_all()
    if admitted:
        log.warning("admitted_by_safety_net", count=admitted)
        rt.metrics.admitted_by_safety_net.inc(admitted)
    return admitted


async def announce_cap(rt: Runtime) -> None:
    """At a worker's start: its ``max_inflight`` and ``admission_reserve_slots`` become the
    deployment's (a cap raised admits at once)."""
    cfg = rt.config
    admitted = await admission(rt).announce_cap(cfg.max_inflight, cfg.admission_reserve_slots)
    log.info(
        "inflight_cap_announced",
        max_inflight=cfg.max_inflight,
        reserve_slots=cfg.admission_reserve_slots,
        admitted=admitted,
    )
