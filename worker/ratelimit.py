"""A rate limit on upstream calls shared by every worker process on every host.

Built on the ``limits`` library (Redis moving windows) rather than hand-written: two windows
per upstream and API key — ``rps + burst`` calls in any 1 s, and ``10 * rps`` in any 10 s — so
short bursts are allowed but the sustained rate is not exceeded. A refused call is not
retried by sleeping: the task re-arms itself for when the window frees up.
"""

from __future__ import annotations

import hashlib
import math
import time

from limits import RateLimitItem, RateLimitItemPerSecond
from limits.aio.storage import RedisStorage
from limits.aio.strategies import MovingWindowRateLimiter


def limiter_identity(upstream_url: str, api_key: str) -> str:
    """Who shares one budget: the same upstream and key (the key itself is never stored)."""
    return hashlib.sha256(f"{upstream_url}|{api_key}".encode()).hexdigest()[:16]


class SharedRateLimit:
    """``acquire()`` returns 0 when a call may go now, else how many seconds to wait."""

    def __init__(self, redis_url: str, *, prefix: str, rps: float, burst: int, identity: str):
        if rps <= 0:
            raise ValueError("rps must be positive")
        scheme, rest = redis_url.split("://", 1)
        self._storage = RedisStorage(
            f"async+{scheme}://{rest}", implementation="redispy", key_prefix=f"{prefix}:limits"
        )
        self._limiter = MovingWindowRateLimiter(self._storage)
        self._items: list[RateLimitItem] = [
            RateLimitItemPerSecond(max(1, math.floor(rps) + burst), 1),
            RateLimitItemPerSecond(max(1, round(rps * 10)), 10),
        ]
        self._identity = identity

    async def acquire(self) -> float:
        for item in self._items:
            if not await self._limiter.hit(item, self._identity):
                stats = await self._limiter.get_window_stats(item, self._identity)
                return max(0.01, stats.reset_time - time.time())
        return 0.0
