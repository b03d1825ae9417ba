"""Backoff is a pure function: these tests assert its delays exactly."""

import random

import pytest

from worker.backoff import jittered, poll_delay_s, retry_delay_s

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
    from worker.durations import quantile

    values = [10.0, 20.0, 30.0, 40.0, 50.0]
    assert quantile(values, 0.0) == 10.0 and quantile(values, 1.0) == 50.0
    assert quantile(values, 0.5) == 30.0 and quantile(values, 0.1) == 14.0
