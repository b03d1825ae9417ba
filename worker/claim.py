"""arq's ``Worker`` with one change: a due job is claimed by one script instead of a
WATCH / EXISTS / ZSCORE / MULTI-PSETEX-EXEC transaction (four round trips, made one job after
another while every other due job waits).

The checks are arq 0.28's own (``Worker.start_jobs``): not running elsewhere (no in-progress
key), still queued, due by this host's clock; then the in-progress key is set for arq's
in-progress timeout. A script is atomic, so no WATCH is needed. The version is pinned
(``arq>=0.28,<0.29`` in pyproject.toml) because this relies on ``start_jobs``' internals;
``tests/test_claim.py`` holds it to arq's behaviour.
"""

from __future__ import annotations

from typing import Any

from arq.constants import in_progress_key_prefix
from arq.utils import timestamp_ms
from arq.worker import Worker

CLAIM_LUA = """
-- KEYS: 1 the job's in-progress key, 2 the queue. ARGV: 1 job id, 2 now (ms, the worker
-- host's clock, as arq compares), 3 in-progress timeout (ms).
-- Returns the job's score if this call claimed it, else nil (running elsewhere, no longer
-- queued, or re-queued for later).
if redis.call('EXISTS', KEYS[1]) == 1 then return nil end
local score = redis.call('ZSCORE', KEYS[2], ARGV[1])
if not score or tonumber(score) > tonumber(ARGV[2]) then return nil end
redis.call('PSETEX', KEYS[1], ARGV[3], '1')
return score
"""


class TimerWorker(Worker):
    """An arq ``Worker`` that claims each due job in one round trip."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._claim: Any = None

    async def start_jobs(self, job_ids: list[bytes]) -> None:
        """For each job id: claim it (see the module's docstring) and start it in a task."""
        if self._claim is None:
            self._claim = self.pool.register_script(CLAIM_LUA)
        timeout_ms = int(self.in_progress_timeout_s * 1000)
        for job_id_b in job_ids:
            await self.sem.acquire()
            if self.job_counter >= self.max_jobs:
                self.sem.release()
                return
            self.job_counter += 1
            job_id = job_id_b.decode()
            score = await self._claim(
                keys=[in_progress_key_prefix + job_id, self.queue_name],
                args=[job_id, timestamp_ms(), timeout_ms],
            )
            if score is None:
                self.job_counter -= 1
                self.sem.release()
                continue
            t = self.loop.create_task(self.run_job(job_id, int(float(score))))
            t.add_done_callback(lambda _: self._release_sem_dec_counter_on_complete())
            self.tasks[job_id] = t
