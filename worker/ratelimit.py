"""The shared rate limit on upstream calls, across every worker process on every host.

A GCRA kept in Redis per upstream and API key, checked inside the script that starts a step
(``begin_poll``, ``begin_submit``; ``take_call_slot`` in ``lua/_rate_limit.lua``): at most
``rps + burst`` calls in any second and ``rps`` sustained. A refused step is not retried by
sleeping: the same script re-arms it for its turn (refused steps are spaced at the sustained
rate, in the order they were refused).

Why not the ``limits`` library (the first choice, used until the benchmark said otherwise):
its check is its own round trip per window (two here) before the step's own script, about a
tenth of a worker's CPU per call in the 10k run, and it answers when its window frees up but
not whose turn it is, so a backlog came back all at once every second, each step refused
again at full cost. Figures: ``bench/RESULTS.md`` (limiter cost) and ``bench/limiter.py``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from genqueue.producer.keys import Keys


def limiter_identity(upstream_url: str, api_key: str) -> str:
    """Who shares one budget: the same upstream and key (the key itself is never stored)."""
    return hashlib.sha256(f"{upstream_url}|{api_key}".encode()).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class RateLimit:
    """What the scripts need to apply the limit: its two keys and ARGV (interval, tolerance)."""

    keys: tuple[str, str]
    interval_us: int
    tolerance_us: int

    @classmethod
    def of(cls, keys: Keys, *, rps: float, burst: int, identity: str) -> RateLimit:
        """``rps`` calls per second sustained, ``burst`` more in any one second."""
        if rps <= 0:
            raise ValueError("rps must be positive")
        if burst < 0:
            raise ValueError("burst must be >= 0")
        interval_us = max(1, round(1_000_000 / rps))
        # GCRA lets tolerance/interval + 1 calls through at once: burst calls, then one per
        # interval, so any 1-second window holds at most rps + burst.
        return cls(
            (keys.rate_limit(identity), keys.rate_turns(identity)),
            interval_us,
            max(0, burst - 1) * interval_us,
        )

    @property
    def args(self) -> tuple[int, int]:
        return self.interval_us, self.tolerance_us


#: Script arguments for "no limit".
NO_LIMIT_ARGS = (0, 0)
