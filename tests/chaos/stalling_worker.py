"""``python -m tests.chaos.stalling_worker worker``: a worker that behaves like one whose
process stalls while its create is out, for the chaos run's late-answer scenario.

genqueue's own lease (task timeout + 5 s) outlasts any live create (its HTTP deadline is below
the task timeout), so a create is answered after another attempt went out only when a worker
stalls (a paused VM, a stopped process) — which a chaos run cannot time to a create. This
worker stands in for it: its submit lease is ``GENQUEUE_CHAOS_LEASE_S`` (shorter than the
simulator's ``late_answer_s``), and each submit step is run a second time, as another worker
would after the lease, ``GENQUEUE_CHAOS_LEASE_S`` + 0.2 s after the first. When the first
create was answered in time the second run is stale and does nothing; when the simulator held
the answer (``late_answer``), the second run sees an expired lease and creates again, and
the first answer then names a superseded job.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from genqueue.worker import app
from genqueue.worker.config import WorkerConfig

LEASE_S = float(os.environ.get("GENQUEUE_CHAOS_LEASE_S", "1.0"))
_run_submit = app.run_submit
_pending: set[asyncio.Task[None]] = set()


async def _run_submit_twice(rt: Any, request_id: str, seq: int) -> None:
    async def second() -> None:
        await asyncio.sleep(LEASE_S + 0.2)
        await _run_submit(rt, request_id, seq)

    task = asyncio.create_task(second())
    _pending.add(task)  # keep a reference until it ends
    task.add_done_callback(_pending.discard)
    await _run_submit(rt, request_id, seq)


def main() -> None:
    WorkerConfig.lease_s = property(lambda self: LEASE_S)  # type: ignore[assignment,method-assign]
    app.run_submit = _run_submit_twice  # type: ignore[assignment]
    from genqueue.cli import main as cli

    cli()


if __name__ == "__main__":
    main()
