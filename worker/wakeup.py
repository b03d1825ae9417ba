"""Waiting instead of looking: when a worker with nothing due looks again.

A worker used to look for due timers every ``poll_delay_s`` (a script call each time, 20 a
second per queue, busy or not). Now it looks when there is a reason to:

* **a due time**: each look (``lua/claim_due.lua``) answers when the next job of the queue
  (or entry of a watched set: the outbox for the side worker) is due. A busy worker (jobs
  running) looks then itself; of the idle ones only one does, the one holding the queue's
  *wake-at* key (the time it watches). The others would only fight over the same timer;
* **a wake token**: arming a job due before the watched time, or owing a side effect, pushes
  a token on the queue's *wake list* (``lua/_wake.lua``; at most one token at a time). Every
  worker keeps one ``BLPOP`` on it outstanding (``WakeListener``); Redis hands a token to
  exactly one of them, so one arm wakes one worker. Admission (a freed slot admitting a
  waiting request) can wake a worker the same way: push through ``wake_one`` in its script;
* **a job of its own ended**: its keys are retired at the next look, spaced at least
  ``poll_delay_s`` after the previous one (under load a worker looks as often as before, and
  no more);
* **its own schedule**: the health key, periodic work (``Periodic``: the reconciler) and a
  cap (``max_wait_s``) that bounds how long a lost token or a dead watcher can delay a job.

**Two clocks.** Timers are scored in Redis time; the look compares them with Redis ``TIME``
and answers *how long* until the next one is due, which the worker waits on its monotonic
clock. A host clock that is off changes nothing (comparing with the host's clock, as arq
does, would make a worker behind Redis wake before the job is due by its own clock and look
again and again until it is).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio
import structlog

from genqueue.producer.keys import WakeKeys

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class LookResult:
    """What a look says about the next one (the tail of ``lua/claim_due.lua``'s reply)."""

    #: Seconds until the next job or watched entry is due; None: nothing before the cap.
    next_in_s: float | None
    #: An entry of the watched set (the outbox) is due now.
    watched_due: bool
    #: This worker watches the next due time for the idle workers of its queue.
    watcher: bool


def wait_s(
    look: LookResult | None,
    *,
    running: int,
    cap_s: float,
    other_deadlines_s: tuple[float, ...] = (),
) -> float:
    """How long a worker waits before its next look (a wake token or one of its own jobs
    ending may cut it short): until its next due time if it is busy or the watcher, else
    until its own schedule (``other_deadlines_s``) or ``cap_s``."""
    candidates = [cap_s, *other_deadlines_s]
    if look is not None and look.next_in_s is not None and (running > 0 or look.watcher):
        candidates.append(look.next_in_s)
    return max(0.0, min(candidates))


class WakeListener:
    """One ``BLPOP`` on a wake list kept outstanding across waits (a blocked command cannot be
    cancelled without dropping its connection, so it is never cancelled but at shutdown), on
    a connection of its own (closed with it) beside ``client``'s pool."""

    def __init__(self, client: redis.asyncio.Redis, keys: WakeKeys, *, timeout_s: float) -> None:
        pool = client.connection_pool
        self._client: redis.asyncio.Redis = redis.asyncio.Redis(
            connection_pool=redis.asyncio.ConnectionPool(
                connection_class=pool.connection_class,
                max_connections=2,
                **pool.connection_kwargs,
            )
        )
        self._keys = keys
        self._timeout_s = timeout_s
        self._task: asyncio.Task[Any] | None = None

    def task(self) -> asyncio.Task[Any]:
        """The outstanding ``BLPOP`` (started if none): done when a token came or it timed out."""
        if self._task is None:
            self._task = asyncio.create_task(self._blpop())
        return self._task

    async def _blpop(self) -> Any:
        # Whole seconds: redis-py types the timeout as int (Redis takes fractions too).
        timeout_s = max(1, round(self._timeout_s))
        return await self._client.blpop([self._keys.wake], timeout=timeout_s)  # type: ignore[misc]

    def take(self) -> bool:
        """If the ``BLPOP`` has ended: forget it (the next wait starts another) and say whether
        it brought a token (False on a timeout). Its error is raised: a lost Redis ends the
        worker's loop (the supervisor starts it again) instead of a loop of failing waits."""
        t = self._task
        if t is None or not t.done():
            return False
        self._task = None
        if t.cancelled():
            return False
        return t.result() is not None

    async def give_back(self) -> None:
        """Pass a token on (this worker has no free slot): another waiting worker takes it."""
        await self._client.rpush(self._keys.wake, "1")  # type: ignore[misc]

    async def close(self) -> None:
        t, self._task = self._task, None
        if t is not None:
            t.cancel()
            await asyncio.gather(t, return_exceptions=True)
        await self._client.aclose(close_connection_pool=True)


@dataclass
class Periodic:
    """Work one worker of many does every ``interval_s`` (the reconciler): each worker tries at
    its own times; a ``SET NX PX`` on ``lock_key`` lets one of them run per interval."""

    name: str
    interval_s: float
    lock_key: str
    run: Callable[[dict[str, Any]], Awaitable[Any]]
    next_at: float = field(default=0.0)

    def __post_init__(self) -> None:
        self.next_at = time.monotonic() + self.interval_s

    def due_in_s(self) -> float:
        return self.next_at - time.monotonic()

    async def maybe_run(self, client: redis.asyncio.Redis, ctx: dict[str, Any]) -> bool:
        """Run if due and this worker takes the interval's lock; True if it ran."""
        if self.due_in_s() > 0:
            return False
        self.next_at = time.monotonic() + self.interval_s
        # A little shorter than the interval: the next tick of whichever worker is first
        # finds it free even if the clocks of two hosts' ticks drift.
        lock_ms = max(1, int(self.interval_s * 900))
        if not await client.set(self.lock_key, "1", nx=True, px=lock_ms):
            return False
        try:
            await self.run(ctx)
        except Exception:
            log.exception("periodic_failed", name=self.name)
        return True


async def sleep_until_spaced(last_look_at: float, spacing_s: float) -> None:
    """Sleep so that a look comes at least ``spacing_s`` after the previous one."""
    delay = last_look_at + spacing_s - time.monotonic()
    if delay > 0:
        await asyncio.sleep(delay)
