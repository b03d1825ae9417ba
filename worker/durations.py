"""What each model's videos usually take, learned from recent completions and shared by all
workers through Redis (bounded lists), so the first check lands near the expected finish."""

from __future__ import annotations

import time
from dataclasses import dataclass

import redis.asyncio

from producer.keys import Keys


def quantile(sorted_values: list[float], q: float) -> float:
    """Linear-interpolated quantile of an ascending list (q in [0, 1])."""
    if not sorted_values:
        raise ValueError("no values")
    pos = q * (len(sorted_values) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


@dataclass(frozen=True, slots=True)
class ModelDurations:
    """Sorted recent durations of one model (seconds, upstream clock)."""

    total: list[float]
    generation: list[float]


class DurationModel:
    """Records completions and answers "when is a video of this model likely done?"."""

    def __init__(
        self,
        client: redis.asyncio.Redis,
        keys: Keys,
        *,
        samples: int = 1000,
        min_samples: int = 10,
        cache_s: float = 30.0,
    ) -> None:
        self._redis = client
        self._keys = keys
        self._samples = samples
        self._min = min_samples
        self._cache_s = cache_s
        self._cache: dict[str, tuple[float, ModelDurations | None]] = {}

    async def record(
        self, model: str, created_at: float | None, started_at: float | None, done_at: float
    ) -> None:
        """Remember one completed job's durations (bounded per model)."""
        async with self._redis.pipeline(transaction=False) as pipe:
            if created_at is not None and done_at >= created_at:
                key = self._keys.durations(model, "total")
                pipe.lpush(key, f"{done_at - created_at:.3f}")
                pipe.ltrim(key, 0, self._samples - 1)
            if started_at is not None and done_at >= started_at:
                key = self._keys.durations(model, "generation")
                pipe.lpush(key, f"{done_at - started_at:.3f}")
                pipe.ltrim(key, 0, self._samples - 1)
            await pipe.execute()

    async def get(self, model: str) -> ModelDurations | None:
        """The model's recent durations, or None until enough completions were seen."""
        now = time.monotonic()
        cached = self._cache.get(model)
        if cached is not None and now - cached[0] < self._cache_s:
            return cached[1]
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.lrange(self._keys.durations(model, "total"), 0, -1)
            pipe.lrange(self._keys.durations(model, "generation"), 0, -1)
            total_raw, gen_raw = await pipe.execute()
        total = sorted(float(x) for x in total_raw)
        gen = sorted(float(x) for x in gen_raw)
        value = ModelDurations(total, gen) if len(total) >= self._min else None
        self._cache[model] = (now, value)
        return value
