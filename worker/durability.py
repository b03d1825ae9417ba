"""Make the write of an upstream id durable before anything else (architecture rule 3).

The wait itself (``WAIT 1`` for a replica, ``WAITAOF`` where offered, re-detected after a
failover) is ``genqueue.producer.durability``'s. An upstream id is already paid for, so a wait
that times out cannot undo anything: the id stays written on the primary, the worker goes on,
and the miss is logged (``durable_write_not_acknowledged``) and counted
(``genqueue_durable_write_timeouts_total``): nothing is silently assumed durable.
"""

from __future__ import annotations

from collections.abc import Callable

import redis.asyncio
import structlog

from genqueue.producer.connections import is_sentinel_url
from genqueue.producer.durability import AsyncDurableWriter, DurabilityPolicy
from genqueue.producer.scripts import AsyncScripts, R, ScriptCall
from genqueue.worker.config import WorkerConfig

log = structlog.get_logger(__name__)


def policy_for(config: WorkerConfig) -> DurabilityPolicy:
    """The policy for upstream ids (``GENQUEUE_DURABLE_WRITES``)."""
    return DurabilityPolicy(
        mode=config.durable_writes,
        timeout_ms=max(1, round(config.durable_wait_timeout_s * 1000)),
        recheck_s=config.settings.durable_recheck_s,
        expect_replicas=is_sentinel_url(config.settings.redis_url),
    )


class Durability:
    """The durable-write step of one worker process (no client: writes run undurably, for
    tests that build a ``Runtime`` by hand)."""

    def __init__(
        self,
        client: redis.asyncio.Redis | None = None,
        policy: DurabilityPolicy | None = None,
        *,
        on_unacknowledged: Callable[[], object] = lambda: None,
    ) -> None:
        self.writer = (
            AsyncDurableWriter(client, policy or DurabilityPolicy()) if client is not None else None
        )
        self._on_unacknowledged = on_unacknowledged

    async def detect(self) -> None:
        """Look at the deployment now, rather than at the first write, and log the choice."""
        if self.writer is None:
            return
        plan = await self.writer.plan()
        log.info(
            "durable_writes", wait=plan.names, expect_replicas=self.writer.policy.expect_replicas
        )

    async def run(self, client: redis.asyncio.Redis, scripts: AsyncScripts, c: ScriptCall[R]) -> R:
        """Run the script, then wait for its durability on the same connection."""
        if self.writer is None:
            return await scripts.run(c)
        out = await self.writer.write(c)
        if not out.acknowledged:
            self._on_unacknowledged()
        return out.reply
