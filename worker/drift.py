"""How far a model's recent durations have moved from its long sample: the schedule follows a
change (a slower model, a longer upstream queue) within minutes instead of after the ~10,000
completions its reservoir spans, and leaves a steady model's quantiles exactly as they were.

The long sample (a reservoir over ~10,000 completions) gives precise quantiles, but of the
past. The last few hundred completions say where durations are *now*, too few to place a 4 %
quantile well. So the schedule keeps the long sample's shape and moves it by a shift estimated
from the recent completions, and only when the recent completions disagree with the long
sample by more than ``z`` standard errors: a steady model is not moved at all.

Recent completions are not a sample of durations: the last 200 of a batch submitted at once are
its 200 slowest videos. Each one is judged *given that it ended when the recent ones did*: a
job created at ``c`` that ended inside the window ``[t0, t1]`` of recent completions has, under
the long sample's distribution F, the duration F truncated to ``[t0 - c, t1 - c]``, so its
conditional rank ``(F(d) - F(t0 - c)) / (F(t1 - c) - F(t0 - c))`` is uniform on [0, 1]
whatever the arrival pattern (a steady stream, a batch). The mean of n such ranks is 1/2 with
standard error ``sqrt(1 / 12n)``; the shift is the one that brings it back to 1/2 (bisection).

What is given up for speed: a shift smaller than about ``z`` standard errors is not followed
(with 100 recent completions of a sigma 0.2, 125 s model, z = 3: about 6 s), the estimate
rests on 200 completions rather than 10,000 while a shift is followed, and a change of
*spread* is followed only in location (the window keeps the long sample's width).
"""

from __future__ import annotations

import bisect
import math

#: Recent completions needed before a shift is looked for.
MIN_RECENT = 20


def cdf(sorted_values: list[float], x: float) -> float:
    """The long sample's distribution function at ``x`` (linear between order statistics)."""
    n = len(sorted_values)
    if x <= sorted_values[0]:
        return 0.0
    if x >= sorted_values[-1]:
        return 1.0
    i = bisect.bisect_right(sorted_values, x)
    lo, hi = sorted_values[i - 1], sorted_values[i]
    frac = (x - lo) / (hi - lo) if hi > lo else 0.0
    return (i - 1 + frac) / (n - 1)


def mean_rank(
    sorted_values: list[float], recent: list[tuple[float, float]], shift_s: float
) -> tuple[float, int]:
    """The mean conditional rank of the recent ``(start, done)`` pairs under the long sample
    moved by ``shift_s``, and how many pairs had one (a pair whose window holds none of the
    distribution says nothing)."""
    t0 = min(done for _, done in recent)
    t1 = max(done for _, done in recent)
    total, n = 0.0, 0
    for start, done in recent:
        a = cdf(sorted_values, t0 - start - shift_s)
        b = cdf(sorted_values, t1 - start - shift_s)
        if b - a <= 1e-9:
            continue
        total += (cdf(sorted_values, done - start - shift_s) - a) / (b - a)
        n += 1
    return (total / n if n else 0.5), n


def location_shift_s(
    long_sorted: list[float], recent: list[tuple[float, float]], z: float
) -> float:
    """How far (seconds) the recent ``(start, done)`` completions sit from the long sample
    (ascending durations): 0 while their mean conditional rank is within ``z`` standard errors
    of 1/2 (or with too little data), else the shift of the long sample that centres it."""
    if len(recent) < MIN_RECENT or len(long_sorted) < MIN_RECENT or z <= 0:
        return 0.0
    rank, n = mean_rank(long_sorted, recent, 0.0)
    if n < MIN_RECENT or abs(rank - 0.5) <= z * math.sqrt(1 / (12 * n)):
        return 0.0
    # The mean rank falls as the shift grows; bisect within the sample's own range.
    reach = long_sorted[-1] - long_sorted[0] + max(d - s for s, d in recent)
    lo, hi = (0.0, reach) if rank > 0.5 else (-reach, 0.0)
    for _ in range(40):
        mid = (lo + hi) / 2
        if mean_rank(long_sorted, recent, mid)[0] > 0.5:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2
