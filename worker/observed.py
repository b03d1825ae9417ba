"""What the schedule may know of a job: the status the upstream reports, its spec timestamps
(``created_at``, ``completed_at``) and the times genqueue's own checks saw it ``queued`` or
``in_progress`` — nothing else the upstream might send (``started_at``, ``claimed_at``...).

The upstream's timestamps are its clock, genqueue's observations Redis'. Their offset (Redis
minus upstream) is bounded from above by every job: the id is written (Redis ``now``) after
the upstream created the job, and a completion is seen after it happened. Each bound is the
offset plus a latency, so the tightest recent one is the estimate (``ModelDurations.offset_s``).
"""

from __future__ import annotations

from genqueue.producer.keys import Field
from genqueue.worker.upstream import UpstreamJob
from genqueue.worker.window import Seen


def _seconds(raw_ms: str | None) -> float | None:
    return int(raw_ms) / 1000 if raw_ms else None


def offset_bound_s(
    raw: dict[str, str], job: UpstreamJob, now_s: float, *, fresh: bool
) -> float | None:
    """An upper bound of Redis' clock minus the upstream's from this job: ``now_s`` (Redis)
    when the job was ``fresh``ly created, else when its id was written, minus ``created_at``;
    and, once it completed, ``now_s`` minus ``completed_at``."""
    bounds = []
    if job.created_at is not None:
        written = now_s if fresh else _seconds(raw.get(Field.SUBMITTED_AT_MS))
        if written is not None:
            bounds.append(written - job.created_at)
    if job.status == "completed" and job.done_at is not None:
        bounds.append(now_s - job.done_at)
    return min(bounds) if bounds else None


def seen(raw: dict[str, str], job: UpstreamJob, now_s: float, offset_s: float) -> Seen | None:
    """The job as the schedule sees it now (``now_s``, Redis): its creation moved onto Redis'
    clock by ``offset_s``, and the checks that bracket its start, this one included."""
    if job.created_at is None:
        return None
    queued = now_s if job.status == "queued" else _seconds(raw.get(Field.SEEN_QUEUED_AT_MS))
    started = _seconds(raw.get(Field.SEEN_STARTED_BY_MS))
    if started is None and job.status == "in_progress":
        started = now_s
    return Seen(job.created_at + offset_s, queued, started)


def generation_s(
    raw: dict[str, str], job: UpstreamJob, now_s: float, offset_s: float, max_width_s: float
) -> float | None:
    """The generation time of a completed job as genqueue observed it: ``completed_at`` minus
    the middle of the interval its checks bracket the start in (moved onto the upstream's
    clock), when that interval is at most ``max_width_s`` wide; None otherwise."""
    if job.done_at is None or job.created_at is None:
        return None
    after = _seconds(raw.get(Field.SEEN_QUEUED_AT_MS))
    if after is None:
        after = job.created_at + offset_s
    before = _seconds(raw.get(Field.SEEN_STARTED_BY_MS))
    if before is None:
        before = now_s  # this check saw it completed: it started before
    if before < after or before - after > max_width_s:
        return None
    return job.done_at - ((after + before) / 2 - offset_s)
