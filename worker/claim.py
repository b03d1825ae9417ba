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

A job that ended is retired at the next look (``poll_delay_s`` later), not at once: if the
worker dies in between, its in-progress key expires and the job runs again, as after a crash
just before arq's own ``finish_job`` — a timer re-run is harmless (its seq has moved on).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

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

from genqueue.producer.scripts import source

logger = logging.getLogger("arq.worker")

#: How a retired job's keys are left (ARGV of ``lua/claim_due.lua``).
ENDED, RELEASED, ENDED_CRON = "e", "r", "c"


def claim_due_args(
    *,
    now_ms: int,
    in_progress_ms: int,
    want: int,
    look: int,
    cron_keep_ms: int,
    retired: list[tuple[str, str]],
) -> list[Any]:
    """ARGV of ``lua/claim_due.lua`` (KEYS: the queue): claim up to ``want`` of the first
    ``look`` due ids at ``now_ms`` (the host clock, as arq compares), after retiring each
    (job id, ``ENDED`` | ``RELEASED`` | ``ENDED_CRON``) of ``retired``."""
    args: list[Any] = [
        now_ms,
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
    return args


def parse_claimed(reply: list[Any]) -> list[tuple[str, int, bytes | None, int]]:
    """The reply of ``lua/claim_due.lua``: per claimed job (id, score, payload or None if
    its job key expired, try)."""
    it = iter(reply)
    return [
        (job_id.decode(), int(float(score)), payload, int(job_try))
        for job_id, score, payload, job_try in zip(it, it, it, it, strict=True)
    ]


class TimerWorker(Worker):
    """An arq ``Worker`` whose queue traffic is one script call per look (see the module)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._claim_due: Any = None
        self._retired: list[tuple[str, str]] = []

    async def main(self) -> None:
        try:
            await super().main()
        finally:
            if self._pool is not None:
                await self.flush_retired()

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
        if want > 0 or self._retired:
            for job_id, score, payload, job_try in await self._look(want=max(0, want)):
                self._start(job_id, score, payload, job_try)
        for job_id, t in list(self.tasks.items()):
            if t.done():
                del self.tasks[job_id]
                t.result()  # errors in the job runner propagate, as in arq
        await self.heart_beat()

    async def _look(self, *, want: int) -> list[tuple[str, int, bytes | None, int]]:
        if self._claim_due is None:
            self._claim_due = self.pool.register_script(source("claim_due"))
        retired, self._retired = self._retired, []
        args = claim_due_args(
            now_ms=timestamp_ms(),
            in_progress_ms=int(self.in_progress_timeout_s * 1000),
            want=want,
            look=self.queue_read_limit,
            cron_keep_ms=int(keep_cronjob_progress * 1000),
            retired=retired,
        )
        try:
            reply = await self._claim_due(keys=[self.queue_name], args=args)
        except BaseException:
            self._retired[:0] = retired  # not sent: retried at the next look
            raise
        return parse_claimed(reply)

    def _start(self, job_id: str, score: int, payload: bytes | None, job_try: int) -> None:
        # A job is claimed only for a free slot: job_counter is the only gate (arq's
        # semaphore belongs to its start_jobs, which is not used).
        self.job_counter += 1
        t = self.loop.create_task(self._run_claimed(job_id, score, payload, job_try))
        t.add_done_callback(self._job_ended)
        self.tasks[job_id] = t

    def _job_ended(self, _: asyncio.Task[None]) -> None:
        self.job_counter -= 1

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
        task = self.loop.create_task(function.coroutine(ctx, *args, **kwargs))
        self.job_tasks[job_id] = task
        try:
            await asyncio.wait_for(task, timeout_s)
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
        finally:
            del self.job_tasks[job_id]
        self._retired.append((job_id, how))
