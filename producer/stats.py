"""Cluster-wide figures read from Redis: one snapshot for ``stats()``, the CLI and metrics."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from genqueue.producer.keys import (
    DEFAULT_TENANT,
    HOLDING_SLOT,
    NON_TERMINAL,
    TENANT_FIELD_PREFIX,
    TOTALS_SEP,
    WAIT_REASONS,
    Keys,
    waiting_field,
)
from genqueue.producer.record import micro_to_usd


@dataclass(frozen=True, slots=True)
class Stats:
    """A snapshot of the queue. Totals survive worker restarts (they live in Redis)."""

    requests_by_status: dict[str, int]
    tracking: int
    active_upstream: int
    inflight: int
    queue_ready: int
    queue_deferred: int
    finished: dict[tuple[str, str], int]
    cost_micro_usd: dict[str, int]
    paused: dict[str, str] = field(default_factory=dict)
    #: How far behind the workers are: age of the oldest due timer (0 when none is due).
    queue_lag_ms: int = 0
    #: Whose figures these are (None: the whole cluster). A tenant's snapshot has its own
    #: counts, in-flight number and totals; queue depth, lag and pause stay the cluster's
    #: (how busy genqueue is, not whose work it is).
    tenant: str | None = None
    #: Superseded upstream jobs still checked (each holds a slot) and all ever learned.
    superseded_running: int = 0
    superseded: dict[str, int] = field(default_factory=dict)
    #: Attempts that may have created an upstream job nothing can find, by model.
    possibly_billed: dict[str, int] = field(default_factory=dict)
    #: Completed jobs whose cost was missing or unusable (recorded as unknown), by model.
    cost_unknown: dict[str, int] = field(default_factory=dict)
    #: Jobs whose cost was recorded, by model (the denominator of the mean cost).
    costed: dict[str, int] = field(default_factory=dict)
    #: Slots admission reserved for pending requests whose create has not started (they
    #: count against the in-flight cap with ``active_upstream``).
    admitted: int = 0
    #: Requests waiting in admission queues, by why they joined (``WAIT_REASONS``).
    waiting: dict[str, int] = field(default_factory=dict)

    def mean_cost_micro_usd(self, model: str) -> int:
        """The model's mean recorded cost per job (0 before any was recorded)."""
        n = self.costed.get(model, 0)
        return self.cost_micro_usd.get(model, 0) // n if n > 0 else 0

    @property
    def possibly_billed_estimate_micro_usd(self) -> dict[str, int]:
        """Possible unrecorded spend by model: each possibly billed attempt priced at the
        model's mean recorded cost (the upstream cannot say what it billed for a job nobody
        can find)."""
        return {m: n * self.mean_cost_micro_usd(m) for m, n in self.possibly_billed.items()}

    @property
    def finished_by_outcome(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for (_, outcome), n in self.finished.items():
            out[outcome] = out.get(outcome, 0) + n
        return out

    @property
    def total_cost_micro_usd(self) -> int:
        return sum(self.cost_micro_usd.values())

    def to_json_dict(self) -> dict[str, Any]:
        return {
            "requests_by_status": self.requests_by_status,
            "tracking": self.tracking,
            "active_upstream": self.active_upstream,
            "inflight": self.inflight,
            "queue": {
                "ready": self.queue_ready,
                "deferred": self.queue_deferred,
                "lag_s": self.queue_lag_ms / 1000,
            },
            "finished": [
                {"model": m, "outcome": o, "count": n}
                for (m, o), n in sorted(self.finished.items())
            ],
            "finished_by_outcome": self.finished_by_outcome,
            "cost_usd": {m: str(micro_to_usd(c)) for m, c in sorted(self.cost_micro_usd.items())},
            "total_cost_usd": str(micro_to_usd(self.total_cost_micro_usd)),
            "paused": self.paused,
            "superseded": {"running": self.superseded_running, "learned": self.superseded},
            "possibly_billed": {
                "count": self.possibly_billed,
                "estimate_usd": {
                    m: str(micro_to_usd(c))
                    for m, c in sorted(self.possibly_billed_estimate_micro_usd.items())
                },
            },
            "cost_unknown": self.cost_unknown,
            "admitted": self.admitted,
            "waiting": self.waiting,
            "tenant": self.tenant,
        }


def _s(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def stats_commands(keys: Keys, now_ms: int) -> list[tuple[str, ...]]:
    """The read-only commands of one snapshot, to send in one pipeline."""
    return [
        ("HGETALL", keys.counts),
        ("ZCARD", keys.inflight),
        ("ZCOUNT", keys.queue, "-inf", str(now_ms)),
        ("ZCOUNT", keys.queue, f"({now_ms}", "+inf"),
        ("HGETALL", keys.totals),
        ("HGETALL", keys.pause),
        ("ZRANGE", keys.queue, "0", "0", "WITHSCORES"),
    ]


def _pairs(raw: Any) -> dict[str, str]:
    if isinstance(raw, dict):
        return {_s(k): _s(v) for k, v in raw.items()}
    items = list(raw)
    return {_s(items[i]): _s(items[i + 1]) for i in range(0, len(items), 2)}


def oldest_due_age_ms(oldest: Any, now_ms: int) -> int:
    """Age of the oldest timer from a ``ZRANGE queue 0 0 WITHSCORES`` reply (flat or paired),
    0 when the queue is empty or its oldest timer is not due yet."""
    if not oldest:
        return 0
    score = oldest[0][1] if isinstance(oldest[0], (list, tuple)) else oldest[1]
    return max(0, now_ms - int(float(_s(score))))


#: Per-model counters of the totals hash beside ``finished`` and ``cost_micro``.
_PER_MODEL = ("superseded", "possibly_billed", "cost_unknown", "costed")


def split_by_tenant(raw: dict[str, str]) -> tuple[dict[str, int], dict[str, dict[str, int]]]:
    """A counts or totals hash as (the cluster's fields, each tenant's own fields)."""
    cluster: dict[str, int] = {}
    tenants: dict[str, dict[str, int]] = {}
    head = TENANT_FIELD_PREFIX + TOTALS_SEP
    for k, v in raw.items():
        if k.startswith(head):
            tenant, _, name = k[len(head) :].partition(TOTALS_SEP)
            tenants.setdefault(tenant, {})[name] = int(v)
        else:
            cluster[k] = int(v)
    return cluster, tenants


def tenant_view(raw: dict[str, str], tenant: str | None) -> dict[str, int]:
    """The fields of a counts or totals hash as seen by ``tenant`` (None: the cluster's).
    ``default`` has no fields of its own: it is the cluster minus every other tenant, which
    counts records written before tenants existed too."""
    cluster, tenants = split_by_tenant(raw)
    if tenant is None:
        return cluster
    if tenant != DEFAULT_TENANT:
        return tenants.get(tenant, {})
    own = dict(cluster)
    for fields in tenants.values():
        for k, v in fields.items():
            own[k] = own.get(k, 0) - v
    return own


def parse_stats(replies: Sequence[Any], now_ms: int, tenant: str | None = None) -> Stats:
    """Build :class:`Stats` from the replies to :func:`stats_commands` sent at ``now_ms``:
    the cluster's, or ``tenant``'s own."""
    counts, inflight, ready, deferred, totals, pause, oldest = replies
    c = tenant_view(_pairs(counts), tenant)
    finished: dict[tuple[str, str], int] = {}
    cost: dict[str, int] = {}
    by_model: dict[str, dict[str, int]] = {k: {} for k in _PER_MODEL}
    for k, v in tenant_view(_pairs(totals), tenant).items():
        parts = k.split(TOTALS_SEP)
        if parts[0] == "finished" and len(parts) == 3:
            finished[(parts[1], parts[2])] = int(v)
        elif parts[0] == "cost_micro" and len(parts) == 2:
            cost[parts[1]] = int(v)
        elif parts[0] in by_model and len(parts) == 2 and int(v) != 0:
            by_model[parts[0]][parts[1]] = int(v)
    by_status = {s: max(0, c.get(s, 0)) for s in NON_TERMINAL}
    tracking = max(0, c.get("tracking", 0))
    return Stats(
        requests_by_status=by_status,
        tracking=tracking,
        # Upstream jobs: the slots held but those reserved for creates not started yet.
        active_upstream=max(0, sum(c.get(s, 0) for s in HOLDING_SLOT if s != "admitted")),
        admitted=max(0, c.get("admitted", 0)),
        waiting={r: max(0, c.get(waiting_field(r), 0)) for r in WAIT_REASONS},
        # The in-flight set is the cluster's; a tenant's are its live and tracked records.
        inflight=int(inflight) if tenant is None else sum(by_status.values()) + tracking,
        queue_ready=int(ready),
        queue_deferred=int(deferred),
        finished=finished,
        cost_micro_usd=cost,
        paused=_pairs(pause),
        queue_lag_ms=oldest_due_age_ms(oldest, now_ms),
        superseded_running=max(0, c.get("superseded", 0)),
        superseded=by_model["superseded"],
        possibly_billed=by_model["possibly_billed"],
        cost_unknown=by_model["cost_unknown"],
        costed=by_model["costed"],
        tenant=tenant,
    )


def redis_time_ms(reply: Any) -> int:
    """Redis ``TIME`` reply as milliseconds."""
    secs, micros = reply
    return int(secs) * 1000 + int(micros) // 1000
