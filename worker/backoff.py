"""Delays between checks: pure functions, so tests can assert every delay."""

from __future__ import annotations

import random


def jittered(delay_s: float, jitter: float, rng: random.Random | None) -> float:
    """``delay_s`` spread uniformly by ±``jitter`` (a fraction); unchanged without an rng."""
    if rng is None or jitter <= 0:
        return delay_s
    return delay_s * rng.uniform(1.0 - jitter, 1.0 + jitter)


def poll_delay_s(
    polls_done: int,
    *,
    first_s: float,
    floor_s: float,
    cap_s: float,
    factor: float,
    jitter: float = 0.0,
    rng: random.Random | None = None,
    retry_after_s: float | None = None,
) -> float:
    """Delay before the next status check.

    ``polls_done`` counts checks already made: 0 means "just created", which waits ``first_s``
    (near the model's typical duration); after that ``floor_s * factor**(n-1)``, at most
    ``cap_s``. Jitter spreads a herd; an upstream ``Retry-After`` is never undercut.
    """
    base = first_s if polls_done <= 0 else min(cap_s, floor_s * factor ** min(polls_done - 1, 64))
    delay = jittered(base, jitter, rng)
    if polls_done > 0:
        delay = min(delay, cap_s)
    if retry_after_s is not None:
        delay = max(delay, retry_after_s)
    return max(0.0, delay)


def retry_delay_s(
    attempt: int,
    *,
    base_s: float,
    cap_s: float,
    jitter: float = 0.0,
    rng: random.Random | None = None,
    retry_after_s: float | None = None,
) -> float:
    """Delay before retrying a create after its ``attempt``-th failure (1-based): exponential."""
    delay = min(cap_s, base_s * 2 ** max(0, min(attempt - 1, 32)))
    delay = min(cap_s, jittered(delay, jitter, rng))
    if retry_after_s is not None:
        delay = max(delay, retry_after_s)
    return max(0.0, delay)


def learned_delay_s(
    elapsed_s: float,
    *,
    checked: bool,
    late_s: float,
    first_s: float,
    dense_until_s: float,
    dense_every_s: float,
    cap_s: float,
    factor: float,
) -> float:
    """Delay before the next check of a job ``elapsed_s`` after its anchor (created or started),
    when its model's durations are known: ``first_s`` and ``dense_until_s`` are a low and a
    high quantile of them. ``checked``: the job was checked before (this is not the first);
    ``late_s``: how long after its due time this check ran (negative: before it, as a check
    claimed within the timer slack is).

    Before ``first_s``: wait for it. Up to ``dense_until_s``: one
    ``dense_every_s`` after this check's *due* time, which bounds the detection lag of the
    videos that end where most of them do (a late check does not push the later ones back,
    one more than half an interval late starts afresh; an early one does not pull them
    forward, or every check run early would add to the checks of the window). After: back
    off geometrically in time (``(factor - 1)`` times the time since the window closed) from
    ``dense_every_s`` up to ``cap_s``. A window with ``dense_until_s <= first_s`` is none.
    """
    # A check within one interval before the low quantile (a first check jittered early) is
    # already in the window; one well before it (a long upstream queue) waits for it.
    if elapsed_s < first_s - (dense_every_s if checked else 0.0):
        return first_s - elapsed_s
    if elapsed_s < dense_until_s:
        anchored = -dense_every_s / 2 < late_s < dense_every_s / 2
        return dense_every_s - late_s if anchored else dense_every_s
    late = (elapsed_s - max(first_s, dense_until_s)) * (factor - 1)
    return min(cap_s, max(dense_every_s, late))
