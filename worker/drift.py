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

Which completions are "recent" matters as much. genqueue learns of a completion when a check
sees it, up to a check interval later, so the last completions *seen* are not the last
completions *made*: at 80 completions a second the last 100 seen span a second of checks but
five of completion times, and inside that window the latest-done are over-represented (the
earliest-done were mostly seen before it). Their ranks pile towards 1 and read as "slower than
the long sample" though nothing changed; the window then opens later, the checks come later
still, and the lag runs away (the 10k run: p95 63 s at minute 6). So the recent completions are
chosen by completion time, not by when they were seen (:func:`settled`): kept in Redis by
completion time, and only those done at least ``settle_s`` (a check interval at the cap, more
than any check's lag) before the newest one seen are used, where every completion of the
window has been seen.

What is given up for speed: a shift smaller than about ``z`` standard errors is not followed
(with 100 recent completions of a sigma 0.2, 125 s model, z = 3: about 6 s), the estimate
rests on 200 completions rather than 10,000 while a shift is followed, and a change of
*spread* is followed only in location (the window keeps the long sample's width).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable
from dataclasses import dataclass

#: Recent completions needed before a shift is looked for.
MIN_RECENT = 20


def settled(
    by_done: list[tuple[float, float]], *, full: bool, settle_s: float, used: int
) -> list[tuple[float, float]]:
    """The newest ``used`` of the recent ``(start, done)`` completions (ascending ``done``)
    whose window is complete: done at least ``settle_s`` before the newest (every completion
    that early has been seen) and, when the kept set is ``full`` (its oldest were dropped),
    after its oldest (a set that drops its lowest ``done`` holds every completion after it)."""
    if not by_done or used <= 0:
        return []
    floor = by_done[0][1] if full else -math.inf
    cutoff = by_done[-1][1] - settle_s
    complete = [e for e in by_done if floor < e[1] <= cutoff]
    return complete[-used:]


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


@dataclass(frozen=True, slots=True)
class Shift:
    """A linear map of the long sample's quantiles: ``q -> median + shift_s + (1 + stretch) *
    (q - median)`` (a longer queue wait moves the median more than the low quantiles)."""

    shift_s: float = 0.0
    stretch: float = 0.0
    median_s: float = 0.0

    def apply(self, q_s: float) -> float:
        """Where the long sample's quantile ``q_s`` sits now."""
        return self.median_s + self.shift_s + (1.0 + self.stretch) * (q_s - self.median_s)


NONE = Shift()


def _ranks(sorted_values: list[float], recent: list[tuple[float, float]], m: Shift) -> list[float]:
    """The conditional ranks of the recent ``(start, done)`` pairs under the long sample
    mapped by ``m`` (a pair whose window holds none of the distribution says nothing)."""
    t0 = min(done for _, done in recent)
    t1 = max(done for _, done in recent)
    scale = 1.0 + m.stretch

    def f(x: float) -> float:
        return cdf(sorted_values, m.median_s + (x - m.median_s - m.shift_s) / scale)

    out = []
    for start, done in recent:
        a, b = f(t0 - start), f(t1 - start)
        if b - a > 1e-9:
            out.append((f(done - start) - a) / (b - a))
    return out


def _mean(xs: list[float]) -> float:
    return sum(xs) / len(xs) if xs else 0.5


def _spread(xs: list[float]) -> float:
    return sum(abs(x - 0.5) for x in xs) / len(xs) if xs else 0.25


def _solve(fn: Callable[[float], float], lo: float, hi: float, target: float) -> float:
    """Bisect a decreasing ``fn`` for ``target`` within [lo, hi]."""
    for _ in range(30):
        mid = (lo + hi) / 2
        if fn(mid) > target:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def location_shift(long_sorted: list[float], recent: list[tuple[float, float]], z: float) -> Shift:
    """How the recent ``(start, done)`` completions sit against the long sample (ascending
    durations): no change while their conditional ranks' mean and spread are both within
    ``z`` standard errors of a uniform's (1/2 and 1/4), or with too little data; else the
    shift of the median and the stretch around it that bring both back."""
    if len(recent) < MIN_RECENT or len(long_sorted) < MIN_RECENT or z <= 0:
        return NONE
    n_long = len(long_sorted)
    median = (long_sorted[(n_long - 1) // 2] + long_sorted[n_long // 2]) / 2
    ranks = _ranks(long_sorted, recent, Shift(median_s=median))
    n = len(ranks)
    if n < MIN_RECENT:
        return NONE
    mean_off = abs(_mean(ranks) - 0.5) > z * math.sqrt(1 / (12 * n))
    spread_off = abs(_spread(ranks) - 0.25) > z * math.sqrt(1 / (48 * n))
    if not (mean_off or spread_off):
        return NONE
    reach = long_sorted[-1] - long_sorted[0] + max(d - s for s, d in recent)

    def shift_for(stretch: float) -> float:
        return _solve(
            lambda x: _mean(_ranks(long_sorted, recent, Shift(x, stretch, median))),
            -reach,
            reach,
            0.5,
        )

    shift, stretch = shift_for(0.0), 0.0
    for _ in range(2):  # alternate: the stretch given the shift, then the shift again

        def spread_at(k: float, s0: float = shift) -> float:
            return _spread(_ranks(long_sorted, recent, Shift(s0, k, median)))

        # Ranks spread wider than a uniform's mean durations narrower than the long sample's:
        # the spread falls as the stretch grows.
        stretch = _solve(spread_at, -0.5, 1.5, 0.25)
        shift = shift_for(stretch)
    return Shift(shift, stretch, median)


def location_shift_s(
    long_sorted: list[float], recent: list[tuple[float, float]], z: float
) -> float:
    """The median's shift alone (seconds) of :func:`location_shift`."""
    return location_shift(long_sorted, recent, z).shift_s
