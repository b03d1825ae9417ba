"""The gateway's own limits, read from ``GENQUEUE_GATEWAY_*`` variables."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, replace

from genqueue.producer.settings import overrides_from_env


@dataclass(frozen=True, slots=True)
class GatewaySettings:
    """Per-process limits of one gateway (each gateway process counts on its own)."""

    #: Requests per second each API key may make, refilled continuously (429 beyond).
    gateway_rate_rps: float = 100.0
    #: Requests an API key may make at once before the rate applies (a backend's burst).
    gateway_rate_burst: int = 500
    #: Concurrent long-polls (``?wait=``) this process holds; more are answered 429.
    gateway_max_waiters: int = 1000
    #: Most Redis connections this process opens (one of them is the wake-up subscription);
    #: a request finding all busy waits for one up to the connect timeout, then gets 503.
    gateway_redis_max_connections: int = 50

    def __post_init__(self) -> None:
        if self.gateway_rate_rps <= 0:
            raise ValueError("gateway_rate_rps must be positive")
        for name in ("gateway_rate_burst", "gateway_max_waiters"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        if self.gateway_redis_max_connections < 2:
            raise ValueError("gateway_redis_max_connections must be at least 2")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> GatewaySettings:
        """Limits from ``GENQUEUE_GATEWAY_*`` (e.g. ``GENQUEUE_GATEWAY_RATE_RPS``)."""
        base = cls()
        return replace(base, **overrides_from_env(base, os.environ if env is None else env))
