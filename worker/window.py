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
