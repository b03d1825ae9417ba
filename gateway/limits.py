"""Load limits: a per-key token bucket (429 over the rate) and a cap on concurrent long-polls.

Both count in this process only: N gateway processes allow N times the numbers.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from genqueue.gateway.errors import TooManyWaiters, error_response

#: The ASGI scope entry where :class:`~genqueue.gateway.auth.AuthMiddleware` leaves the
#: caller's identity (a digest of its key, never the key) for the rate limit.
CALLER_SCOPE_KEY = "genqueue.caller"


@dataclass(slots=True)
class _Bucket:
    tokens: float
    at_s: float


@dataclass(slots=True)
class TokenBuckets:
    """One token bucket per caller: ``burst`` tokens, refilled at ``rate_rps``."""

    rate_rps: float
    burst: int
    clock: Callable[[], float] = time.monotonic
    _buckets: dict[bytes, _Bucket] = field(default_factory=dict)

    def take(self, caller: bytes) -> float:
        """Spend one token of ``caller``: 0.0 if allowed, else seconds until one is available."""
        now = self.clock()
        bucket = self._buckets.get(caller)
        if bucket is None:
            # Callers are authenticated keys, so the map is bounded by the number of keys.
            bucket = self._buckets[caller] = _Bucket(float(self.burst), now)
        bucket.tokens = min(float(self.burst), bucket.tokens + (now - bucket.at_s) * self.rate_rps)
        bucket.at_s = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return 0.0
        return (1.0 - bucket.tokens) / self.rate_rps


@dataclass(slots=True)
class WaiterCap:
    """Counts concurrent long-polls; :meth:`hold` refuses beyond ``limit``."""

    limit: int
    active: int = 0

    @contextmanager
    def hold(self) -> Iterator[None]:
        """One long-poll slot for the block; raises :class:`TooManyWaiters` when none is free."""
        if self.active >= self.limit:
            raise TooManyWaiters
        self.active += 1
        try:
            yield
        finally:
            self.active -= 1


def too_many(message: str, retry_after_s: float) -> JSONResponse:
    """429 with ``Retry-After`` in whole seconds (at least 1)."""
    retry = max(1, math.ceil(retry_after_s))
    return error_response(429, message, headers={"Retry-After": str(retry)})


@dataclass(frozen=True, slots=True)
class RateLimit:
    """ASGI middleware: callers identified by auth spend one token per request; 429 when out."""

    app: ASGIApp
    buckets: TokenBuckets

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        caller: bytes | None = scope.get(CALLER_SCOPE_KEY)
        if scope["type"] != "http" or caller is None:
            await self.app(scope, receive, send)
            return
        wait_s = self.buckets.take(caller)
        if wait_s == 0.0:
            await self.app(scope, receive, send)
            return
        response = too_many(
            f"over {self.buckets.rate_rps:g} requests per second for this API key", wait_s
        )
        await response(scope, receive, send)
