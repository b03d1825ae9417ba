"""Per-tenant cluster metrics read from Redis at scrape time (exported by ``genqueue
exporter`` beside ``ClusterCollector``, once per cluster).

The ``tenant`` label takes ``default`` and the configured tenants only (a bounded set: a
request for an unknown tenant is refused), so it is safe as a label.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import redis
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from genqueue.producer.keys import DEFAULT_TENANT, NON_TERMINAL
from genqueue.producer.record import micro_to_usd
from genqueue.producer.stats import Stats, parse_stats
from genqueue.worker.budget_metrics import budget_metrics
from genqueue.worker.cluster_metrics import StatsCollector


class TenantCollector(StatsCollector):
    """Requests waiting and in flight, finished and cost, per tenant, from one snapshot."""

    def snapshot(self) -> dict[str, Stats]:
        """Each tenant's stats (``default`` first), read in one round trip."""
        replies, (configured,), now = self._read(self.tenants_command())
        return self.parse(replies, configured, now, self._budget_clock)

    def tenants_command(self) -> tuple[str, ...]:
        """The command whose reply ``parse`` takes as ``configured``, read with the stats."""
        return ("HKEYS", self._settings.keys.tenants)

    @staticmethod
    def parse(
        replies: list[Any], configured: list[str], now: int, clock: int | None
    ) -> dict[str, Stats]:
        """Each tenant's stats from the replies of ``_read`` (``clock``: the budgets')."""
        names = [DEFAULT_TENANT, *sorted(set(configured) - {DEFAULT_TENANT})]
        return {t: parse_stats(replies, now, tenant=t, budget_clock_ms=clock) for t in names}

    def collect(self) -> Iterator[Metric]:
        try:
            by_tenant = self.snapshot()
        except (redis.RedisError, OSError):
            return  # genqueue_redis_up (ClusterCollector) says why
        yield from self.metrics(by_tenant)

    def metrics(self, by_tenant: dict[str, Stats]) -> Iterator[Metric]:
        """The per-tenant metrics from one snapshot."""
        requests = GaugeMetricFamily(
            "genqueue_tenant_requests",
            "Requests per tenant and non-terminal status (pending: waiting for an upstream "
            "slot; submitting, queued, in_progress: in flight; tracking: a billed job still "
            "followed after a cancel or deadline).",
            labels=["tenant", "status"],
        )
        waiting = GaugeMetricFamily(
            "genqueue_tenant_waiting",
            "Requests waiting in a tenant's admission queue for an upstream slot (no timer, "
            "no cost per second), by why they joined it: cap (the in-flight cap is full), "
            "tenant_cap (the tenant's own), paused (creates paused).",
            labels=["tenant", "reason"],
        )
        finished = CounterMetricFamily(
            "genqueue_tenant_requests_finished",
            "Requests that reached a terminal status, by tenant and outcome.",
            labels=["tenant", "outcome"],
        )
        cost = CounterMetricFamily(
            "genqueue_tenant_cost_usd",
            "Upstream cost recorded, in US dollars, by tenant.",
            labels=["tenant"],
        )
        for tenant, stats in by_tenant.items():
            for status in NON_TERMINAL:
                requests.add_metric([tenant, status], stats.requests_by_status.get(status, 0))
            requests.add_metric([tenant, "tracking"], stats.tracking)
            for reason, n in stats.waiting.items():
                waiting.add_metric([tenant, reason], n)
            for outcome, n in stats.finished_by_outcome.items():
                self._finished_high((tenant, outcome), n)
            self._cost_high(tenant, stats.total_cost_micro_usd)
        for (tenant, outcome), n in sorted(self._finished_hwm.items()):
            finished.add_metric([tenant, outcome], n)
        for tenant, micro in sorted(self._cost_hwm.items()):
            cost.add_metric([tenant], float(micro_to_usd(micro)))
        yield requests
        yield waiting
        yield finished
        yield cost
        first = next(iter(by_tenant.values()), None)
        if first is not None and first.budget is not None:
            yield from budget_metrics(
                "genqueue_tenant_budget",
                "by tenant",
                [((t,), line) for t, line in first.budget.tenants.items()],
                ["tenant"],
            )
