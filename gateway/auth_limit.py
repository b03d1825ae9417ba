"""A limit on failed authentications per client address, shared by every gateway process.

A request with no, a malformed or a wrong key spends one of its address's failures
(``GENQUEUE_GATEWAY_AUTH_FAIL_BURST`` at once, refilled at ``_AUTH_FAIL_PER_MIN``). An address
out of failures gets 429 with ``Retry-After`` for *every* request, a right key's too: if a
right key still went through, a guesser would keep guessing at full speed and read the one
200 among the 429s (OWASP's credential-stuffing guidance: throttle by source, and give no
signal a guess was right). The cost is that callers sharing an address with a guesser (a NAT)
wait with it; behind a proxy, configure it as trusted so addresses are the clients'.

Each process also remembers, for as long as the answer said, the addresses it has seen
refused, and answers them 429 without looking their key up (the lookup is what a guess
costs us); the memory is bounded (``MAX_REMEMBERED``). Addresses not remembered here are
still refused exactly: the per-request script checks their failures (``gateway/limits.py``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from genqueue.gateway.gcra import Gcra, LimitScript
from genqueue.producer.keys import Keys

#: Most refused addresses one process remembers; beyond, the oldest are forgotten (they are
#: still refused, at the cost of a key lookup and a script call each).
MAX_REMEMBERED = 10_000


@dataclass(slots=True)
class AuthFailures:
    """Counts failed authentications per address (in Redis) and remembers refused ones."""

    script: LimitScript
    keys: Keys
    per_min: float
    burst: int
    clock: Callable[[], float] = time.monotonic
    _refused_until: dict[str, float] = field(default_factory=dict)

    @property
    def limit(self) -> Gcra:
        return Gcra.of(per_s=self.per_min / 60, burst=self.burst)

    def key(self, address: str) -> str:
        return self.keys.gateway_auth_failures(address)

    def refused_for(self, address: str) -> float:
        """Seconds this process still refuses ``address`` without asking Redis (0: ask)."""
        until = self._refused_until.get(address)
        if until is None:
            return 0.0
        left = until - self.clock()
        if left <= 0:
            del self._refused_until[address]
            return 0.0
        return left

    def remember(self, address: str, wait_s: float) -> None:
        """Refuse ``address`` here for ``wait_s`` (what Redis answered)."""
        self._refused_until.pop(address, None)
        if len(self._refused_until) >= MAX_REMEMBERED:
            now = self.clock()
            for stale in [a for a, u in self._refused_until.items() if u <= now]:
                del self._refused_until[stale]
            while len(self._refused_until) >= MAX_REMEMBERED:
                del self._refused_until[next(iter(self._refused_until))]
        self._refused_until[address] = self.clock() + wait_s

    async def failed(self, address: str) -> float:
        """Count one failed authentication of ``address``: 0.0 if it had one left (answer
        401/403), else seconds until it has (answer 429; remembered here)."""
        verdict = await self.script.run(self.key(address), self.limit)
        if verdict.outcome == "OK":
            return 0.0
        self.remember(address, verdict.wait_s)
        return verdict.wait_s
