"""Per-process Prometheus metrics of a worker (summed across workers by Prometheus).

Cluster-wide figures (queue depth, records by status, totals and cost) are not here: they are
read from Redis at scrape time by ``genqueue.worker.cluster_metrics`` so that they neither multiply
with replicas nor reset with restarts. Labels stay bounded: no ids, no prompts.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.metrics import MetricWrapperBase

from genqueue.worker.upstream import CallRecord

#: Latency buckets for video generation: seconds to an hour.
DURATION_BUCKETS = (1, 5, 10, 20, 30, 45, 60, 90, 120, 180, 240, 300, 450, 600, 900, 1800, 3600)
LAG_BUCKETS = (0.1, 0.25, 0.5, 1, 2, 5, 10, 15, 20, 30, 45, 60, 120, 300)
HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20)


class WorkerMetrics:
    """The metrics one worker process exports (a registry per instance, so tests can make
    their own and several workers can live in one process)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self._children: dict[tuple[object, tuple[str, ...]], Any] = {}
        self.upstream_requests = Counter(
            "genqueue_upstream_requests",
            "Upstream HTTP calls by operation and status code (or transport outcome).",
            ["operation", "code"],
            registry=r,
        )
        self.upstream_duration = Histogram(
            "genqueue_upstream_request_duration_seconds",
            "Duration of upstream HTTP calls.",
            ["operation"],
            buckets=HTTP_BUCKETS,
            registry=r,
        )
        self.polls = Counter(
            "genqueue_polls", "Status checks of upstream jobs.", ["model"], registry=r
        )
        self.request_duration = Histogram(
            "genqueue_request_duration_seconds",
            "Request latency by phase: queue (enqueue to upstream create), upstream "
            "(upstream created to done), total (enqueue to genqueue seeing the end).",
            ["model", "phase"],
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.detection_lag = Histogram(
            "genqueue_detection_lag_seconds",
            "Time from the upstream finishing a job to genqueue recording it.",
            buckets=LAG_BUCKETS,
            registry=r,
        )
        self.durable_write_timeouts = Counter(
            "genqueue_durable_write_timeouts",
            "Upstream ids written on the primary whose replica/fsync wait timed out (a "
            "failover now could lose them).",
            registry=r,
        )
        self.timers_rearmed = Counter(
            "genqueue_timers_rearmed", "Lost timers re-armed by the reconciler.", registry=r
        )
        self.waiting_expired = Counter(
            "genqueue_waiting_expired",
            "Requests that reached their deadline while waiting for admission.",
            registry=r,
        )
        self.admitted_by_safety_net = Counter(
            "genqueue_admitted_by_safety_net",
            "Requests admitted by the reconciler's periodic pass rather than by the event "
            "that freed their slot (should stay 0).",
            registry=r,
        )
        self.ambiguous_submits = Counter(
            "genqueue_ambiguous_submits",
            "Creates that may have happened upstream without genqueue learning the id.",
            registry=r,
        )
        self.superseded_jobs = Counter(
            "genqueue_superseded_jobs",
            "Upstream jobs whose create answered after another attempt went out (each is "
            "checked until it ends, its cost recorded).",
            registry=r,
        )
        self.cost_unknown = Counter(
            "genqueue_cost_unknown",
            "Completed upstream jobs whose cost was missing or unusable (recorded as unknown).",
            registry=r,
        )
        self.rate_limited = Counter(
            "genqueue_rate_limited",
            "Upstream calls refused or deferred for rate limits (source: upstream 429 or the "
            "shared local limit; operation: create or retrieve).",
            ["source", "operation"],
            registry=r,
        )
        self.unknown_statuses = Counter(
            "genqueue_unknown_upstream_statuses",
            "Upstream answers with a status genqueue does not know (treated as running).",
            registry=r,
        )
        self.creates_paused = Counter(
            "genqueue_create_pauses",
            "Times this worker paused creates for everyone (401/402/403 or sustained 5xx).",
            ["code"],
            registry=r,
        )
        self.webhook_deliveries = Counter(
            "genqueue_webhook_deliveries",
            "Webhook delivery attempts by outcome (done, retry, dead: given up on).",
            ["outcome"],
            registry=r,
        )
        self.downloads = Counter(
            "genqueue_downloads",
            "Video download attempts by outcome (done, retry, dead).",
            ["outcome"],
            registry=r,
        )
        self.clock_skew = Gauge(
            "genqueue_clock_skew_seconds",
            "This host's clock minus Redis' clock (timers are scheduled on Redis' clock).",
            registry=r,
        )

        # Series exist at 0 from the start: a rate cannot see a counter's first increment.
        for source in ("upstream", "local"):
            for operation in ("create", "retrieve"):
                self.rate_limited.labels(source, operation)
        for outcome in ("done", "retry", "dead"):
            self.webhook_deliveries.labels(outcome)
            self.downloads.labels(outcome)
        self.webhook_deliveries.labels("deferred")
        for code in ("401", "402", "403", "outage"):
            self.creates_paused.labels(code)

    def child(self, metric: MetricWrapperBase, *values: str) -> Any:
        """``metric.labels(*values)``, looked up once per label set: prometheus_client takes a
        lock and rebuilds its key on every call, and the hot path asks a few times a check.
        (No metric here ever removes a label set, which would orphan a kept child.)"""
        key = (metric, values)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*values)
        return found

    def observe_call(self, record: CallRecord) -> None:
        """``UpstreamClient`` ``on_call`` hook."""
        code = str(record.status_code) if record.status_code is not None else record.outcome
        self.child(self.upstream_requests, record.operation, code).inc()
        self.child(self.upstream_duration, record.operation).observe(record.duration_s)
        if record.status_code == 429:
            self.rate_limited.labels("upstream", record.operation).inc()
