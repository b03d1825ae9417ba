"""Make the write of an upstream id durable before anything else (architecture rule 3)."""

from __future__ import annotations

from dataclasses import dataclass

import redis.asyncio
import structlog

from genqueue.producer.scripts import AsyncScripts, R, ScriptCall, run_with

log = structlog.get_logger(__name__)


def _version(v: str) -> tuple[int, ...]:
    return tuple(int(p) for p in v.split(".")[:3] if p.isdigit())


@dataclass(frozen=True, slots=True)
class Durability:
    """Which wait, if any, follows a critical write: ``WAITAOF`` (Redis >= 7.2 with AOF on),
    else ``WAIT`` when replicas are attached, else none (the loss window is then AOF's)."""

    command: tuple[str | int, ...] = ()

    @classmethod
    async def detect(cls, client: redis.asyncio.Redis, *, mode: str, timeout_ms: int) -> Durability:
        if mode == "off":
            return cls()
        info = await client.info()
        version = _version(str(info.get("redis_version", "0")))
        aof = int(info.get("aof_enabled", 0)) == 1
        replicas = int(info.get("connected_slaves", 0))
        if version >= (7, 2) and aof:
            chosen: tuple[str | int, ...] = ("WAITAOF", 1, 0, timeout_ms)
        elif replicas > 0:
            chosen = ("WAIT", 1, timeout_ms)
        else:
            chosen = ()
        log.info(
            "durable_writes",
            wait=chosen[0] if chosen else "none",
            redis_version=info.get("redis_version"),
            aof=aof,
            replicas=replicas,
        )
        return cls(chosen)

    async def run(self, client: redis.asyncio.Redis, scripts: AsyncScripts, c: ScriptCall[R]) -> R:
        """Run the script, then wait for its durability on the same connection."""
        if not self.command:
            return await scripts.run(c)
        reply, acked = await run_with(client, scripts, c, *self.command)
        if not acked or (isinstance(acked, list) and not acked[0]):
            log.warning("durable_write_not_acknowledged", wait=self.command[0], reply=acked)
        return reply
