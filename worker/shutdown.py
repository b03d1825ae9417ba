"""How long a worker process may take to exit after SIGTERM, Redis down included: what an
orchestrator's grace period (docker-compose's ``stop_grace_period``, Kubernetes'
``terminationGracePeriodSeconds``) must cover. A worker killed sooner may drop a create's
answer before its id is written: the next attempt buys the same video again.
"""

from __future__ import annotations

from genqueue.worker.config import WorkerConfig
from genqueue.worker.tasks import WRITE_TRY_S

#: After the last wait: cancelling and flushing both arq workers (up to ~1 s each, see
#: ``stop_worker``), closing the HTTP clients and the Redis pools.
CLOSE_MARGIN_S = 5.0


def stop_bound_s(config: WorkerConfig) -> float:
    """The longest SIGTERM-to-exit of ``genqueue worker`` with ``config``.

    Running jobs get ``job_completion_wait_s``, so a create may start just before they are
    cancelled. It runs on (``worker/critical.py``): after its POST (within ``lease_s``), the
    write of its id is retried while Redis is down until two leases after the lease began,
    the last try getting ``WRITE_TRY_S`` (``worker/tasks.py``); the runtime's close waits for
    it. The side worker's jobs are cancelled after the same wait and hold no such section.
    """
    return config.job_completion_wait_s + 2 * config.lease_s + WRITE_TRY_S + CLOSE_MARGIN_S
