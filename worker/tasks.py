"""The two timer tasks, ``submit`` and ``poll``: each does one HTTP call at most, records what
it learned with one atomic script, then arms the next step as a fresh deferred job.

Every task is idempotent: a duplicate or superseded run (``seq`` moved on) only makes sure the
current timer exists. Nothing here sleeps.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from typing import Literal

import redis.exceptions
import structlog

from genqueue.logs import bound_context
from genqueue.producer.contracts import (
    BeginPoll,
    BeginSubmit,
    Finish,
    PollUpdate,
    SubmitRelease,
    Submitted,
)
from genqueue.producer.keys import NON_TERMINAL, POLL_TASK, SUBMIT_TASK, Field, Tag, tenant_of
from genqueue.producer.record import model_label, read_full, with_id
from genqueue.producer.replies import DEFERRED_TAGS, NextStep
from genqueue.producer.scripts import R, ScriptCall, ms
from genqueue.producer.timers import Timer
from genqueue.worker.backoff import jittered, learned_delay_s, poll_delay_s, retry_delay_s
from genqueue.worker.config import ScheduleSettings
from genqueue.worker.durations import ModelDurations
from genqueue.worker.observed import generation_s, offset_bound_s, seen
from genqueue.worker.ratelimit import NO_LIMIT_ARGS
from genqueue.worker.runtime import Runtime
from genqueue.worker.superseded import check_superseded
from genqueue.worker.upstream import (
    Disposition,
    UpstreamError,
    UpstreamHTTPError,
    UpstreamJob,
    classify,
)
from genqueue.worker.window import Probes, Span, check_window, plan_probes, probe_due, span

log = structlog.get_logger(__name__)

#: ``tracking`` values of an ended request whose poll chain goes on: its own billed job ("1")
#: or only superseded ones ("extra", ``lua/track_extra.lua``).
TRACKED = ("1", "extra")


def _may_have_extras(raw: dict[str, str]) -> bool:
    """The record holds (or, written by an earlier version, may hold) superseded upstream
    ids: when it ends, its chain may go on to check them (armed by the caller)."""
    return raw.get(Field.EXTRA_IDS, "[]") != "[]" or Field.UPSTREAM_IDS in raw


def idempotency_header(request_id: str) -> str:
    """The ``Idempotency-Key`` sent with every create of a request (stable across attempts)."""
    return f"genqueue-{request_id}"


def _idem(raw: dict[str, str]) -> str | None:
    """The idempotency key a record names (passed to every script that may end it)."""
    return raw.get(Field.IDEMPOTENCY_KEY) or None


async def _load(rt: Runtime, request_id: str) -> dict[str, str]:
    raw: dict[str, str] = await rt.redis.hgetall(rt.keys.record(request_id))  # type: ignore[misc]
    return with_id(request_id, raw)


def current_timer(request_id: str, raw: dict[str, str]) -> tuple[Timer, int] | None:
    """The record's current timer and when it is due (Redis ms), or None if it needs none."""
    kind = raw.get(Field.TIMER, "")
    if not raw or kind not in (SUBMIT_TASK, POLL_TASK):
        return None
    if raw.get(Field.STATUS) not in NON_TERMINAL and raw.get(Field.TRACKING) not in TRACKED:
        return None
    at_ms = int(raw.get(Field.NEXT_CHECK_AT_MS) or "0")
    return Timer(kind, request_id, int(raw.get(Field.SEQ, "0"))), max(at_ms, 1)


async def arm_current(rt: Runtime, request_id: str, raw: dict[str, str] | None = None) -> bool:
    """Make sure the record's current timer exists (at its ``next_check_at``); True if it was
    missing and is now armed. Safe to call from anywhere, any number of times."""
    if raw is None:
        raw = await _load(rt, request_id)
    current = current_timer(request_id, raw)
    if current is None:
        return False
    timer, at_ms = current
    return await rt.timers.arm(timer, at_ms=at_ms)


def _next(kind: str, raw: dict[str, str], seq: int | str) -> Timer:
    """The step a script run for timer ``seq`` moves to (passed to it to enqueue itself)."""
    return Timer(kind, raw[Field.ID], int(seq) + 1)


async def _arm_next(
    rt: Runtime, kind: str, request_id: str, step: NextStep | None, passed: Timer
) -> None:
    """Make sure the step a script just moved to is armed. The script enqueued it itself
    when it was the ``passed`` one (the usual case); otherwise the record's current step is
    armed at the time the record holds."""
    if step is None or Timer(kind, request_id, step.seq) != passed:
        await arm_current(rt, request_id)


def _scaled_ms(rt: Runtime, seconds: float) -> int:
    return ms(rt.config.scaled(seconds))


def _next_poll_s(rt: Runtime, polls_done: int, retry_after_s: float | None = None) -> float:
    """The configured (scaled, jittered) delay before the next status check."""
    cfg = rt.config
    return poll_delay_s(
        polls_done,
        first_s=cfg.scaled(cfg.schedule.first_poll_s),
        floor_s=cfg.scaled(cfg.schedule.poll_floor_s),
        cap_s=cfg.scaled(cfg.schedule.poll_cap_s),
        factor=cfg.schedule.poll_factor,
        jitter=cfg.schedule.poll_jitter,
        rng=rt.rng,
        retry_after_s=retry_after_s,
    )


def _limit(rt: Runtime) -> tuple[tuple[str, str], tuple[int, int]]:
    """KEYS and ARGV of the shared rate limit for a ``begin_*`` script (with no limit the
    keys are passed and never touched)."""
    if rt.rate_limit is None:
        return (rt.keys.rate_limit("none"), rt.keys.rate_turns("none")), NO_LIMIT_ARGS
    return rt.rate_limit.keys, rt.rate_limit.args


async def _redis_now_s(rt: Runtime) -> float:
    """Redis' clock (seconds): the clock genqueue's own observations are on."""
    sec, usec = await rt.redis.time()
    return float(sec) + float(usec) / 1e6


@dataclass(frozen=True, slots=True)
class RedisInstant:
    """An instant of Redis' clock a script reported (``now_ms``) and this host's monotonic
    clock when the reply arrived: Redis' clock later on without a ``TIME`` round trip (the
    host's clock may be off, but not its monotonic rate over a call's seconds)."""

    now_ms: int
    at_monotonic: float

    @classmethod
    def of(cls, now_ms: int | None) -> RedisInstant | None:
        return None if now_ms is None else cls(now_ms, time.monotonic())

    def now_s(self) -> float:
        return self.now_ms / 1000 + (time.monotonic() - self.at_monotonic)


def _probes(
    sched: ScheduleSettings,
    learned: ModelDurations,
    total: Span,
    generation: Span | None,
    every_s: float,
) -> Probes | None:
    """The model's probes (``worker/window.py: plan_probes``): none where no start was ever
    bracketed (an upstream that never reports ``queued``: a probe would say nothing)."""
    if not sched.adaptive_probes or not learned.generation:
        return None
    queue_mean_s = learned.total_shift.apply(learned.total_mean_s) - (
        learned.generation_shift.apply(learned.generation_mean_s)
    )
    return plan_probes(
        total,
        generation,
        queue_mean_s,
        every_s,
        min_gain=sched.adaptive_probe_min_gain,
        bootstrap=len(learned.generation) < sched.adaptive_generation_min_samples,
    )


def _span(learned: ModelDurations, sched: ScheduleSettings, *, generation: bool) -> Span:
    """The learned sample's span (``worker/window.py: span``), computed once per refresh."""
    q, confidence, dense_q = (
        sched.adaptive_quantile,
        sched.adaptive_confidence,
        sched.adaptive_dense_until_quantile,
    )
    key = ("span", generation, q, confidence, dense_q)
    cached: Span | None = learned.derived.get(key)
    if cached is None:
        values, shift = (
            (learned.generation, learned.generation_shift)
            if generation
            else (learned.total, learned.total_shift)
        )
        cached = learned.derived[key] = span(
            values, shift, q=q, confidence=confidence, dense_q=dense_q
        )
    return cached


async def _learned_wait_s(
    rt: Runtime,
    raw: dict[str, str],
    job: UpstreamJob,
    polls_done: int,
    due_ms: int | None,
    clock: RedisInstant | None = None,
) -> float | None:
    """Delay before the next check by the model's recent durations (``learned_delay_s`` on
    the window ``worker/window.py`` places), or None when the schedule is fixed or the model
    is not known yet. Reads only the job's status and spec timestamps and what the checks
    saw (``worker/observed.py``), on Redis' clock (read from ``clock`` when given)."""
    cfg = rt.config
    sched = cfg.schedule
    if sched.mode != "adaptive":
        return None
    learned = await rt.durations.get(raw.get(Field.MODEL, ""))
    if learned is None or job.created_at is None:
        return None
    now = clock.now_s() if clock is not None else await _redis_now_s(rt)
    own = offset_bound_s(raw, job, now, fresh=polls_done == 0)
    bounds = [b for b in (learned.offset_s, own) if b is not None]
    view = seen(raw, job, now, min(bounds) if bounds else 0.0)
    if view is None:
        return None
    every = cfg.scaled(sched.poll_floor_s)
    generation = (
        _span(learned, sched, generation=True)
        if len(learned.generation) >= sched.adaptive_generation_min_samples
        else None
    )
    # One interval after the low quantile: only that share of videos ends more than one
    # interval before the first check (the p95 lag's budget is spent there, where skipping
    # checks saves them for every video, not on a sparser grid).
    total = _span(learned, sched, generation=False)
    first_at, until_at = check_window(view, total, generation, every)
    probe_at = probe_due(view, _probes(sched, learned, total, generation, every))
    elapsed = max(0.0, now - view.created_s)
    dense_until_s = until_at - view.created_s
    delay = learned_delay_s(
        elapsed,
        checked=polls_done > 0,
        late_s=0.0 if due_ms is None else now - due_ms / 1000,
        first_s=first_at - view.created_s,
        dense_until_s=dense_until_s,
        dense_every_s=every,
        cap_s=cfg.scaled(sched.poll_cap_s),
        factor=sched.poll_factor,
    )
    if probe_at is not None and probe_at < first_at:
        delay = min(delay, max(0.0, probe_at - now))
    if polls_done == 0:
        # Spread the first checks of a batch created at once over one interval (not by a
        # share of the delay: a first check later than planned lets more videos end long
        # before it). They may wait longer than the cap.
        if sched.poll_jitter <= 0:
            return delay
        return max(0.0, delay + rt.rng.uniform(-every / 2, every / 2))
    if elapsed >= dense_until_s:
        return min(cfg.scaled(sched.poll_cap_s), jittered(delay, sched.poll_jitter, rt.rng))
    return delay  # inside the window: no jitter, the interval is what bounds the lag


async def _poll_wait_s(
    rt: Runtime,
    raw: dict[str, str],
    job: UpstreamJob | None,
    polls_done: int,
    retry_after_s: float | None,
    due_ms: int | None = None,
    clock: RedisInstant | None = None,
) -> float:
    """Delay before the next check: by the model's learned durations when known, else the
    configured backoff; an upstream ``Retry-After`` is never undercut. ``due_ms``: when the
    check that is running now was due (wall ms), so a late run doesn't delay the next;
    ``clock``: Redis' clock as the check's first script saw it (else ``TIME`` is read)."""
    learned = (
        None if job is None else await _learned_wait_s(rt, raw, job, polls_done, due_ms, clock)
    )
    if learned is None:
        return _next_poll_s(rt, polls_done, retry_after_s) + _early_s(rt, due_ms, clock)
    return learned if retry_after_s is None else max(learned, retry_after_s)


def _early_s(rt: Runtime, due_ms: int | None, clock: RedisInstant | None) -> float:
    """How long before its due time the running check ran (claimed within the timer slack,
    at most that): the configured backoff counts from the due time, so early checks do not
    pull every later one forward. 0 without Redis' clock at hand (no round trip for it)."""
    if due_ms is None or clock is None:
        return 0.0
    slack_s = rt.config.scaled(rt.config.schedule.slack_s)
    return min(slack_s, max(0.0, due_ms / 1000 - clock.now_s()))


# --- submit -------------------------------------------------------------------------------


async def run_submit(rt: Runtime, request_id: str, seq: int) -> None:
    """Create the upstream job for a pending request, or re-arm when it can't be done yet
    (or leave it in its admission queue, where a freed slot admits it)."""
    with bound_context(request_id=request_id, timer_seq=seq):
        raw = await read_full(rt.redis, rt.keys, request_id)  # the body is in the spec
        if not raw:
            log.info("record_missing")
            return
        # This task's own context (arq runs each job in its own task): no leak to others.
        structlog.contextvars.bind_contextvars(tenant=tenant_of(raw))
        cfg = rt.config
        limit_keys, limit_args = _limit(rt)
        begin = BeginSubmit(
            request_id=request_id,
            idempotency_key=_idem(raw),
            tenant=tenant_of(raw),
            expected_seq=seq,
            max_inflight=cfg.max_inflight,
            lease_ms=ms(cfg.lease_s),
            lease_owner=cfg.worker_name,
            ambiguous_policy=cfg.ambiguous_policy,
            limit_keys=limit_keys,
            limit_us=limit_args,
            arm=(deferred := _next(SUBMIT_TASK, raw, seq)),
        ).call(cfg.settings)
        reply = await rt.scripts.run(begin)
        tag = reply.tag
        if tag in DEFERRED_TAGS:
            if tag is Tag.LIMITED:
                rt.metrics.rate_limited.labels("local", "create").inc()
            delay_ms = reply.step.delay_ms if reply.step else 0
            log.debug("submit_deferred", reason=tag.lower(), delay_ms=delay_ms)
            await _arm_next(rt, SUBMIT_TASK, request_id, reply.step, deferred)
            return
        if tag is Tag.WAITING:
            # In its tenant's admission queue: no timer, a freed slot admits it.
            log.debug("submit_waiting", reason=reply.waiting)
            return
        if tag is Tag.STALE:
            await arm_current(rt, request_id)
            return
        if tag is not Tag.OK:
            log.info("submit_ended", outcome=tag.lower())
            if tag is not Tag.MISSING and raw.get(Field.STATUS) == "submitting":
                # Ended over an expired lease: the script counted an ambiguous submit.
                rt.metrics.ambiguous_submits.inc()
            if _may_have_extras(raw):
                await arm_current(rt, request_id)
            return
        submit_seq, is_probe = reply.submit_seq, reply.probe
        if is_probe:
            log.info("create_probe")
        if reply.ambiguous:
            rt.metrics.ambiguous_submits.inc()
            log.warning("ambiguous_submit", policy=cfg.ambiguous_policy)
        # The lease taken above runs from about now: the id must be written before it ends.
        lease_ends = time.monotonic() + cfg.lease_s
        # From the POST on, cancelling this task (a lost Redis stops arq, which cancels its
        # jobs) would throw away an answer whose job exists: the next attempt would buy it again.
        await rt.creates.run(_create(rt, raw, submit_seq, is_probe, lease_ends))


async def _create(
    rt: Runtime, raw: dict[str, str], submit_seq: int, is_probe: bool, lease_ends: float
) -> None:
    """POST the create for lease ``submit_seq`` and record its answer (not cancellable)."""
    body = json.loads(raw[Field.REQUEST])
    try:
        job = await rt.upstream.create(body, idempotency_key=idempotency_header(raw[Field.ID]))
    except UpstreamError as exc:
        await _submit_failed(rt, raw, submit_seq, exc)
        return
    if is_probe:
        try:
            # Bounded: this runs where cancellation does not reach (a half-open connection
            # would hold the id's write, and a worker's shutdown, for ever).
            async with asyncio.timeout(WRITE_TRY_S):
                resumed = await rt.pause.resume()
            if resumed:
                log.warning("creates_resumed")
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, TimeoutError):
            # The id comes first; the pause's probe window ends on its own.
            log.warning("creates_resume_unrecorded")
    # `submitted` also ends the create failure streak (the upstream answered).
    await _record_submitted(rt, raw, submit_seq, job, lease_ends)


#: The least time one try of a critical write gets, whatever its deadline.
WRITE_TRY_S = 5.0


async def _run_until(rt: Runtime, c: ScriptCall[R], deadline: float) -> R:
    """Run a critical write, retrying while Redis is unreachable until ``deadline``
    (monotonic seconds).

    The upstream ignores idempotency keys: a created job whose id is not written before the
    lease ends is created again by the next attempt (a paid duplicate). A Redis restart or
    failover during a burst of creates would otherwise turn every create in flight into one.
    The script checks the lease's ``submit_seq``, not its time, so a late write is safe.
    """
    delay_s = 0.05
    while True:
        try:
            # Bounded: a command on a connection a partition left half-open would otherwise
            # hang past the deadline (the runtime's close waits for this write). An answer
            # that came late (a stalled process) still gets a full try.
            async with asyncio.timeout(max(WRITE_TRY_S, deadline - time.monotonic())):
                return await rt.durability.run(rt.redis, rt.scripts, c)
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
            if time.monotonic() + delay_s >= deadline:
                raise
            log.warning("submitted_write_retry", error=type(exc).__name__, retry_in_s=delay_s)
            await asyncio.sleep(delay_s)
            delay_s = min(1.0, delay_s * 2)


async def _record_submitted(
    rt: Runtime,
    raw: dict[str, str],
    submit_seq: int,
    job: UpstreamJob,
    lease_ends: float | None = None,
) -> None:
    request_id = raw[Field.ID]
    with bound_context(upstream_id=job.id):
        cfg = rt.config
        try:
            async with asyncio.timeout(cfg.lease_s):  # the id first: see _run_until
                first = 0.0 if job.is_terminal else await _poll_wait_s(rt, raw, job, 0, None)
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, TimeoutError):
            first = _next_poll_s(rt, 0)  # no learned durations now; the id must still be kept
        # begin_submit left the timer seq as it was: the first poll is the next step.
        step = _next(POLL_TASK, raw, raw.get(Field.SEQ, "0"))
        c = Submitted(
            request_id=request_id,
            idempotency_key=_idem(raw),
            tenant=tenant_of(raw),
            submit_seq=submit_seq,
            upstream_id=job.id,
            upstream_status=job.status,
            upstream_created_at=job.created_at,
            upstream_started_at=job.started_at,
            first_poll_delay_ms=ms(first),
            tracking_limit_ms=ms(cfg.settings.tracking_limit_s),
            tracking_poll_delay_ms=_scaled_ms(rt, cfg.schedule.poll_cap_s),
            arm=step,
        ).call(cfg.settings)
        # Within the lease the write wins: nobody else may create meanwhile. For one lease
        # more it is still worth making: if another attempt took over after the lease, this
        # job is kept as a superseded one (tracked, its cost counted) rather than only
        # counted as possibly billed. Past that the runtime's close stops waiting for it.
        deadline = (lease_ends or time.monotonic()) + cfg.lease_s
        reply = await _run_until(rt, c, deadline)
        if reply.tag is Tag.OK:
            log.info("upstream_job_created", upstream_status=job.status)
            await _arm_next(rt, POLL_TASK, request_id, reply.step, step)
        elif (
            reply.tag is Tag.STALE
            and (now := await _load(rt, request_id)).get(Field.UPSTREAM_ID) == job.id
        ):
            # Written by an earlier try whose reply was lost with the connection.
            log.info("upstream_job_created", upstream_status=job.status, reply_lost=True)
            await arm_current(rt, request_id, now)
        elif reply.tag is Tag.STALE:
            # A newer attempt owns the request (or it ended): this job is checked until it
            # ends, after the request's own (the script restarts an ended record's chain).
            log.warning("upstream_job_created_by_superseded_attempt")
            rt.metrics.superseded_jobs.inc()
            await arm_current(rt, request_id)
        else:
            log.error("upstream_job_created_for_missing_record")


async def _submit_failed(
    rt: Runtime, raw: dict[str, str], submit_seq: int, exc: UpstreamError
) -> None:
    cfg = rt.config
    disposition = classify(exc)
    retry_after = exc.retry_after_s if isinstance(exc, UpstreamHTTPError) else None
    attempts = int(raw.get(Field.SUBMIT_SEQ, "0"))  # this attempt's number
    delay = retry_delay_s(
        attempts,
        base_s=cfg.scaled(cfg.submit_retry_s),
        cap_s=cfg.scaled(cfg.submit_retry_cap_s),
        jitter=cfg.schedule.poll_jitter,
        rng=rt.rng,
        retry_after_s=retry_after,
    )
    mode: Literal["fail", "retry"] = "retry"
    ambiguous = False
    code = exc.status_code if isinstance(exc, UpstreamHTTPError) else None
    outage = disposition is Disposition.RETRY_AMBIGUOUS and (code is None or code >= 500)
    if outage:
        if await rt.pause.record_outage_failure(cfg.breaker_failure_streak):
            disposition = Disposition.PAUSE_CREATES
    else:
        await rt.pause.record_create_answered()
    if disposition is Disposition.FAIL_REQUEST:
        mode = "fail"
    elif disposition is Disposition.PAUSE_CREATES:
        label = str(code) if code is not None and not outage else "outage"
        await rt.pause.pause(reason=str(exc), code=label, duration_ms=ms(cfg.pause_s))
        rt.metrics.creates_paused.labels(label).inc()
        delay = cfg.pause_s
        log.error("creates_paused", code=label, pause_s=cfg.pause_s)
    if isinstance(exc, UpstreamError) and classify(exc) is Disposition.RETRY_AMBIGUOUS:
        ambiguous = True
        rt.metrics.ambiguous_submits.inc()
    step = _next(SUBMIT_TASK, raw, raw.get(Field.SEQ, "0"))
    c = SubmitRelease(
        request_id=raw[Field.ID],
        idempotency_key=_idem(raw),
        tenant=tenant_of(raw),
        submit_seq=submit_seq,
        mode=mode,
        ambiguous=ambiguous,
        retry_delay_ms=ms(delay),
        error=str(exc),
        ambiguous_policy=cfg.ambiguous_policy,
        arm=step,
    ).call(cfg.settings)
    reply = await rt.scripts.run(c)
    log.info(
        "upstream_create_failed",
        disposition=disposition.value,
        error=str(exc),
        outcome=reply.tag.lower(),
        retry_in_s=round(delay, 3) if reply.tag is Tag.RETRY else None,
    )
    if reply.tag is Tag.RETRY:
        await _arm_next(rt, SUBMIT_TASK, raw[Field.ID], reply.step, step)
    elif reply.tag is Tag.FAILED and _may_have_extras(raw):
        await arm_current(rt, raw[Field.ID])


# --- poll ---------------------------------------------------------------------------------


async def run_poll(rt: Runtime, request_id: str, seq: int) -> None:
    """Check the upstream job once; finish the request or arm the next check."""
    with bound_context(request_id=request_id, timer_seq=seq):
        limit_keys, limit_args = _limit(rt)
        step = Timer(POLL_TASK, request_id, seq + 1)
        begin = BeginPoll(
            request_id=request_id,
            expected_seq=seq,
            limit_keys=limit_keys,
            limit_us=limit_args,
            arm=step,
        ).call(rt.config.settings)
        reply = await rt.scripts.run(begin)
        tag = reply.tag
        if tag is Tag.MISSING:
            log.info("record_missing")
            return
        if tag is Tag.STALE:
            await arm_current(rt, request_id)
            return
        if tag is Tag.LIMITED:
            rt.metrics.rate_limited.labels("local", "retrieve").inc()
            await _arm_next(rt, POLL_TASK, request_id, reply.step, step)
            return
        if tag is not Tag.GO:
            return  # DONE: the request ended and nothing is tracked
        clock = RedisInstant.of(reply.now_ms)
        raw = with_id(request_id, reply.record)
        if raw.get(Field.TRACKING) == "extra":
            await check_superseded(rt, raw, seq, lambda: arm_current(rt, request_id))
            return
        upstream_id = raw.get(Field.UPSTREAM_ID, "")
        with bound_context(upstream_id=upstream_id, tenant=tenant_of(raw)):
            try:
                job = await rt.upstream.retrieve(upstream_id)
            except UpstreamError as exc:
                await _poll_failed(rt, raw, seq, exc)
                return
            if job.is_terminal:
                await _finish(rt, raw, seq, job)
            else:
                await _poll_update(rt, raw, seq, job=job, clock=clock)


async def _finish(rt: Runtime, raw: dict[str, str], seq: int, job: UpstreamJob) -> None:
    c = Finish(
        request_id=raw[Field.ID],
        idempotency_key=_idem(raw),
        tenant=tenant_of(raw),
        expected_seq=seq,
        outcome=job.status,
        cost_micro_usd=job.cost_micro_usd,
        video_url=job.video_url or "",
        error=job.error or "",
        upstream_created_at=job.created_at,
        upstream_started_at=job.started_at,
        upstream_done_at=job.done_at,
        owe_download=rt.config.downloads_on,
        cost_unknown=job.cost_unknown,
    ).call(rt.config.settings)
    reply = await rt.scripts.run(c)
    if job.cost_unknown:
        rt.metrics.cost_unknown.inc()
        log.warning("upstream_cost_unknown", problem=job.cost_problem or "missing")
    if reply.tag is Tag.OK:
        if _may_have_extras(raw):
            await arm_current(rt, raw[Field.ID])
        _observe_finish(rt, raw, job, now_ms=reply.now_ms, ended_now=reply.ended_now)
        if job.status == "completed" and job.done_at is not None:
            await _learn(rt, raw, job, reply.now_ms / 1000)
        log.info(
            "request_finished",
            status=reply.status,
            upstream_status=job.status,
            cost_micro_usd=job.cost_micro_usd,
            polls=int(raw.get(Field.POLLS, "0")) + 1,
        )
    elif reply.tag is Tag.STALE:
        await arm_current(rt, raw[Field.ID])


async def _learn(rt: Runtime, raw: dict[str, str], job: UpstreamJob, now_s: float) -> None:
    """Offer a completed job to its model's durations: created to completed, the generation
    time its checks bracketed, and a bound of the clock offset (``worker/observed.py``)."""
    if job.done_at is None:
        return
    model = raw.get(Field.MODEL, "")
    bound = offset_bound_s(raw, job, now_s, fresh=False)
    learned = await rt.durations.get(model)
    known = [b for b in (bound, learned.offset_s if learned else None) if b is not None]
    offset = min(known) if known else 0.0
    # A start bracketed by checks more than two intervals apart says little of it.
    width_s = 2 * rt.config.scaled(rt.config.schedule.poll_floor_s)
    gen = generation_s(raw, job, now_s, offset, width_s)
    await rt.durations.record(
        model, job.created_at, job.done_at, generation_s=gen, offset_bound_s=bound
    )


def _observe_finish(
    rt: Runtime, raw: dict[str, str], job: UpstreamJob, *, now_ms: int, ended_now: bool
) -> None:
    m = rt.metrics
    model = model_label(raw)
    m.child(m.polls, model).inc()
    if job.created_at is not None and job.done_at is not None:
        m.child(m.request_duration, model, "upstream").observe(
            max(0.0, job.done_at - job.created_at)
        )
    if not ended_now:
        return  # cancelled/expired earlier: its latency was not this job's completion
    enqueued = int(raw.get(Field.ENQUEUED_AT_MS) or 0)
    submitted = int(raw.get(Field.SUBMITTED_AT_MS) or 0)
    if enqueued and submitted:
        m.child(m.request_duration, model, "queue").observe(max(0, submitted - enqueued) / 1000)
    if enqueued:
        m.child(m.request_duration, model, "total").observe(max(0, now_ms - enqueued) / 1000)
    if job.done_at is not None:
        # Clamped at 0: the upstream's clock is not ours.
        m.detection_lag.observe(max(0.0, now_ms / 1000 - job.done_at))


async def _poll_update(
    rt: Runtime,
    raw: dict[str, str],
    seq: int,
    *,
    job: UpstreamJob | None = None,
    error: str = "",
    retry_after_s: float | None = None,
    not_found: bool = False,
    clock: RedisInstant | None = None,
) -> None:
    cfg = rt.config
    if job is not None and job.status == "unknown":
        rt.metrics.unknown_statuses.inc()
        if job.raw_status not in rt.unknown_statuses_seen:
            rt.unknown_statuses_seen.add(job.raw_status)
            log.warning("unknown_upstream_status", raw_status=job.raw_status[:64])
    polls_done = int(raw.get(Field.POLLS, "0")) + 1
    due_ms = int(raw.get(Field.NEXT_CHECK_AT_MS) or 0) or None
    delay = await _poll_wait_s(rt, raw, job, polls_done, retry_after_s, due_ms, clock)
    status = job.status if job is not None and job.status != "unknown" else ""
    c = PollUpdate(
        request_id=raw[Field.ID],
        idempotency_key=_idem(raw),
        tenant=tenant_of(raw),
        expected_seq=seq,
        upstream_status=status,
        upstream_started_at=job.started_at if job is not None else None,
        next_delay_ms=ms(delay),
        tracking_poll_delay_ms=_scaled_ms(rt, cfg.schedule.poll_cap_s),
        tracking_limit_ms=ms(cfg.settings.tracking_limit_s),
        poll_error=error,
        not_found=not_found,
        arm=(step := _next(POLL_TASK, raw, seq)),
    ).call(cfg.settings)
    reply = await rt.scripts.run(c)
    if reply.tag is Tag.OK or reply.tag is Tag.ABANDONED:
        rt.metrics.child(rt.metrics.polls, model_label(raw)).inc()
    if reply.tag is Tag.OK:
        await _arm_next(rt, POLL_TASK, raw[Field.ID], reply.step, step)
    elif reply.tag is Tag.STALE:
        await arm_current(rt, raw[Field.ID])
    elif reply.tag is Tag.ABANDONED:
        log.error("tracking_abandoned")
        if _may_have_extras(raw):
            await arm_current(rt, raw[Field.ID])


async def _poll_failed(rt: Runtime, raw: dict[str, str], seq: int, exc: UpstreamError) -> None:
    disposition = classify(exc)
    log.info("upstream_poll_failed", disposition=disposition.value, error=str(exc))
    not_found = disposition is Disposition.NOT_FOUND
    streak = int(raw.get(Field.NOT_FOUND_STREAK) or "0") + 1
    if not_found and streak >= rt.config.not_found_limit:
        gone = UpstreamJob(
            id=raw.get(Field.UPSTREAM_ID, ""),
            status="failed",
            raw_status="not_found",
            error="the upstream no longer knows this job (404)",
        )
        await _finish(rt, raw, seq, gone)
        return
    retry_after = exc.retry_after_s if isinstance(exc, UpstreamHTTPError) else None
    # Never fail a job that may be billed on a transient error: keep checking (at backoff)
    # until its deadline; the script turns a passed deadline into `expired` + tracking.
    await _poll_update(
        rt, raw, seq, error=str(exc)[:200], retry_after_s=retry_after, not_found=not_found
    )
