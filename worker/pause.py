"""The circuit breaker: a pause of upstream creates for every worker, kept in Redis.

401/403 (key), 402 (credits) or a streak of create failures that look like an outage pause
creates for everyone instead of failing the backlog one request at a time (architecture rule 13).
When the pause has run its time it turns half-open: ``begin_submit`` lets one request through
as a probe; its success resumes creates, its failure pauses again. ``genqueue resume`` (or
``CreatePause.resume``) ends a pause at once.
"""

from __future__ import annotations

import redis.asyncio

from genqueue.producer.keys import Keys
from genqueue.producer.scripts import source
from genqueue.producer.timers import JOB_EXTRA_MS, JOB_KEY_PREFIX


class CreatePause:
    """Pauses, probes and resumes upstream creates for the whole cluster."""

    def __init__(self, client: redis.asyncio.Redis, keys: Keys) -> None:
        self._pause = client.register_script(source("pause"))
        self._streak = client.register_script(source("pause_streak"))
        self._client = client
        self._keys = keys

    async def pause(self, *, reason: str, code: int | str, duration_ms: int) -> int:
        """Pause creates for ``duration_ms`` (then half-open; an ``admit`` timer at its end
        admits the requests waiting meanwhile); returns the end (Redis ms)."""
        keys = [self._keys.pause, self._keys.queue]
        args = [reason[:300], str(code), str(duration_ms), JOB_KEY_PREFIX, str(JOB_EXTRA_MS)]
        return int(await self._pause(keys=keys, args=args))

    async def resume(self) -> bool:
        """End a pause now; True if one was in force."""
        return bool(await self._client.delete(self._keys.pause))

    async def record_outage_failure(self, threshold: int) -> bool:
        """Count a create that failed like an outage (5xx, timeout); True when this failure
        completes a streak of ``threshold`` across all workers."""
        key = self._keys.pause_streak
        return bool(await self._streak(keys=[key], args=["fail", threshold]))

    async def record_create_answered(self) -> None:
        """A create got an answer from a working upstream: the failure streak is over."""
        key = self._keys.pause_streak
        await self._streak(keys=[key], args=["ok", 0])
