"""Load limits: a per-key request rate shared by every gateway process (429 over it) and a
cap on concurrent long-polls in this process.

The rate is a GCRA in Redis (``gateway/gcra.py``): one script call per authenticated request,
which also refuses an address out of failed authentications (``gateway/auth_limit.py``). No
in-process fallback: if Redis cannot be asked the request gets 503, as every ``/v1`` route
needs Redis anyway (a fallback would only ration the 503s).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import redis
import structlog
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from genqueue.gateway.auth_limit import AuthFailures
from genqueue.gateway.client_address import UNKNOWN
from genqueue.gateway.errors import TooManyWaiters, error_response, unavailable
from genqueue.gateway.gcra import Gcra, LimitScript, caller_name
from genqueue.producer.keys import Keys

log = structlog.get_logger(__name__)

#: The ASGI scope entry where :class:`~genqueue.gateway.auth.AuthMiddleware` leaves the
#: caller's identity (a digest of its key, never the key) for the rate limit.
CALLER_SCOPE_KEY = "genqueue.caller"
#: The ASGI scope entry with the caller's address as the failed-authentication limit names it.
ADDRESS_SCOPE_KEY = "genqueue.address"
#: The answer to a request from an address out of failed authentications.
BLOCKED_MESSAGE = "too many failed authentications from this address"


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
    """ASGI middleware: a caller identified by auth spends one of its key's requests, shared
    by every gateway process; 429 when out, or when its address is out of failures."""

    app: ASGIApp
    script: LimitScript
    keys: Keys
    rate_rps: float
    burst: int
    failures: AuthFailures

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        caller: bytes | None = scope.get(CALLER_SCOPE_KEY)
        if scope["type"] != "http" or caller is None:
            await self.app(scope, receive, send)
            return
        address: str = scope.get(ADDRESS_SCOPE_KEY, UNKNOWN)
        try:
            verdict = await self.script.run(
                self.keys.gateway_rate(caller_name(caller)),
                Gcra.of(per_s=self.rate_rps, burst=self.burst),
                (self.failures.key(address), self.failures.limit),
            )
        except (redis.RedisError, OSError, TimeoutError) as exc:
            log.warning("redis_unavailable", error=type(exc).__name__, during="rate_limit")
            await unavailable()(scope, receive, send)
            return
        if verdict.outcome == "OK":
            await self.app(scope, receive, send)
            return
        if verdict.outcome == "BLOCKED":
            self.failures.remember(address, verdict.wait_s)
            response = too_many(BLOCKED_MESSAGE, verdict.wait_s)
        else:
            response = too_many(
                f"over {self.rate_rps:g} requests per second for this API key", verdict.wait_s
            )
        await response(scope, receive, send)
