"""The gateway's own limits, read from ``GENQUEUE_GATEWAY_*`` variables."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, replace

from genqueue.producer.addresses import Network, parse_nets
from genqueue.producer.settings import overrides_from_env


@dataclass(frozen=True, slots=True)
class GatewaySettings:
    """The limits of a gateway: the request rate and the failed authentications are counted in
    Redis for every gateway process together; the long-polls and connections per process."""

    #: Requests per second each API key may make, refilled continuously (429 beyond); shared
    #: by every gateway process on the same Redis.
    gateway_rate_rps: float = 100.0
    #: Requests an API key may make at once before the rate applies (a backend's burst).
    gateway_rate_burst: int = 500
    #: Concurrent long-polls (``?wait=``) this process holds; more are answered 429.
    gateway_max_waiters: int = 1000
    #: Most Redis connections this process opens (one of them is the wake-up subscription);
    #: a request finding all busy waits for one up to the connect timeout, then gets 503.
    gateway_redis_max_connections: int = 50
    #: Failed authentications (no, a malformed, a wrong key) per minute a client address may
    #: make, shared by every gateway process; beyond, every request from it gets 429, a right
    #: key's too. IPv6 addresses count per /64.
    gateway_auth_fail_per_min: float = 20.0
    #: Failed authentications a client address may make at once before the rate applies.
    gateway_auth_fail_burst: int = 50
    #: Proxies whose ``X-Forwarded-For`` names the client (comma-separated CIDRs); empty: the
    #: header is ignored and the client is the connection's peer.
    gateway_trusted_proxies: str = ""

    def __post_init__(self) -> None:
        for name in ("gateway_rate_rps", "gateway_auth_fail_per_min"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")
        for name in ("gateway_rate_burst", "gateway_max_waiters", "gateway_auth_fail_burst"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        if self.gateway_redis_max_connections < 2:
            raise ValueError("gateway_redis_max_connections must be at least 2")
        try:
            parse_nets(self.gateway_trusted_proxies)
        except ValueError as exc:
            raise ValueError(f"gateway_trusted_proxies: {exc}") from None

    @property
    def trusted_proxies(self) -> tuple[Network, ...]:
        """``gateway_trusted_proxies`` parsed."""
        return parse_nets(self.gateway_trusted_proxies)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> GatewaySettings:
        """Limits from ``GENQUEUE_GATEWAY_*`` (e.g. ``GENQUEUE_GATEWAY_RATE_RPS``)."""
        base = cls()
        return replace(base, **overrides_from_env(base, os.environ if env is None else env))
