"""What each model's videos usually take, learned from recent completions and shared by all
workers through Redis (bounded lists), so the first check lands near the expected finish.

The lists are a *uniform sample* of about the last ``horizon`` completions (reservoir
sampling), not the last ``samples`` ones: videos submitted together end together, and the
completions of one short stretch of time all have about the same duration (at minute 3 of a
batch, only the 3-minute ones are ending). The last 1,000 of a 10,000-video batch taught the
schedule that every video takes as long as the slowest, and the next batch was checked
late (seen in the 10k bench run). A reservoir over 10,000 keeps the whole batch's
spread, and still forgets: once full, each completion enters with probability
samples/horizon, so any one entry is replaced by each later completion with probability
1/horizon (the sample's age profile depends on the horizon only, not on its size).

The sample is large (``WorkerConfig.schedule.adaptive_samples``, 10,000 by default) because the
first check is placed at a low quantile, which a sample of 1,000 still misplaces often enough to
cost the p95 seconds in one history in ten (``bench/frontier.py: genqueue_schedule``); the
first check uses ``lower_quantile``, a lower confidence bound that is safe for a few
completions and converges on the quantile for many.
"""

from __future__ import annotations

import bisect
import math
import random
import time
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Any

import redis
import redis.asyncio
import structlog

from genqueue.producer.evalsha import script_caller
from genqueue.producer.keys import Keys
from genqueue.producer.scripts import source
from genqueue.worker.drift import NONE, Shift, location_shift

log = structlog.get_logger(__name__)


def quantile(sorted_values: list[float], q: float) -> float:
    """Linear-interpolated quantile of an ascending list (q in [0, 1])."""
    if not sorted_values:
        raise ValueError("no values")
    return _at(sorted_values, q * (len(sorted_values) - 1))


def _at(sorted_values: list[float], pos: float) -> float:
    """The ascending list's value at fractional index ``pos`` (linear interpolation)."""
    lo = int(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def lower_quantile(sorted_values: list[float], q: float, confidence: float) -> float:
    """A lower confidence bound of the ``q`` quantile from a sample (ascending): the order
    statistic that lies at or below the true quantile with probability ``confidence``
    (binomial, normal approximation; ``confidence`` 0.5 is the plain estimate). A small
    sample gets a lower, safer value; a large one converges on the quantile itself."""
    n = len(sorted_values)
    if n == 0:
        raise ValueError("no values")
    z = NormalDist().inv_cdf(confidence) if confidence > 0.5 else 0.0
    return _at(sorted_values, max(0.0, q * (n - 1) - z * math.sqrt(n * q * (1.0 - q))))


def _pair(entry: str | bytes) -> tuple[float, float]:
    """A recent entry ``start:done`` as two floats."""
    text = entry.decode() if isinstance(entry, bytes) else entry
    start, _, done = text.partition(":")
    return float(start), float(done)


@dataclass(frozen=True, slots=True)
class ModelDurations:
    """One model's learned durations (seconds, upstream clock): ``total`` (created to
    completed) and ``generation`` (the observed start of generation to completed), each a
    sorted reservoir of about the last ``horizon`` completions, plus the latest-done few
    whose every neighbour has been seen, as ``(start, done)`` pairs (``recent_*``, by
    completion time: ``worker/drift.py``) that let the schedule follow a change;
    ``offset_bounds``: recent upper bounds of Redis' clock minus the upstream's (seconds)."""

    total: list[float]
    generation: list[float]
    recent_total: list[tuple[float, float]] = field(default_factory=list)
    recent_generation: list[tuple[float, float]] = field(default_factory=list)
    offset_bounds: list[float] = field(default_factory=list)
    #: How far the recent completions sit from the long samples (``worker/drift.py``),
    #: computed once per refresh, not per check.
    total_shift: Shift = NONE
    generation_shift: Shift = NONE
    #: The long samples' means, once per refresh: the mean queue wait is their difference.
    total_mean_s: float = 0.0
    generation_mean_s: float = 0.0
    #: What the schedule derives from the samples alone (``worker/tasks.py: _span``), kept
    #: until the next refresh replaces this object: every check used to recompute it.
    derived: dict[tuple[Any, ...], Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def offset_s(self) -> float | None:
        """Redis' clock minus the upstream's, estimated: the tightest recent upper bound (each
        bound is the offset plus a latency, never less), or None before any was seen."""
        return min(self.offset_bounds) if self.offset_bounds else None


#: Clock offset bounds kept per model: the estimate follows a clock step within this many
#: completions.
OFFSET_BOUNDS_KEPT = 64
#: The previous version's last-seen lists (``recent_total`` / ``recent_generation``, no longer
#: read): one untouched this long has no worker of that version using it (each read its
#: model's lists at every refresh, every ``cache_s``), so a refresh deletes it. Younger, it
#: is left to a worker still running that version (a rolling deploy).
LEFTOVER_IDLE_S = 3600
LEFTOVER_KINDS = ("recent_total", "recent_generation")


class DurationModel:
    """Records completions and answers "when is a video of this model likely done?"."""

    def __init__(
        self,
        client: redis.asyncio.Redis,
        keys: Keys,
        *,
        samples: int = 10_000,
        horizon: int = 10_000,
        min_samples: int = 10,
        recent: int = 100,
        recent_kept: int = 4_000,
        settle_s: float = 35.0,
        shift_z: float = 3.0,
        cache_s: float = 30.0,
        rng: random.Random | None = None,
    ) -> None:
        self._redis = client
        self._keys = keys
        self._samples = samples
        self._horizon = max(horizon, samples)
        self._recent = recent
        self._recent_kept = max(recent_kept, recent)
        self._settle_s = settle_s
        self._shift_z = shift_z
        self._record = client.register_script(source("record_duration"))
        self._call = script_caller(client)
        self._rng = rng or random.Random()
        self._min = min_samples
        self._cache_s = cache_s
        self._cache: dict[str, tuple[float, ModelDurations | None]] = {}
        #: Per (model, sample): the last refresh's raw list and its parsed, sorted values.
        self._parsed: dict[tuple[str, str], tuple[list[str], list[float]]] = {}
        #: Per model: when this process last looked for the previous version's lists.
        self._leftovers_seen: dict[str, float] = {}

    def _keys_of(self, model: str) -> list[str]:
        k = self._keys
        kinds = (
            *("total", "generation", "count"),
            *("recent_total_by_done", "recent_generation_by_done", "offset"),
        )
        return [k.durations(model, kind) for kind in kinds]

    async def record(
        self,
        model: str,
        created_at: float | None,
        done_at: float,
        *,
        generation_s: float | None = None,
        offset_bound_s: float | None = None,
    ) -> None:
        """Offer one completed job's durations to the model's sample (one script call):
        ``done_at - created_at`` (both the upstream's), the generation time genqueue observed
        (``generation_s``, None when the start was not bracketed closely) and an upper bound
        of Redis' clock minus the upstream's."""
        total = (
            f"{done_at - created_at:.3f}"
            if created_at is not None and done_at >= created_at
            else ""
        )
        gen = f"{generation_s:.3f}" if generation_s is not None and generation_s >= 0 else ""
        offset = "" if offset_bound_s is None else f"{offset_bound_s:.3f}"
        recent_total = f"{created_at:.3f}:{done_at:.3f}" if total else ""
        recent_gen = f"{done_at - float(gen):.3f}:{done_at:.3f}" if gen else ""
        if not total and not gen and not offset:
            return
        await self._call(
            self._record,
            self._keys_of(model),
            [
                *(total, gen, self._samples, self._horizon, repr(self._rng.random())),
                *(self._recent_kept, offset, OFFSET_BOUNDS_KEPT, recent_total, recent_gen),
                f"{done_at:.3f}",
            ],
        )

    def _settled(self, by_done: list[str]) -> list[tuple[float, float]]:
        """The recent completions (ascending completion time) the shift is measured on:
        ``worker/drift.py: settled`` of the whole set (ascending by completion time, its
        score), but parsing only the entries it keeps, from the newest back (a refresh used
        to parse all ~8,000 of both sets: a tenth of a worker's CPU at the comparison's
        scale)."""
        if not by_done or self._recent <= 0:
            return []
        floor = _pair(by_done[0])[1] if len(by_done) >= self._recent_kept else -math.inf
        cutoff = _pair(by_done[-1])[1] - self._settle_s
        kept: list[tuple[float, float]] = []
        for entry in reversed(by_done):
            pair = _pair(entry)
            if floor < pair[1] <= cutoff:
                kept.append(pair)
                if len(kept) == self._recent:
                    break
        kept.reverse()
        return kept

    def _sorted(self, key: tuple[str, str], raw: list[str]) -> list[float]:
        """``sorted(map(float, raw))``, from the previous refresh's when only a few slots of
        the sample changed since (a full sort of ~10,000 parsed floats per list was half a
        refresh's CPU; between refreshes a few dozen completions replace a slot each)."""
        prev = self._parsed.get(key)
        values: list[float] | None = None
        if prev is not None and len(prev[0]) == len(raw):
            old_raw, old_sorted = prev
            changed = [i for i, (a, b) in enumerate(zip(old_raw, raw, strict=True)) if a != b]
            if len(changed) <= len(raw) // 16:
                values = old_sorted.copy()  # the previous ModelDurations may still be in use
                for i in changed:
                    del values[bisect.bisect_left(values, float(old_raw[i]))]
                    bisect.insort(values, float(raw[i]))
        if values is None:
            values = sorted(map(float, raw))  # map, not a generator: ~10,000 floats
        self._parsed[key] = (raw, values)
        return values

    async def _drop_leftovers(self, model: str) -> None:
        """Delete the previous version's lists of ``model`` that no worker has touched for
        ``LEFTOVER_IDLE_S`` (one round trip, a second only to delete)."""
        keys = [self._keys.durations(model, kind) for kind in LEFTOVER_KINDS]
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for key in keys:
                    pipe.object("IDLETIME", key)  # leaves the key's idle time as it is
                idle = await pipe.execute()
        except redis.ResponseError:
            return  # an LFU eviction policy tracks no idle time: leave them
        stale = [
            k for k, t in zip(keys, idle, strict=True) if t is not None and t >= LEFTOVER_IDLE_S
        ]
        if stale:
            await self._redis.unlink(*stale)
            log.info("duration_leftovers_deleted", keys=len(stale))

    async def get(self, model: str) -> ModelDurations | None:
        """The model's recent durations, or None until enough completions were seen."""
        now = time.monotonic()
        cached = self._cache.get(model)
        if cached is not None and now - cached[0] < self._cache_s:
            return cached[1]
        total_k, gen_k, _, recent_total_k, recent_gen_k, offset_k = self._keys_of(model)
        last = self._leftovers_seen.get(model)
        if last is None or now - last >= LEFTOVER_IDLE_S:  # once an idle period per model
            self._leftovers_seen[model] = now
            await self._drop_leftovers(model)
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.lrange(total_k, 0, -1)
            pipe.lrange(gen_k, 0, -1)
            pipe.zrange(recent_total_k, 0, -1)
            pipe.zrange(recent_gen_k, 0, -1)
            pipe.lrange(offset_k, 0, -1)
            total_raw, gen_raw, rt_raw, rg_raw, off_raw = await pipe.execute()
        total = self._sorted((model, "total"), total_raw)
        value = None
        if len(total) >= self._min:
            gen = self._sorted((model, "generation"), gen_raw)
            recent_total, recent_gen = self._settled(rt_raw), self._settled(rg_raw)
            value = ModelDurations(
                total,
                gen,
                recent_total,
                recent_gen,
                list(map(float, off_raw)),
                location_shift(total, recent_total, self._shift_z),
                location_shift(gen, recent_gen, self._shift_z),
                sum(total) / len(total),
                sum(gen) / len(gen) if gen else 0.0,
            )
        self._cache[model] = (now, value)
        return value
