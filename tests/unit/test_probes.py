"""Probes: checks during the upstream's queue wait that bracket the start of generation, so
the dense window is placed from there (``worker/window.py``)."""

from __future__ import annotations

import math

import pytest

from genqueue.worker.window import (
    BOOTSTRAP_STEP,
    Probes,
    Seen,
    Span,
    check_window,
    plan_probes,
    probe_due,
    probes,
)

TOTAL = Span(130.0, 330.0)  # a doubled queue wait: 4 % of the totals by 130 s
GENERATION = Span(85.0, 222.0)  # generation alone (median 120 s, sigma 0.2)
EVERY = 4.7


def test_probes_start_where_a_queued_check_moves_the_window() -> None:
    """Before ``total.lo - generation.lo`` a ``queued`` check would not move the first check
    (``check_window`` keeps the creation-anchored one): the probes start there, their step
    the one that balances checks spent against checks saved (sqrt(2 m every))."""
    plan = probes(TOTAL, GENERATION, 68.0, EVERY, min_gain=0.0)
    assert plan is not None
    assert plan.from_s == pytest.approx(45.0)
    assert plan.every_s == pytest.approx(math.sqrt(2 * (68.0 - 45.0) * EVERY))
    created = Seen(0.0)
    first, _ = check_window(created, TOTAL, GENERATION, EVERY)
    assert first == pytest.approx(45.0 + GENERATION.lo_s + EVERY)
    queued_at_from = Seen(0.0, queued_s=plan.from_s)
    assert check_window(queued_at_from, TOTAL, GENERATION, EVERY)[0] == pytest.approx(first)
    later = Seen(0.0, queued_s=plan.from_s + plan.every_s)
    assert check_window(later, TOTAL, GENERATION, EVERY)[0] > first


def test_a_short_queue_wait_plans_no_probes() -> None:
    """The steady platform's queue wait (median 5 s) and a 30 s one do not pay for probes;
    a doubled one (60 s, mean 68 s) does; a higher ``min_gain`` asks for more."""
    assert probes(Span(90.0, 240.0), GENERATION, 5.7, EVERY, min_gain=0.0) is None
    assert probes(Span(110.0, 290.0), GENERATION, 34.0, EVERY, min_gain=0.0) is None
    assert probes(TOTAL, GENERATION, 68.0, EVERY, min_gain=0.0) is not None
    assert probes(TOTAL, GENERATION, 68.0, EVERY, min_gain=5.0) is None


def test_probe_due_follows_the_last_queued_check_until_the_start_is_seen() -> None:
    plan = Probes(45.0, 15.0)
    assert probe_due(Seen(100.0), plan) == pytest.approx(160.0)
    assert probe_due(Seen(100.0, queued_s=120.0), plan) == pytest.approx(160.0)  # too early
    assert probe_due(Seen(100.0, queued_s=170.0), plan) == pytest.approx(185.0)
    assert probe_due(Seen(100.0, 170.0, 185.0), plan) is None  # seen in progress: bracketed
    assert probe_due(Seen(100.0, started_by_s=150.0), plan) is None
    assert probe_due(Seen(100.0), None) is None


def test_plan_bootstraps_then_needs_a_generation_sample() -> None:
    """While too few generation times are known, every job is probed closely enough that its
    start is learned (below the two intervals ``observed.generation_s`` accepts); without a
    generation sample and not bootstrapping (never seen ``queued``): no probes."""
    boot = plan_probes(TOTAL, None, 68.0, EVERY, min_gain=0.0, bootstrap=True)
    assert boot == Probes(0.0, BOOTSTRAP_STEP * EVERY)
    assert boot.every_s < 2 * EVERY
    assert plan_probes(TOTAL, None, 68.0, EVERY, min_gain=0.0, bootstrap=False) is None
    planned = plan_probes(TOTAL, GENERATION, 68.0, EVERY, min_gain=0.0, bootstrap=False)
    assert planned == probes(TOTAL, GENERATION, 68.0, EVERY, min_gain=0.0)
