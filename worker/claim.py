"""arq's ``Worker`` with its per-job Redis traffic cut from four round trips to one per look.

A plain arq 0.28 worker spends, per job: a ``ZRANGEBYSCORE`` look at the queue (shared by the
jobs of one look), a WATCH / EXISTS / ZSCORE / MULTI-PSETEX-EXEC claim (four round trips, made
one job after another while every other due job waits), a pipeline that reads the job and
counts the try, and one that deletes its keys when it ends. Here one script per look
(``lua/claim_due.lua``) does all of it for every job of the look: it retires the jobs that ended
since the last look, then finds due jobs and claims as many as there are free slots,
returning each one's payload and try. A status check then costs its own two transition
scripts and its HTTP call, and the queue's share is one script call per look.

The checks and key handling are arq 0.28's own (``Worker.start_jobs``, ``run_job``,
``finish_job``): a job is claimed only if it is not running elsewhere (no in-progress key),
still queued and due by this host's clock; the in-progress key is set for arq's in-progress
timeout; a job that ended is deleted with its try counter and left the queue; a cancelled one
(shutdown) only loses its in-progress key, so any worker runs it again; a cron job keeps its
in-progress key for ``keep_cronjob_progress``. The version is pinned (``arq>=0.28,<0.29`` in
pyproject.toml) because this relies on ``Worker``'s internals; ``tests/test_claim.py`` holds
it to arq's behaviour. Not carried over, because genqueue uses neither: arq's job abort
(``allow_abort_jobs``; a cancel is a record flag) and ``Retry`` re-queueing (a task re-arms
its own next step); a function that raises is failed and dropped, as in arq.

Between looks a worker given wake keys waits (``worker/wakeup.py``: until its next due time,
a wake token, one of its jobs ending, or its own schedule) instead of looking every
``poll_delay_s``; without them it polls as arq does (``poll_delay_s``, used by burst runs).

**Timer slack.** A look also claims the status checks due within the next ``Slack.ms``
(``poll_slack_s``, scaled; 0.5 s by default, a tenth of the dense checks' spacing), up to
``Slack.most`` jobs a look: checks due close together then run together, on one wake-up of
the worker, where each used to cost its own wake-up, look and event-loop turns (at the
comparison's load, a quarter of a worker's CPU per video: bench/RESULTS.md). Where checks are
dense a look has that many due already and claims none early (claiming the next half second's
made bursts of a hundred checks at 200 a second, and cost CPU per check). Only checks run
early, never a create or an admission timer, and not a check holding a rate-limit turn (the
limit chose that time; asked earlier it would refuse and queue the check again at the back).

A job that ended is retired at the next look (``poll_delay_s`` later), not at once: if the
worker dies in between, its in-progress key expires and the job runs again, as after a crash
just before arq's own ``finish_job`` — a timer re-run is harmless (its seq has moved on).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from arq.connections import create_pool, log_redis_info
from arq.constants import (
    in_progress_key_prefix,
    job_key_prefix,
    keep_cronjob_progress,
    retry_key_prefix,
)
from arq.cron import CronJob
from arq.jobs import SerializationError, deserialize_job_raw
from arq.utils import ms_to_datetime, timestamp_ms
from arq.worker import Function, Worker

from genqueue.producer.evalsha import ScriptCaller, script_caller
from genqueue.producer.keys import WakeKeys
from genqueue.producer.scripts import source
from genqueue.worker.wakeup import (
    LookResult,
    Periodic,
    WakeListener,
    sleep_until_spaced,
    wait_s,
)

logger = logging.getLogger("arq.worker")

#: How a retired job's keys are left (ARGV of ``lua/claim_due.lua``).
ENDED, RELEASED, ENDED_CRON = "e", "r", "c"


def claim_due_args(
    *,
    now_ms: int | None,
    in_progress_ms: int,
    want: int,
    look: int,
    cron_keep_ms: int,
    retired: list[tuple[str, str]],
    running: int = 0,
    max_wait_ms: int = 0,
    watcher_id: str = "",
    slack: Slack | None = None,
) -> list[Any]:
    """ARGV of ``lua/claim_due.lua`` (KEYS: the queue, and optionally its wake keys and a
    watched set): claim up to ``want`` of the first ``look`` due ids at ``now_ms`` (None:
    Redis ``TIME``), after retiring each (job id, ``ENDED`` | ``RELEASED`` | ``ENDED_CRON``)
    of ``retired``; with the wake keys, ``running`` jobs of this worker are still running, the
    next look is at most ``max_wait_ms`` away, and ``watcher_id`` names this worker in the
    wake-at key; with ``slack``, its jobs due within ``slack.ms`` are claimed too."""
    args: list[Any] = [
        "" if now_ms is None else now_ms,
        in_progress_ms,
        want,
        look,
        in_progress_key_prefix,
        job_key_prefix,
        retry_key_prefix,
        cron_keep_ms,
        len(retired),
    ]
    for job_id, how in retired:
        args += [job_id, how]
    args += [running, max_wait_ms, watcher_id]
    if slack is not None:
        args += [slack.ms, slack.id_prefix, slack.record_prefix, slack.most]
    return args


@dataclass(frozen=True, slots=True)
class Slack:
    """Timer slack: jobs whose ids start with ``id_prefix`` (status checks) are claimed up to
    ``ms`` before they are due (Redis time), unless their record (``record_prefix`` + the
    request id) holds a rate-limit turn (``call_turn``): that time is the limit's. A look
    fills up to ``most`` jobs with early ones, and claims none early once it has as many due
    ones (dense checks share wake-ups already; early ones would only make bursts)."""

    ms: int
    id_prefix: str
    record_prefix: str
    most: int = 8


Claimed = tuple[str, int, bytes | None, int]


def parse_look(reply: list[Any]) -> tuple[list[Claimed], LookResult | None]:
    """The reply of ``lua/claim_due.lua``: per claimed job (id, score, payload or None if
    its job key expired, try), and with the wake keys what it says about the next look."""
    look = None
    if len(reply) % 4 == 3:
        next_in_ms, watched_due, watcher = (int(x) for x in reply[-3:])
        look = LookResult(
            next_in_s=None if next_in_ms < 0 else next_in_ms / 1000,
            watched_due=bool(watched_due),
            watcher=bool(watcher),
        )
        reply = reply[:-3]
    return parse_claimed(reply), look


def parse_claimed(reply: list[Any]) -> list[Claimed]:
    """Per claimed job of a ``lua/claim_due.lua`` reply without wake keys: (id, score,
    payload or None if its job key expired, try)."""
    it = iter(reply)
    return [
        (job_id.decode(), int(float(score)), payload, int(job_try))
        for job_id, score, payload, job_try in zip(it, it, it, it, strict=True)
    ]


class TimerWorker(Worker):
    """An arq ``Worker`` whose queue traffic is one script call per look (see the module).

    With ``wake`` (the queue's wake keys) it waits between looks (``worker/wakeup.py``):
    ``watched`` is a sorted set of due times also watched (the outbox), whose due entries
    ``on_watched_due`` handles, at most once per ``watched_spacing_s``; ``periodic`` work
    runs from the same loop; ``max_wait_s`` bounds a wait; ``slack``: jobs claimed early
    (the module's *timer slack*)."""

    def __init__(
        self,
        *args: Any,
        wake: WakeKeys | None = None,
        watched: str | None = None,
        on_watched_due: Callable[[dict[str, Any]], Awaitable[Any]] | None = None,
        watched_spacing_s: float = 0.0,
        periodic: Sequence[Periodic] = (),
        max_wait_s: float = 60.0,
        slack: Slack | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self._claim_due: Any = None
        self._call_script: ScriptCaller | None = None
        self._retired: list[tuple[str, str]] = []
        self._wake = wake
        self._watched = watched
        self._on_watched_due = on_watched_due
        self._watched_spacing_s = watched_spacing_s
        self._watched_at = -watched_spacing_s
        self._periodic = list(periodic)
        self.max_wait_s = max_wait_s
        self._slack = slack
        self._last_look: LookResult | None = None
        self._last_look_at = 0.0
        #: Set when one of this worker's jobs ends (or ``wake()``): its keys wait for a look.
        self._ended = asyncio.Event()
        #: The current wait's future (``_wait``), resolved by whatever ends it.
        self._waiter: asyncio.Future[None] | None = None
        # '+': this worker renews or gives up its watch at every look (lua/_wake.lua).
        self._watcher_id = "+" + uuid.uuid4().hex[:15]
        #: Looks made (a figure for tests and the bench).
        self.looks = 0

    def wake(self) -> None:
        """End the current wait now (a stop, or a job of this worker ended)."""
        self._ended.set()
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def main(self) -> None:
        try:
            if self._wake is None:
                await super().main()
            else:
                await self._main_waiting(self._wake)
        finally:
            if self._pool is not None:
                await self.flush_retired()

    async def _main_waiting(self, wake: WakeKeys) -> None:
        # arq's Worker.main set-up, then a loop that waits instead of sleeping poll_delay_s.
        if self._pool is None:
            self._pool = await create_pool(
                self.redis_settings,
                job_deserializer=self.job_deserializer,
                job_serializer=self.job_serializer,
                default_queue_name=self.queue_name,
                expires_extra_ms=self.expires_extra_ms,
            )
        logger.info(
            "Starting worker for %d functions: %s", len(self.functions), ", ".join(self.functions)
        )
        await log_redis_info(self.pool, logger.info)
        self.ctx["redis"] = self.pool
        if self.on_startup:
            await self.on_startup(self.ctx)
        listener = WakeListener(self.pool, wake, timeout_s=self.max_wait_s)
        try:
            must_look = True
            while True:
                if must_look:
                    await self._poll_iteration()
                else:  # woken by its own schedule only: the health key, periodic work
                    await self.heart_beat()
                if self.burst:
                    # arq's burst exit (stop_worker ends a worker this way).
                    if (
                        0 <= self.max_burst_jobs <= self._jobs_started()
                        or not await self.pool.zcard(self.queue_name)
                    ):
                        await asyncio.gather(*self.tasks.values())
                        return
                    await asyncio.sleep(self.poll_delay_s)
                    continue
                look = self._last_look
                if self._watched_now(look):
                    assert self._on_watched_due is not None
                    self._watched_at = time.monotonic()
                    try:
                        await self._on_watched_due(self.ctx)
                    except Exception:
                        logger.exception("handling the watched set's due entries failed")
                    await sleep_until_spaced(self._last_look_at, self.poll_delay_s)
                    continue
                for p in self._periodic:
                    await p.maybe_run(self.pool, self.ctx)
                must_look = await self._wait(listener, look)
        finally:
            await listener.close()

    def _watched_in_s(self) -> float:
        return self._watched_at + self._watched_spacing_s - time.monotonic()

    def _watched_now(self, look: LookResult | None) -> bool:
        return (
            look is not None
            and look.watched_due
            and self._on_watched_due is not None
            and self._watched_in_s() <= 0
        )

    def _schedule_in_s(self) -> float:
        """Until this worker's own next chore (the health key, periodic work): no look."""
        health_in_s = self._last_health_check + self.health_check_interval - time.time()
        return min([health_in_s, *(p.due_in_s() for p in self._periodic)])

    async def _wait(self, listener: WakeListener, look: LookResult | None) -> bool:
        """Wait for a reason to act; True if it is a reason to look (else only the worker's
        own schedule is due)."""
        # The look's answer, and the cap, count from when it was made.
        elapsed_s = time.monotonic() - self._last_look_at
        if look is not None and look.next_in_s is not None:
            look = dataclasses.replace(look, next_in_s=look.next_in_s - elapsed_s)
        look_in_s = wait_s(
            look,
            running=self.job_counter,
            cap_s=self.max_wait_s - elapsed_s,
            # An outbox entry is due but the last dispatch was too recent.
            other_deadlines_s=(self._watched_in_s(),) if look and look.watched_due else (),
        )
        schedule_in_s = self._schedule_in_s()
        timeout_s = max(0.0, min(look_in_s, schedule_in_s))
        if timeout_s > 0 and not self._ended.is_set():
            await self._wait_for_reason(listener.task(), timeout_s)
        token = listener.take()
        if token and self.job_counter >= self.max_jobs:
            await listener.give_back()  # no free slot here: let a waiting worker take it
        if not token and not self._ended.is_set() and schedule_in_s < look_in_s:
            return False
        if self.job_counter > 0 or self._retired:
            # Busy: look no more often than poll_delay_s (as before), whatever woke it.
            await sleep_until_spaced(self._last_look_at, self.poll_delay_s)
        return True

    async def _wait_for_reason(self, blpop: asyncio.Task[Any], timeout_s: float) -> None:
        """Until the ``BLPOP`` ends, one of this worker's jobs ends (``wake``) or ``timeout_s``
        passed: one future and a timer (``asyncio.wait`` on a task waiting for an event,
        cancelled after every wait, took three times the event loop's work, at a wait per
        look)."""
        waiter = self.loop.create_future()

        def done(_: object = None) -> None:
            if not waiter.done():
                waiter.set_result(None)

        self._waiter = waiter
        blpop.add_done_callback(done)
        timer = self.loop.call_later(timeout_s, done)
        try:
            await waiter
        finally:
            timer.cancel()
            blpop.remove_done_callback(done)
            self._waiter = None

    async def heart_beat(self) -> None:
        # arq's heart_beat also reads the clock and walks the cron jobs after every look;
        # genqueue schedules none (the reconciler is periodic work), so only the health key.
        if self.cron_jobs:
            await super().heart_beat()
        else:
            await self.record_health()

    async def flush_retired(self) -> None:
        """Retire the jobs that ended since the last look (also run when the worker stops)."""
        if self._retired:
            await self._look(want=0)

    async def _poll_iteration(self) -> None:
        # arq's _poll_iteration, with the look and every claim in one script call.
        want = self.max_jobs - self.job_counter
        if self.burst and self.max_burst_jobs >= 0:
            want = min(want, self.max_burst_jobs - self._jobs_started())
        if not self.allow_pick_jobs:
            want = 0
        self._ended.clear()  # a job ending from here on ends the next wait
        if want > 0 or self._retired:
            for job_id, score, payload, job_try in await self._look(want=max(0, want)):
                self._start(job_id, score, payload, job_try)
        else:
            self._last_look = None  # no free slot: wait for a job to end
        for job_id, t in list(self.tasks.items()):
            if t.done():
                del self.tasks[job_id]
                t.result()  # errors in the job runner propagate, as in arq
        await self.heart_beat()

    async def _look(self, *, want: int) -> list[Claimed]:
        if self._claim_due is None or self._call_script is None:
            self._claim_due = self.pool.register_script(source("claim_due"))
            self._call_script = script_caller(self.pool)
        retired, self._retired = self._retired, []
        keys = [self.queue_name]
        if self._wake is not None:
            keys += [self._wake.wake, self._wake.wake_at, self._watched or self.queue_name]
        args = claim_due_args(
            # Waiting workers compare with Redis TIME, the clock timers are scored in (a
            # wait is then computed in the same clock as the claim: worker/wakeup.py).
            now_ms=None if self._wake is not None else timestamp_ms(),
            in_progress_ms=int(self.in_progress_timeout_s * 1000),
            want=want,
            look=self.queue_read_limit,
            cron_keep_ms=int(keep_cronjob_progress * 1000),
            retired=retired,
            running=self.job_counter,
            max_wait_ms=int(self.max_wait_s * 1000),
            watcher_id=self._watcher_id,
            slack=self._slack,
        )
        try:
            reply = await self._call_script(self._claim_due, keys, args)
        except BaseException:
            self._retired[:0] = retired  # not sent: retried at the next look
            raise
        self.looks += 1
        self._last_look_at = time.monotonic()
        claimed, self._last_look = parse_look(reply)
        return claimed

    def _start(self, job_id: str, score: int, payload: bytes | None, job_try: int) -> None:
        # A job is claimed only for a free slot: job_counter is the only gate (arq's
        # semaphore belongs to its start_jobs, which is not used).
        self.job_counter += 1
        t = self.loop.create_task(self._run_claimed(job_id, score, payload, job_try))
        t.add_done_callback(self._job_ended)
        self.tasks[job_id] = t

    def _job_ended(self, _: asyncio.Task[None]) -> None:
        self.job_counter -= 1
        self.wake()

    def _drop(self, job_id: str) -> None:
        """A job that cannot run (expired, unreadable, unknown, out of tries): failed, and
        retired at the next look."""
        self.jobs_failed += 1
        self._retired.append((job_id, ENDED))

    async def _run_claimed(
        self, job_id: str, score: int, payload: bytes | None, job_try: int
    ) -> None:
        """arq's ``run_job`` for a job claimed with its payload and try (results not kept:
        every function here has ``keep_result=0``)."""
        if payload is None:
            logger.warning("job %s expired", job_id)
            return self._drop(job_id)
        try:
            name, args, kwargs, enqueue_try, enqueue_time_ms = deserialize_job_raw(
                payload, deserializer=self.job_deserializer
            )
        except SerializationError:
            logger.exception("deserializing job %s failed", job_id)
            return self._drop(job_id)
        function: Function | CronJob | None = self.functions.get(name)
        if function is None:
            logger.warning("job %s, function %r not found", job_id, name)
            return self._drop(job_id)
        is_cron = isinstance(function, CronJob)
        if enqueue_try and enqueue_try > job_try:
            job_try = enqueue_try
            await self.pool.setex(retry_key_prefix + job_id, 88400, str(job_try))
        max_tries = self.max_tries if function.max_tries is None else function.max_tries
        if job_try > max_tries:
            logger.warning("%s:%s max retries %d exceeded", job_id, name, max_tries)
            return self._drop(job_id)
        ctx = {
            **self.ctx,
            "job_id": job_id,
            "job_try": job_try,
            "enqueue_time": ms_to_datetime(enqueue_time_ms),
            "score": score,
        }
        timeout_s = self.job_timeout_s if function.timeout_s is None else function.timeout_s
        how = ENDED_CRON if is_cron else ENDED
        # In this task (arq runs the function in a task of its own under ``wait_for``): a
        # task and a timer handle fewer per check. Its shutdown (this task cancelled) and
        # its timeout (``TimeoutError``, a failure) end it as arq's would; arq's job abort,
        # the only other user of ``job_tasks``, is not used.
        try:
            async with asyncio.timeout(timeout_s):
                await function.coroutine(ctx, *args, **kwargs)
        except asyncio.CancelledError:
            if self.retry_jobs:
                self.jobs_retried += 1
                how = RELEASED  # shutdown: any worker runs it again
            else:
                self.jobs_failed += 1
        except Exception as e:
            logger.exception("%s:%s failed, %s: %s", job_id, name, e.__class__.__name__, e)
            self.jobs_failed += 1
        else:
            self.jobs_complete += 1
        self._retired.append((job_id, how))
