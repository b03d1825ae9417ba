"""Following a change of durations: the recent completions' conditional ranks against the long
sample (``worker/drift.py``) and the window the checks of one job get (``worker/window.py``)."""

from __future__ import annotations

import math
import random

import pytest

from genqueue.worker.drift import location_shift, location_shift_s, settled
from genqueue.worker.durations import quantile
from genqueue.worker.window import Seen, Span, check_window

MEDIAN_S, SIGMA = 125.0, 0.2


def _long(seed: int = 1, n: int = 10_000) -> list[float]:
    rng = random.Random(seed)
    return sorted(rng.lognormvariate(math.log(MEDIAN_S), SIGMA) for _ in range(n))


def _stream(
    shift_s: float, seed: int, *, every_s: float = 1.0, n: int = 2000
) -> list[tuple[float, float]]:
    """The last 200 completions (by completion time) of a steady stream, durations moved by
    ``shift_s``."""
    rng = random.Random(seed)
    jobs = []
    for i in range(n):
        created = i * every_s
        jobs.append((created, created + rng.lognormvariate(math.log(MEDIAN_S), SIGMA) + shift_s))
    last = max(done for _, done in jobs) - 300  # well before the stream's own end
    ended = sorted((j for j in jobs if j[1] <= last), key=lambda j: j[1])
    return ended[-200:]


def test_a_steady_stream_is_not_moved() -> None:
    """Recent completions of an unchanged model leave its quantiles where the long sample
    puts them (no shift at all) in nearly every window."""
    long = _long()
    shifts = [location_shift_s(long, _stream(0.0, seed), 3.0) for seed in range(40)]
    assert sum(s != 0.0 for s in shifts) <= 1, shifts


def test_the_slowest_of_a_batch_are_not_a_shift() -> None:
    """The last 200 completions of a batch submitted at once are its slowest videos; judged
    given when they ended, they are no sign of a change."""
    long = _long()
    rng = random.Random(7)
    batch = sorted((0.0, rng.lognormvariate(math.log(MEDIAN_S), SIGMA)) for _ in range(1000))
    batch.sort(key=lambda j: j[1])
    assert location_shift_s(long, batch[-200:], 3.0) == 0.0
    assert location_shift_s(long, batch[:200], 3.0) == 0.0  # nor its fastest


@pytest.mark.parametrize("shift_s", [20.0, -10.0, 60.0])
def test_a_shift_is_followed(shift_s: float) -> None:
    """A longer (or shorter) queue wait moves every duration: the estimate finds the move
    within a few seconds from 200 completions."""
    long = _long()
    estimates = [location_shift_s(long, _stream(shift_s, seed), 3.0) for seed in range(5)]
    assert all(abs(e - shift_s) < 5.0 for e in estimates), estimates


def test_z_zero_never_follows() -> None:
    """``adaptive_shift_z = 0`` turns following off."""
    assert location_shift_s(_long(), _stream(30.0, 1), 0.0) == 0.0


def test_a_check_that_saw_queued_pushes_the_first_check() -> None:
    """A job still queued at ``t`` is not checked before ``t`` + the low generation quantile
    + one interval; once seen in progress at ``u``, its window closes at ``u`` + the high
    generation quantile; with no generation learned only creation counts."""
    total, gen = Span(100.0, 200.0), Span(80.0, 150.0)
    assert check_window(Seen(0.0), total, gen, 5.0) == (105.0, 200.0)
    assert check_window(Seen(0.0, queued_s=60.0), total, gen, 5.0) == (145.0, 210.0)
    assert check_window(Seen(0.0, 60.0, 65.0), total, gen, 5.0) == (145.0, 215.0)
    assert check_window(Seen(0.0, started_by_s=10.0), total, gen, 5.0) == (105.0, 160.0)
    assert check_window(Seen(0.0, queued_s=60.0), total, None, 5.0) == (105.0, 200.0)


@pytest.mark.parametrize("every_s", [1.0, 2.5])
def test_a_doubled_queue_wait_moves_the_median_more_than_the_low_quantile(
    every_s: float,
) -> None:
    """A longer queue wait (a busy platform) widens the durations as well as moving them: the
    map found from recent completions moves the long sample's 4 % quantile less than its
    median (a plain shift of the median would put the first
    check after the early videos). With the last 100 completions spanning 250 s it lands
    within 8 s; spanning 100 s the stretch is barely identified and the map errs early."""
    rng = random.Random(3)

    def total(queue_median_s: float) -> float:
        return rng.lognormvariate(math.log(queue_median_s), 0.5) + rng.lognormvariate(
            math.log(120.0), 0.2
        )

    long = sorted(total(30.0) for _ in range(10_000))
    jobs = [(i * every_s, i * every_s + total(60.0)) for i in range(1000)]
    jobs.sort(key=lambda j: j[1])
    m = location_shift(long, jobs[-400:-300], 3.0)
    new = sorted(total(60.0) for _ in range(10_000))
    q04, q50 = quantile(long, 0.04), quantile(long, 0.5)
    assert m.stretch > 0.1, m
    assert m.apply(q04) - q04 < m.apply(q50) - q50
    if every_s > 1.0:
        assert abs(m.apply(q04) - quantile(new, 0.04)) < 8.0, m
    else:
        assert m.apply(q04) <= quantile(new, 0.04), m  # errs early, not late


def test_recent_completions_are_those_whose_every_neighbour_was_seen() -> None:
    """Only completions done ``settle_s`` before the newest are used, and in a full set only
    those after its oldest (earlier ones may have been dropped): the newest ``used`` of them."""
    by_done = [(0.0, float(d)) for d in range(10, 110)]  # done at 10 .. 109 s
    assert settled(by_done, full=False, settle_s=30.0, used=5) == [
        (0.0, float(d)) for d in range(75, 80)
    ]
    assert settled(by_done, full=False, settle_s=30.0, used=500)[0] == (0.0, 10.0)
    assert settled(by_done, full=True, settle_s=30.0, used=500)[0] == (0.0, 11.0)
    assert settled(by_done, full=True, settle_s=200.0, used=5) == []
