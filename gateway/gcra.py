"""The gateway's shared limits: one GCRA script call per request (``lua/gateway_limit.lua``).

Every gateway process on the same Redis counts against the same limit keys, so N processes
allow the configured rate, not N times it. Limit keys are named by a hash (of an API key's
digest) or a client address, never by a key, and expire once their burst has refilled.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import redis.asyncio
from redis.commands.core import AsyncScript

from genqueue.producer.scripts import decode_reply, source

Outcome = Literal["OK", "RATE", "BLOCKED"]


@dataclass(frozen=True, slots=True)
class Gcra:
    """A limit as the script reads it: ``per_s`` sustained, ``burst`` at once."""

    interval_us: int
    tolerance_us: int

    @classmethod
    def of(cls, *, per_s: float, burst: int) -> Gcra:
        if per_s <= 0 or burst < 1:
            raise ValueError("a limit needs a positive rate and a burst of at least 1")
        interval_us = max(1, round(1_000_000 / per_s))
        # GCRA lets tolerance/interval + 1 requests through at once: exactly ``burst``.
        return cls(interval_us, (burst - 1) * interval_us)


@dataclass(frozen=True, slots=True)
class Verdict:
    """What the script answered: go (``OK``), over the limit spent from (``RATE``), or the
    caller's address is out of failed authentications (``BLOCKED``); ``wait_s`` until not."""

    outcome: Outcome
    wait_s: float = 0.0


def caller_name(caller: bytes) -> str:
    """The limit key's name for a caller (the SHA-256 digest of its key): a hash of the
    digest, so a Redis reader cannot match it against ``{prefix}:apikeys``."""
    return hashlib.sha256(b"genqueue-gateway-rate|" + caller).hexdigest()[:32]


@dataclass(slots=True)
class LimitScript:
    """Runs ``gateway_limit`` on the client ``redis_of()`` returns (it may be replaced when
    the gateway's resources are closed and opened again)."""

    redis_of: Callable[[], redis.asyncio.Redis]
    _script: AsyncScript | None = None
    _bound: Any = field(default=None, repr=False)

    async def run(
        self, limit_key: str, limit: Gcra, block: tuple[str, Gcra] | None = None
    ) -> Verdict:
        """Spend one from ``limit_key`` unless ``block``'s key (checked, not spent) is out."""
        client = self.redis_of()
        if self._script is None or self._bound is not client:
            self._script, self._bound = client.register_script(source("gateway_limit")), client
        keys = [limit_key]
        args: list[int] = [limit.interval_us, limit.tolerance_us]
        if block is not None:
            keys.append(block[0])
            args.append(block[1].tolerance_us)
        reply = decode_reply(await self._script(keys=keys, args=args))
        if reply[0] == "OK":
            return Verdict("OK")
        outcome: Outcome = "BLOCKED" if reply[0] == "BLOCKED" else "RATE"
        return Verdict(outcome, int(reply[1]) / 1000)
