"""Where a job's checks go, from what the upstream reports and what genqueue saw itself.

The upstream's timestamps (``created_at``, ``completed_at``) are its clock; genqueue's own
observations (the checks that saw ``queued`` / ``in_progress``) are Redis'. Everything here is
on Redis' clock: a job's creation is ``created_at`` plus the estimated offset
(``worker/observed.py``). Two learned distributions place the checks:

* ``total`` (created to completed, both upstream timestamps): always known; the only one on an
  upstream that never reports ``queued``.
* ``generation`` (the start of generation, bracketed by two checks, to completed): known once
  checks have seen jobs start; it leaves out the upstream's queue wait, which grows and moves
  on a busy platform.

A check that saw the job ``queued`` at ``t`` means it ends after ``t`` plus a generation; the
first check that saw it ``in_progress`` at ``u`` means it ends before ``u`` plus a generation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from genqueue.worker.drift import Shift
from genqueue.worker.durations import lower_quantile, quantile


@dataclass(frozen=True, slots=True)
class Seen:
    """What genqueue knows of one upstream job, every time in seconds on Redis' clock."""

    #: The upstream's ``created_at`` moved onto Redis' clock.
    created_s: float
    #: The last check that saw it ``queued`` (generation started after), if any.
    queued_s: float | None = None
    #: The first check that saw it ``in_progress`` (generation started before), if any.
    started_by_s: float | None = None


@dataclass(frozen=True, slots=True)
class Span:
    """A low and a high quantile of a learned duration (seconds)."""

    lo_s: float
    hi_s: float


def span(
    sorted_values: list[float],
    shift: Shift,
    *,
    q: float,
    confidence: float,
    dense_q: float,
) -> Span:
    """The lower confidence bound of the ``q`` quantile and the ``dense_q`` quantile of a long
    sample, both mapped to where the recent completions put them (``worker/drift.py``)."""
    return Span(
        shift.apply(lower_quantile(sorted_values, q, confidence)),
        shift.apply(quantile(sorted_values, dense_q)),
    )


def check_window(
    seen: Seen, total: Span, generation: Span | None, every_s: float
) -> tuple[float, float]:
    """When the first check is due and when the dense window closes (Redis seconds).

    From creation: one ``every_s`` after the low quantile of ``total``, up to its high one.
    With a learned ``generation``: a job seen ``queued`` at ``t`` is not checked before
    ``t`` + its low quantile + ``every_s``, and its window runs at least to ``t`` + its high
    one; once seen ``in_progress`` at ``u``, the window closes at ``u`` + the high quantile
    (it ended before, at that confidence), whatever its queue wait was.
    """
    first = seen.created_s + total.lo_s + every_s
    until = seen.created_s + total.hi_s
    if generation is not None:
        if seen.queued_s is not None:
            first = max(first, seen.queued_s + generation.lo_s + every_s)
            if seen.started_by_s is not None and seen.started_by_s >= seen.queued_s:
                until = seen.started_by_s + generation.hi_s
            else:
                until = max(until, seen.queued_s + generation.hi_s)
        elif seen.started_by_s is not None:
            until = min(until, seen.started_by_s + generation.hi_s)
    return first, until


@dataclass(frozen=True, slots=True)
class Probes:
    """Checks spent while the job waits in the upstream's queue (seconds): from ``from_s``
    after creation, one every ``every_s`` until a check sees it ``in_progress``."""

    from_s: float
    every_s: float


def probes(
    total: Span, generation: Span, queue_mean_s: float, every_s: float, *, min_gain: float
) -> Probes | None:
    """Whether checks during the queue wait pay on this platform, and where they go.

    A job seen ``queued`` at ``t`` is first checked at ``t`` + the generation's low quantile
    (``check_window``), later than from creation only when ``t`` is past ``from_s`` = the
    total's low quantile minus the generation's: probes start there. Each probe that still
    sees ``queued`` moves the window by ``every_s`` (``step / every_s`` checks saved), the
    one that sees the start costs one check and leaves the start up to a step before the
    window's anchor (half a step on average). With ``m`` the mean queue wait past
    ``from_s`` (the means add up: total - generation), that is ``m (1/every - 1/step) - 1
    - step / 2 every`` checks per video, best at ``step = sqrt(2 m every)``. Probes are
    planned only when that saves at least ``min_gain`` checks; a short queue wait (the
    steady platform's 5 s, a 30 s one) does not pay for them.
    """
    from_s = max(0.0, total.lo_s - generation.lo_s)
    m = queue_mean_s - from_s
    if m <= 0 or every_s <= 0:
        return None
    step = max(every_s, math.sqrt(2 * m * every_s))
    gain = m * (1 / every_s - 1 / step) - 1 - step / (2 * every_s)
    return Probes(from_s, step) if gain >= min_gain else None


def probe_due(seen: Seen, plan: Probes | None) -> float | None:
    """When the next probe is due (Redis seconds), or None: no plan, or the job was already
    seen ``in_progress`` (its start is bracketed)."""
    if plan is None or seen.started_by_s is not None:
        return None
    after = seen.created_s + plan.from_s
    if seen.queued_s is not None:
        after = max(after, seen.queued_s)
    return after + plan.every_s


#: Bootstrap probes come this many intervals apart: a start bracketed that closely (below
#: the two intervals ``observed.generation_s`` accepts, with room for a late check) is learned.
BOOTSTRAP_STEP = 1.5


def plan_probes(
    total: Span,
    generation: Span | None,
    queue_mean_s: float,
    every_s: float,
    *,
    min_gain: float,
    bootstrap: bool,
) -> Probes | None:
    """The probes of a model's jobs. ``bootstrap``: the upstream was seen reporting
    ``queued`` (some starts were bracketed) but too few generation times are known to place
    a window: every job is probed from creation, ``BOOTSTRAP_STEP`` intervals apart, until
    enough are (a one-off cost per model). Else :func:`probes` with the learned generation,
    and none without one (an upstream that never reports ``queued``: a probe says nothing)."""
    if bootstrap:
        return Probes(0.0, BOOTSTRAP_STEP * every_s)
    if generation is None:
        return None
    return probes(total, generation, queue_mean_s, every_s, min_gain=min_gain)
