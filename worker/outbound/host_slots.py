"""A cap on concurrent webhook deliveries per receiving host, per worker process.

Per process, not in Redis: a slot must be given back even when its task is killed, which a
local semaphore does by construction (the process's memory goes with it) and a Redis
counter would need leases for. The cap protects what one slow host can take: the side
worker's ``max_jobs`` slots are per process, so a per-process cap bounds a host's share of
them; across N processes a host gets at most N x cap.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager


class HostSlots:
    """``async with slots.take(host) as got:`` -- ``got`` is False when ``host`` is full
    (the caller puts the delivery back instead of waiting in a worker slot)."""

    def __init__(self, per_host: int) -> None:
        self.per_host = per_host
        self._busy: dict[str, int] = {}

    def in_use(self, host: str) -> int:
        return self._busy.get(host, 0)

    @asynccontextmanager
    async def take(self, host: str) -> AsyncIterator[bool]:
        if self._busy.get(host, 0) >= self.per_host:
            yield False
            return
        self._busy[host] = self._busy.get(host, 0) + 1
        try:
            yield True
        finally:
            left = self._busy[host] - 1
            if left:
                self._busy[host] = left
            else:
                del self._busy[host]  # no entry per host ever seen: the dict stays small
