"""Writes that survive a failover: after a write that matters (a request's creation, an
upstream id), wait on the same connection for a replica to hold it (``WAIT 1``), and for the
AOF fsync where the primary offers ``WAITAOF`` (Redis >= 7.2 with AOF on).

What to wait for is detected from ``INFO`` and detected again every ``recheck_s``, and at
once after a connection error or a wait that was not acknowledged: a failover (a new primary,
maybe with other replicas, maybe another version) is noticed by the next write. A wait that
times out is reported to the caller (``acknowledged`` False), never silently assumed durable.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Literal

import redis
import redis.asyncio
import structlog

from genqueue.producer.connections import is_sentinel_url
from genqueue.producer.evalsha import script_caller
from genqueue.producer.scripts import R, ScriptCall, decode_reply, source
from genqueue.producer.settings import Settings

log = structlog.get_logger(__name__)

DurableMode = Literal["auto", "off"]
Command = tuple[str | int, ...]


def _version(v: str) -> tuple[int, ...]:
    return tuple(int(p) for p in v.split(".")[:3] if p.isdigit())


def describe(info: Mapping[str, Any]) -> dict[str, Any]:
    """What the wait was chosen from (for logs)."""
    return {
        "redis_version": info.get("redis_version"),
        "aof": int(info.get("aof_enabled", 0)) == 1,
        "replicas": int(info.get("connected_slaves", 0)),
    }


@dataclass(frozen=True, slots=True)
class WaitPlan:
    """The commands that follow a critical write, on its connection (none: nothing to wait for)."""

    commands: tuple[Command, ...] = ()

    @classmethod
    def from_info(
        cls, info: Mapping[str, Any], *, expect_replicas: bool, timeout_ms: int
    ) -> WaitPlan:
        """``WAIT 1`` when replicas are attached or expected (a Sentinel deployment: right
        after a failover the new primary may have none yet, and a write must not pass as
        replicated then); ``WAITAOF 1 0`` when Redis >= 7.2 has AOF on."""
        version = _version(str(info.get("redis_version", "0")))
        aof = int(info.get("aof_enabled", 0)) == 1
        replicas = int(info.get("connected_slaves", 0))
        commands: list[Command] = []
        if replicas > 0 or expect_replicas:
            commands.append(("WAIT", 1, timeout_ms))
        if version >= (7, 2) and aof:
            commands.append(("WAITAOF", 1, 0, timeout_ms))
        return cls(tuple(commands))

    def acknowledged(self, replies: Sequence[Any]) -> bool:
        """True when every wait was satisfied (an error reply counts as not)."""
        for cmd, reply in zip(self.commands, replies, strict=True):
            if isinstance(reply, Exception):
                return False
            if cmd[0] == "WAIT" and int(reply) < 1:
                return False
            if cmd[0] == "WAITAOF" and (not isinstance(reply, list) or int(reply[0]) < 1):
                return False
        return True

    @property
    def names(self) -> str:
        return "+".join(str(c[0]) for c in self.commands) or "none"


class DurabilityPolicy:
    """Which wait follows a critical write, and when to look again (shared by the async and
    blocking writers; no I/O here)."""

    def __init__(
        self,
        *,
        mode: DurableMode | str = "auto",
        timeout_ms: int = 1000,
        recheck_s: float = 10.0,
        expect_replicas: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.mode = mode
        self.timeout_ms = timeout_ms
        self.recheck_s = recheck_s
        self.expect_replicas = expect_replicas
        self._clock = clock
        self.plan: WaitPlan | None = WaitPlan() if mode == "off" else None
        self._last: WaitPlan | None = None
        self._checked_at = 0.0

    def stale(self) -> bool:
        """True when the plan must be (re-)detected before the next write."""
        if self.mode == "off":
            return False
        return self.plan is None or self._clock() - self._checked_at >= self.recheck_s

    def update(self, info: Mapping[str, Any]) -> WaitPlan:
        plan = WaitPlan.from_info(
            info, expect_replicas=self.expect_replicas, timeout_ms=self.timeout_ms
        )
        if self._last is not None and plan != self._last:
            # A change (e.g. after a failover) is news; the first detection is not (a
            # producer's first create must not print anything).
            log.info("durable_writes_changed", wait=plan.names, **describe(info))
        self.plan = self._last = plan
        self._checked_at = self._clock()
        return plan

    def invalidate(self) -> None:
        """Detect again before the next write (after an error or an unacknowledged wait)."""
        if self.mode != "off":
            self.plan = None


@dataclass(frozen=True, slots=True)
class DurableReply(Generic[R]):
    """A critical write's typed script reply and whether its wait was acknowledged."""

    reply: R
    acknowledged: bool
    wait: str


def _split(results: list[Any], plan: WaitPlan, c: ScriptCall[R]) -> DurableReply[R]:
    reply, *acks = results
    if isinstance(reply, Exception):
        raise reply
    ok = plan.acknowledged(acks)
    if not ok:
        log.warning("durable_write_not_acknowledged", script=c.name, wait=plan.names)
    return DurableReply(c.parse(decode_reply(reply)), ok, plan.names)


class AsyncDurableWriter:
    """Runs critical scripts on one asyncio client, followed by the policy's wait."""

    def __init__(self, client: redis.asyncio.Redis, policy: DurabilityPolicy) -> None:
        self._client = client
        self._call = script_caller(client)
        self.policy = policy
        self._scripts: dict[str, Any] = {}

    async def plan(self) -> WaitPlan:
        if self.policy.stale():
            return self.policy.update(await self._client.info())
        assert self.policy.plan is not None
        return self.policy.plan

    async def write(self, c: ScriptCall[R]) -> DurableReply[R]:
        """Run the script, then its wait on the same connection (``WAIT`` only counts the
        writes of its own connection)."""
        script = self._scripts.get(c.name) or self._client.register_script(source(c.name))
        self._scripts[c.name] = script
        try:
            plan = await self.plan()
            if not plan.commands:
                # Nothing to wait for: the script alone, one round trip (a pipeline holding
                # only the script first asked Redis whether it knows the script).
                results = [await self._call(script, c.keys, c.args)]
            else:
                async with self._client.pipeline(transaction=False) as pipe:
                    await script(keys=c.keys, args=c.args, client=pipe)
                    for cmd in plan.commands:
                        pipe.execute_command(*cmd)
                    results = await pipe.execute(raise_on_error=False)
        except redis.RedisError:
            self.policy.invalidate()  # maybe a failover: look at the new primary first
            raise
        out = _split(results, plan, c)
        if not out.acknowledged:
            self.policy.invalidate()
        return out


class SyncDurableWriter:
    """Runs critical scripts on one blocking client, followed by the policy's wait."""

    def __init__(self, client: redis.Redis, policy: DurabilityPolicy) -> None:
        self._client = client
        self.policy = policy
        self._scripts: dict[str, Any] = {}

    def plan(self) -> WaitPlan:
        if self.policy.stale():
            info: Mapping[str, Any] = self._client.info()  # type: ignore[assignment]
            return self.policy.update(info)
        assert self.policy.plan is not None
        return self.policy.plan

    def write(self, c: ScriptCall[R]) -> DurableReply[R]:
        """Run the script, then its wait on the same connection."""
        script = self._scripts.get(c.name) or self._client.register_script(source(c.name))
        self._scripts[c.name] = script
        try:
            plan = self.plan()
            with self._client.pipeline(transaction=False) as pipe:
                script(keys=c.keys, args=c.args, client=pipe)
                for cmd in plan.commands:
                    pipe.execute_command(*cmd)  # type: ignore[no-untyped-call]
                results = pipe.execute(raise_on_error=False)
        except redis.RedisError:
            self.policy.invalidate()
            raise
        out = _split(results, plan, c)
        if not out.acknowledged:
            self.policy.invalidate()
        return out


def create_policy(settings: Settings) -> DurabilityPolicy:
    """The policy for request creations (``GENQUEUE_DURABLE_CREATES``)."""
    return DurabilityPolicy(
        mode=settings.durable_creates,
        timeout_ms=max(1, round(settings.durable_create_timeout_s * 1000)),
        recheck_s=settings.durable_recheck_s,
        expect_replicas=is_sentinel_url(settings.redis_url),
    )
