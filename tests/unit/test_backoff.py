"""Backoff is a pure function: these tests assert its delays exactly."""

import random

import pytest

from genqueue.worker.backoff import jittered, learned_delay_s, poll_delay_s, retry_delay_s
from genqueue.worker.config import ScheduleSettings

SCHEDULE = {"first_s": 20.0, "floor_s": 5.0, "cap_s": 30.0, "factor": 1.5}


def test_first_check_waits_first_s() -> None:
    """Right after create, the first check waits the configured first delay."""
    assert poll_delay_s(0, **SCHEDULE) == 20.0


def test_exponential_between_floor_and_cap() -> None:
    """Later checks grow from the floor by the factor and never exceed the cap."""
    delays = [poll_delay_s(n, **SCHEDULE) for n in range(1, 8)]
    assert delays == [5.0, 7.5, 11.25, 16.875, 25.3125, 30.0, 30.0]


def test_huge_poll_count_does_not_overflow() -> None:
    """A very long-running job keeps the cap instead of overflowing."""
    assert poll_delay_s(10_000, **SCHEDULE) == 30.0


def test_retry_after_is_never_undercut() -> None:
    """An upstream Retry-After longer than the backoff wins."""
    assert poll_delay_s(1, retry_after_s=12.0, **SCHEDULE) == 12.0
    assert poll_delay_s(6, retry_after_s=1.0, **SCHEDULE) == 30.0


def test_jitter_spreads_within_bounds_and_is_switchable() -> None:
    """Jitter spreads delays within ±fraction, stays under the cap, and is off without an rng."""
    rng = random.Random(1)
    samples = [poll_delay_s(1, jitter=0.2, rng=rng, **SCHEDULE) for _ in range(200)]
    assert min(samples) >= 4.0 and max(samples) <= 6.0
    assert len(set(samples)) > 100
    capped = [poll_delay_s(9, jitter=0.2, rng=rng, **SCHEDULE) for _ in range(50)]
    assert max(capped) <= 30.0
    assert jittered(10.0, 0.5, None) == 10.0


@pytest.mark.parametrize(("attempt", "expected"), [(1, 2.0), (2, 4.0), (3, 8.0), (6, 60.0)])
def test_retry_delay_doubles_up_to_cap(attempt: int, expected: float) -> None:
    """Create retries back off exponentially up to their cap."""
    assert retry_delay_s(attempt, base_s=2.0, cap_s=60.0) == expected


def test_quantile_interpolates() -> None:
    """Quantiles of recent durations interpolate linearly between samples."""
    from genqueue.worker.durations import quantile

    values = [10.0, 20.0, 30.0, 40.0, 50.0]
    assert quantile(values, 0.0) == 10.0 and quantile(values, 1.0) == 50.0
    assert quantile(values, 0.5) == 30.0 and quantile(values, 0.1) == 14.0


def test_lower_quantile_is_a_confidence_bound_that_converges() -> None:
    """The lower bound equals the plain quantile at confidence 0.5, is lower for higher
    confidence and smaller samples, never leaves the sample, and approaches the quantile as
    the sample grows."""
    from genqueue.worker.durations import lower_quantile, quantile

    def even(n: int) -> list[float]:
        return [100.0 + 100.0 * k / (n - 1) for k in range(n)]

    assert lower_quantile(even(50), 0.1, 0.5) == quantile(even(50), 0.1)
    gaps = []
    for n in (20, 200, 2000, 20000):
        xs = even(n)
        lo90, lo99 = lower_quantile(xs, 0.1, 0.9), lower_quantile(xs, 0.1, 0.99)
        assert xs[0] <= lo99 < lo90 < quantile(xs, 0.1)
        gaps.append(quantile(xs, 0.1) - lo90)
    assert gaps == sorted(gaps, reverse=True) and gaps[-1] < 0.3
    assert lower_quantile([7.0], 0.5, 0.9) == 7.0
    with pytest.raises(ValueError):
        lower_quantile([], 0.1, 0.9)


LEARNED = {"first_s": 90.0, "dense_until_s": 150.0, "dense_every_s": 5.0, "cap_s": 30.0}


def test_learned_schedule_waits_for_the_low_quantile() -> None:
    """Before the low quantile, the first check is exactly at it."""
    assert learned_delay_s(0.0, checked=False, late_s=0.0, factor=1.5, **LEARNED) == 90.0
    assert learned_delay_s(70.0, checked=False, late_s=0.0, factor=1.5, **LEARNED) == 20.0


def test_learned_schedule_checks_every_floor_inside_the_window() -> None:
    """Once checked and up to the high quantile, the next check is one interval after this
    one's due time (from one interval before the low quantile: a first check jittered early);
    a check well before it waits for it."""
    assert learned_delay_s(60.0, checked=True, late_s=0.0, factor=1.5, **LEARNED) == 30.0
    for elapsed in (86.0, 90.0, 120.0, 149.9):
        assert learned_delay_s(elapsed, checked=True, late_s=0.0, factor=1.5, **LEARNED) == 5.0


def test_learned_schedule_absorbs_a_late_check() -> None:
    """A check that ran late keeps the next one on time; one late by more than half an
    interval starts afresh."""
    assert learned_delay_s(120.0, checked=True, late_s=1.25, factor=1.5, **LEARNED) == 3.75
    assert learned_delay_s(120.0, checked=True, late_s=3.0, factor=1.5, **LEARNED) == 5.0


def test_learned_schedule_keeps_its_grid_after_an_early_check() -> None:
    """A check run before its due time (claimed within the timer slack) keeps the next one
    an interval after that due time, so early checks add no checks to the dense window."""
    assert learned_delay_s(120.0, checked=True, late_s=-0.5, factor=1.5, **LEARNED) == 5.5
    assert learned_delay_s(120.0, checked=True, late_s=-3.0, factor=1.5, **LEARNED) == 5.0


def test_learned_schedule_backs_off_in_time_after_the_window() -> None:
    """After the window the delay grows with the time since it closed, from the floor to
    the cap."""
    delays = [
        learned_delay_s(e, checked=True, late_s=0.0, factor=1.5, **LEARNED)
        for e in (150.0, 160.0, 170.0, 200.0)
    ]
    assert delays == [5.0, 5.0, 10.0, 25.0]
    assert learned_delay_s(1e6, checked=True, late_s=0.0, factor=1.5, **LEARNED) == 30.0


def test_learned_schedule_without_window_backs_off_from_the_first_check() -> None:
    """A high quantile at or below the low one means no window: backoff right away."""
    no_window = {**LEARNED, "dense_until_s": 60.0}
    assert learned_delay_s(90.0, checked=True, late_s=0.0, factor=2.0, **no_window) == 5.0
    assert learned_delay_s(110.0, checked=True, late_s=0.0, factor=2.0, **no_window) == 20.0


def test_timer_slack_counts_as_at_most_a_quarter_of_the_floor() -> None:
    """A small poll floor keeps the default slack valid, counted as a quarter of the floor;
    a negative slack is refused."""
    assert ScheduleSettings().slack_s == 0.5
    assert ScheduleSettings(poll_floor_s=1.0).slack_s == 0.25
    assert ScheduleSettings(poll_slack_s=0.0).slack_s == 0.0
    with pytest.raises(ValueError, match="poll_slack_s"):
        ScheduleSettings(poll_slack_s=-1.0)
