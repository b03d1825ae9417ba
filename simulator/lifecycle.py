"""Job lifecycle and ground-truth bookkeeping of the simulator (no HTTP here)."""

from __future__ import annotations

import collections
import heapq
import math
import random
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Literal

from genqueue.simulator.config import ModelProfile, SimConfig

Status = Literal["queued", "in_progress", "completed", "failed", "cancelled"]
Clock = Callable[[], float]

# Top 48 bits of Together's ids are a UUIDv7 millisecond timestamp; a fixed base plus the
# creation index keeps ids deterministic yet sorted by creation, like the real ones.
_ID_BASE_MS = 0x019A0068794A

_FAILURES: tuple[tuple[str, str], ...] = (
    ("The prompt was flagged by content moderation.", "content_policy_violation"),
    ("Video generation failed due to an internal error.", "internal_error"),
    ("Video generation timed out.", "generation_timeout"),
)


@dataclass(slots=True)
class SimJob:
    """One simulated upstream job; its status is a pure function of the clock."""

    index: int
    id: str
    model: str
    idempotency_key: str | None
    inputs: dict[str, Any]
    seconds: str
    size: str
    created_at: float
    started_at: float
    done_at: float
    error: tuple[str, str] | None
    """(message, code) when the job is destined to fail."""
    price_micro_usd: int
    polls: int = 0
    cancelled: bool = False
    """Cancelled by the upstream (a fault): ends ``cancelled`` at ``done_at``, never billed."""

    def status(self, now: float) -> Status:
        """The job's status at unix time ``now``."""
        if now < self.started_at:
            return "queued"
        if now < self.done_at:
            return "in_progress"
        if self.cancelled:
            return "cancelled"
        return "failed" if self.error is not None else "completed"

    def cost_micro_usd(self, now: float) -> int:
        """What has been billed for this job at ``now``: its price once completed, else 0."""
        return self.price_micro_usd if self.status(now) == "completed" else 0


def micro_to_usd(micro: int) -> Decimal:
    """Integer micro-dollars as an exact Decimal of dollars."""
    return Decimal(micro).scaleb(-6)


def format_usd(micro: int) -> str:
    """Dollars as a decimal string with at least 2 and at most 6 decimals ("0.28", "0.123456")."""
    text = f"{micro_to_usd(micro):.6f}"
    whole, frac = text.split(".")
    return f"{whole}.{frac.rstrip('0').ljust(2, '0')}"


@dataclass
class _Counters:
    jobs_created: int = 0
    duplicate_creations: int = 0
    idempotent_replays: int = 0
    creations_by_key_max: int = 0
    completed: int = 0
    failed: int = 0
    cancelled: int = 0
    billed_micro_usd: int = 0
    requests: dict[str, dict[str, int]] = field(default_factory=dict)
    faults_injected: dict[str, int] = field(default_factory=dict)


class Simulator:
    """All simulated jobs plus incrementally kept ground-truth counters.

    Thread-safe: the server thread mutates it while a test thread may read stats.
    """

    def __init__(self, config: SimConfig, clock: Clock = time.time) -> None:
        self.config = config
        self.clock = clock
        self._lock = threading.Lock()
        self.resets = -1
        """How many times :meth:`reset` ran after construction (per-run state elsewhere, like
        the fault injector's, follows it)."""
        self.reset()

    def reset(self, seed: int | None = None) -> None:
        """Forget every job and counter; ``seed`` replaces the config's seed from now on."""
        with self._lock:
            self.seed = self.config.seed if seed is None else seed
            self._jobs: dict[str, SimJob] = {}
            self._by_key: dict[str, str] = {}
            self._creations_by_key: dict[str, int] = {}
            # Jobs not yet terminal, by done_at: settled lazily so stats never scan all jobs.
            self._pending: list[tuple[float, int, SimJob]] = []
            self._counters = _Counters()
            self._first_created: float | None = None
            # Arrival times of API calls (bounded): ground truth for rate-limit tests.
            self._arrivals: collections.deque[float] = collections.deque(maxlen=500_000)
            self.resets += 1

    def create(
        self,
        model: str,
        profile: ModelProfile,
        inputs: Mapping[str, Any],
        idempotency_key: str | None = None,
    ) -> tuple[SimJob, bool]:
        """Create a job (or replay the one made under ``idempotency_key``); True if new."""
        with self._lock:
            c = self._counters
            if idempotency_key is not None:
                existing = self._by_key.get(idempotency_key)
                if existing is not None and self.config.honour_idempotency:
                    c.idempotent_replays += 1
                    return self._jobs[existing], False
            job = self._new_job(model, profile, inputs, idempotency_key)
            self._jobs[job.id] = job
            heapq.heappush(self._pending, (job.done_at, job.index, job))
            c.jobs_created += 1
            if idempotency_key is not None:
                n = self._creations_by_key.get(idempotency_key, 0) + 1
                self._creations_by_key[idempotency_key] = n
                self._by_key.setdefault(idempotency_key, job.id)
                if n > 1:
                    c.duplicate_creations += 1
                c.creations_by_key_max = max(c.creations_by_key_max, n)
            return job, True

    def _new_job(
        self,
        model: str,
        profile: ModelProfile,
        inputs: Mapping[str, Any],
        idempotency_key: str | None,
    ) -> SimJob:
        index = self._counters.jobs_created
        # A per-job RNG keyed by (seed, index): job n's outcome never depends on how many
        # draws earlier jobs made, so config changes don't reshuffle the whole sequence.
        rng = random.Random(f"genqueue-sim:{self.seed}:{index}")
        rand_bits = rng.getrandbits(80)
        cfg = self.config
        queue_s = rng.lognormvariate(math.log(cfg.queue_median_s), cfg.queue_sigma)
        duration_s = rng.lognormvariate(math.log(profile.median_s), profile.sigma)
        fails = rng.random() < cfg.failure_share
        failure = _FAILURES[rng.randrange(len(_FAILURES))]
        created = self.clock()
        if self._first_created is None:
            self._first_created = created
        shift_at = cfg.queue_shift_at_s
        if shift_at is not None and created - self._first_created >= shift_at * cfg.time_scale:
            queue_s *= cfg.queue_shift_factor
        if cfg.capacity is not None:
            # Over capacity, a job waits for a slot: a share of a median generation for each
            # job in progress beyond the capacity (no extra random draw: seeded outcomes stay
            # the same with the profile on or off).
            self._settle(created)
            over = len(self._pending) + 1 - cfg.capacity
            queue_s += max(0, over) / cfg.capacity * profile.median_s
        started = created + queue_s * cfg.time_scale
        width, height = inputs.get("width"), inputs.get("height")
        seconds = inputs.get("seconds")
        return SimJob(
            index=index,
            id=_uuid7(_ID_BASE_MS + index, rand_bits),
            model=model,
            idempotency_key=idempotency_key,
            inputs=dict(inputs),
            seconds=str(seconds) if seconds is not None else profile.seconds,
            size=f"{width}x{height}" if width and height else profile.size,
            created_at=created,
            started_at=started,
            done_at=started + duration_s * cfg.time_scale,
            error=failure if fails else None,
            price_micro_usd=profile.cost_micro_usd,
        )

    def cancel_upstream(self, job_id: str) -> None:
        """Make the job end ``cancelled`` (the upstream cancelled it: a fault), never billed."""
        with self._lock:
            job = self._jobs.get(job_id)
            if job is not None and job.done_at > self.clock():
                job.cancelled = True

    def get(self, job_id: str) -> SimJob | None:
        """The job with this id, or None (a dict lookup)."""
        return self._jobs.get(job_id)

    def record_poll(self, job: SimJob) -> None:
        """Count one status request for ``job``."""
        with self._lock:
            job.polls += 1

    def count_request(self, endpoint: str, status: int | str) -> None:
        """Count one answered request by endpoint label and status code."""
        with self._lock:
            by_status = self._counters.requests.setdefault(endpoint, {})
            key = str(status)
            by_status[key] = by_status.get(key, 0) + 1

    def note_arrival(self) -> None:
        """Record that an API call (create or retrieve) arrived now."""
        t = self.clock()
        with self._lock:
            self._arrivals.append(t)

    def load(self, window_s: float = 1.0) -> dict[str, Any]:
        """Peak load as the upstream saw it: most API calls in any ``window_s`` window, and
        most jobs created but not yet finished at any moment."""
        with self._lock:
            arrivals = sorted(self._arrivals)
            spans = [(j.created_at, j.done_at) for j in self._jobs.values()]
        peak_calls, lo = 0, 0
        for hi, t in enumerate(arrivals):
            while arrivals[lo] <= t - window_s:
                lo += 1
            peak_calls = max(peak_calls, hi - lo + 1)
        edges = sorted([(c, 1) for c, _ in spans] + [(d, -1) for _, d in spans])
        peak_jobs = running = 0
        for _, delta in edges:
            running += delta
            peak_jobs = max(peak_jobs, running)
        return {
            "window_s": window_s,
            "max_calls_in_window": peak_calls,
            "calls": len(arrivals),
            "max_jobs_in_flight": peak_jobs,
        }

    def count_fault(self, kind: str) -> None:
        """Count one injected upstream fault of ``kind`` (see ``genqueue.simulator.faults``)."""
        with self._lock:
            faults = self._counters.faults_injected
            faults[kind] = faults.get(kind, 0) + 1

    def _settle(self, now: float) -> None:
        c = self._counters
        while self._pending and self._pending[0][0] <= now:
            _, _, job = heapq.heappop(self._pending)
            if job.cancelled:
                c.cancelled += 1
            elif job.error is None:
                c.completed += 1
                c.billed_micro_usd += job.price_micro_usd
            else:
                c.failed += 1

    def stats(self) -> dict[str, Any]:
        """Ground truth as of now: creations, duplicates, outcomes, billing, request counts."""
        with self._lock:
            self._settle(self.clock())
            c = self._counters
            return {
                "jobs_created": c.jobs_created,
                "duplicate_creations": c.duplicate_creations,
                "idempotent_replays": c.idempotent_replays,
                "creations_by_idempotency_key_max": c.creations_by_key_max,
                "completed": c.completed,
                "failed": c.failed,
                "cancelled": c.cancelled,
                "in_flight": c.jobs_created - c.completed - c.failed - c.cancelled,
                "billed_usd": format_usd(c.billed_micro_usd),
                "billed_micro_usd": c.billed_micro_usd,
                "requests": {k: dict(v) for k, v in c.requests.items()},
                "faults_injected": dict(c.faults_injected),
                "seed": self.seed,
                "time_scale": self.config.time_scale,
                "shape": self.config.shape,
            }

    def jobs(self) -> list[dict[str, Any]]:
        """Every job in creation order with its current status, cost and poll count."""
        with self._lock:
            now = self.clock()
            return [
                {
                    "id": j.id,
                    "model": j.model,
                    "idempotency_key": j.idempotency_key,
                    "status": j.status(now),
                    "created_at": j.created_at,
                    "started_at": j.started_at,
                    "done_at": j.done_at,
                    "cost_micro_usd": j.cost_micro_usd(now),
                    "polls": j.polls,
                }
                for j in self._jobs.values()
            ]


def _uuid7(unix_ms: int, rand80: int) -> str:
    """A UUIDv7-formatted string from a 48-bit millisecond value and 80 random bits."""
    rand_a = rand80 >> 68  # 12 bits
    rand_b = rand80 & ((1 << 62) - 1)
    value = (unix_ms & 0xFFFF_FFFF_FFFF) << 80 | 0x7 << 76 | rand_a << 64 | 0b10 << 62 | rand_b
    return str(uuid.UUID(int=value))


__all__ = ["SimJob", "Simulator", "Status", "format_usd", "micro_to_usd"]
