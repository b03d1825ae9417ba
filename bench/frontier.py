"""The best any check schedule can do on the benchmark's workload, without upstream progress
information: how few checks per video a p95 detection lag of L seconds needs.

The ideal scheduler here knows the generation-time distribution exactly, knows when each
video's generation started, has no overhead, and checks every video on a grid — a first
check at some time ``a`` after the start, then every ``h`` (``h <= L``: a video that ends
inside the grid is seen within ``h``) until ``b``; a video still running at ``b`` costs it
just one more check (optimistic: its lag is given up, counted above L). It bounds genqueue's
learned schedule from below (genqueue learns the distribution from completions, anchors its
first check at creation, and keeps checking after ``b``).
Computed, not measured: Monte Carlo over the workload's lognormal, fixed seed.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from bench.workload import QUEUE_MEDIAN_S, QUEUE_SIGMA
from genqueue.worker.config import WorkerConfig


@dataclass(frozen=True, slots=True)
class FrontierPoint:
    """The cheapest grid found for a lag target (seconds after the start of generation)."""

    lag_target_s: float
    polls_per_video: float
    lag_p95_s: float
    first_check_s: float
    interval_s: float
    last_check_s: float


def _grid_cost(
    durations: list[float], first_s: float, interval_s: float, last_s: float
) -> tuple[float, float]:
    """(mean checks per video, p95 lag) for checks at first_s + k * interval_s up to last_s."""
    polls, lags = 0, []
    k_last = math.floor((last_s - first_s) / interval_s)
    for t in durations:
        if t <= first_s:
            polls += 1
            lags.append(first_s - t)
        elif (k := math.ceil((t - first_s) / interval_s)) <= k_last:
            polls += k + 1
            lags.append(first_s + k * interval_s - t)
        else:
            polls += k_last + 2
            lags.append(math.inf)
    lags.sort()
    return polls / len(durations), lags[math.ceil(0.95 * len(lags)) - 1]


def ideal_schedule(
    lag_target_s: float,
    *,
    median_s: float = 120.0,
    sigma: float = 0.2,
    samples: int = 20_000,
    seed: int = 7,
) -> FrontierPoint:
    """The grid with the fewest checks per video whose p95 lag is at most ``lag_target_s``."""
    rng = random.Random(seed)
    durations = sorted(median_s * math.exp(sigma * rng.gauss(0, 1)) for _ in range(samples))
    best: FrontierPoint | None = None
    # A grid coarser than the target can't keep its lag; a finer one only costs checks.
    interval = lag_target_s
    for q_first in range(0, 61):  # first check at the 0th..15th percentile, in 0.25 steps
        first = durations[q_first * samples // 400]
        for q_last in (97, 99, 100):
            last = durations[min(samples - 1, q_last * samples // 100)]
            polls, p95 = _grid_cost(durations, first, interval, last)
            if p95 <= lag_target_s and (best is None or polls < best.polls_per_video):
                best = FrontierPoint(lag_target_s, polls, p95, first, interval, last)
    assert best is not None  # the full grid from the minimum always qualifies
    return best


@dataclass(frozen=True, slots=True)
class ScheduleCost:
    """genqueue's learned schedule on the workload, computed over several duration histories."""

    history: int
    polls_per_video: float
    lag_p95_s: list[float]  # one per history, sorted
    #: The p95 over every video of every history: what a deployment sees over time, as its
    #: sample of completions is renewed.
    pooled_lag_p95_s: float


def genqueue_schedule(
    *,
    history: int,
    histories: int = 6,
    videos: int = 4000,
    median_s: float = 120.0,
    sigma: float = 0.2,
    config: WorkerConfig | None = None,
    dequeue_delay_s: float = 0.1,
) -> ScheduleCost:
    """Checks per video and p95 lag of genqueue's schedule as the worker computes it
    (``genqueue.worker.backoff.learned_delay_s`` with ``config``'s settings, default the worker's
    defaults, on quantiles of a learned history, anchored at creation until the upstream
    reports the start, first checks spread over one floor), each check run up to
    ``dequeue_delay_s`` late, for ``histories`` different histories of ``history``
    completions each. Computed, not measured: it shows how much the p95 depends on which
    history the quantiles were estimated from."""
    from genqueue.worker.backoff import jittered, learned_delay_s
    from genqueue.worker.durations import lower_quantile, quantile

    cfg = config or WorkerConfig()
    floor_s, cap_s = cfg.schedule.poll_floor_s, cfg.schedule.poll_cap_s

    def draw(rng: random.Random) -> tuple[float, float]:
        """(upstream queue wait, generation time) of one video of the workload."""
        queued = rng.lognormvariate(math.log(QUEUE_MEDIAN_S), QUEUE_SIGMA)
        return queued, rng.lognormvariate(math.log(median_s), sigma)

    polls, p95s, pooled = 0, [], []
    for h in range(histories):
        past = random.Random(1000 + h)
        tot, gen = [], []
        for _ in range(history):
            q, g = draw(past)
            tot.append(q + g)
            gen.append(g)
        tot.sort()
        gen.sort()
        rng = random.Random(h)
        lags = []
        for _ in range(videos):
            queued, generation = draw(rng)
            done = queued + generation
            due, checked = 0.0, False
            while True:
                if checked:
                    t = due + rng.uniform(0, dequeue_delay_s)
                    polls += 1
                    if t >= done:
                        lags.append(t - done)
                        break
                else:
                    t = 0.0
                anchor, ds = (queued, gen) if checked and t >= queued else (0.0, tot)
                elapsed = t - anchor
                last = quantile(ds, cfg.schedule.adaptive_dense_until_quantile)
                delay = learned_delay_s(
                    elapsed,
                    checked=checked,
                    late_s=t - due if checked else 0.0,
                    first_s=lower_quantile(
                        ds, cfg.schedule.adaptive_quantile, cfg.schedule.adaptive_confidence
                    )
                    + floor_s,
                    dense_until_s=last,
                    dense_every_s=floor_s,
                    cap_s=cap_s,
                    factor=cfg.schedule.poll_factor,
                )
                if not checked:
                    delay += rng.uniform(-floor_s / 2, floor_s / 2)
                elif elapsed >= last:
                    delay = min(cap_s, jittered(delay, cfg.schedule.poll_jitter, rng))
                due, checked = t + max(0.0, delay), True
        lags.sort()
        p95s.append(_p95_sorted(lags))
        pooled += lags
    pooled.sort()
    return ScheduleCost(history, polls / (histories * videos), sorted(p95s), _p95_sorted(pooled))


def _p95_sorted(xs: list[float]) -> float:
    return xs[math.ceil(0.95 * len(xs)) - 1]
