"""Per-tenant cluster metrics read from Redis at scrape time (exported by ``genqueue
exporter`` beside ``ClusterCollector``, once per cluster).

The ``tenant`` label takes ``default`` and the configured tenants only (a bounded set: a
request for an unknown tenant is refused), so it is safe as a label.
"""

from __future__ import annotations

from collections.abc import Iterator

import redis
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from genqueue.producer.connections import sync_redis
from genqueue.producer.keys import DEFAULT_TENANT, NON_TERMINAL
from genqueue.producer.record import micro_to_usd
from genqueue.producer.settings import Settings
from genqueue.producer.stats import Stats, parse_stats, redis_time_ms, stats_commands


class TenantCollector(Collector):
    """Requests waiting and in flight, finished and cost, per tenant, from one snapshot."""

    def __init__(self, settings: Settings, client: redis.Redis | None = None) -> None:
        self._settings = settings
        self._redis = client or sync_redis(
            settings.redis_url, decode_responses=True, socket_timeout=5, socket_connect_timeout=5
        )
        # Totals never go backwards, even if Redis lost its last second of writes (rule 10).
        self._finished_hwm: dict[tuple[str, str], int] = {}
        self._cost_hwm: dict[str, int] = {}

    def snapshot(self) -> dict[str, Stats]:
        """Each tenant's stats (``default`` first), read in one round trip."""
        keys = self._settings.keys
        now = redis_time_ms(self._redis.time())
        with self._redis.pipeline(transaction=False) as pipe:
            for cmd in stats_commands(keys, now):
                pipe.execute_command(*cmd)  # type: ignore[no-untyped-call]
            pipe.hkeys(keys.tenants)
            *replies, configured = pipe.execute()
        names = [DEFAULT_TENANT, *sorted(set(configured) - {DEFAULT_TENANT})]
        return {t: parse_stats(replies, now, tenant=t) for t in names}

    def collect(self) -> Iterator[Metric]:
        try:
            by_tenant = self.snapshot()
        except (redis.RedisError, OSError):
            return  # genqueue_redis_up (ClusterCollector) says why
        requests = GaugeMetricFamily(
            "genqueue_tenant_requests",
            "Requests per tenant and non-terminal status (pending: waiting for an upstream "
            "slot; submitting, queued, in_progress: in flight; tracking: a billed job still "
            "followed after a cancel or deadline).",
            labels=["tenant", "status"],
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
            for outcome, n in stats.finished_by_outcome.items():
                key = (tenant, outcome)
                self._finished_hwm[key] = max(n, self._finished_hwm.get(key, 0))
            self._cost_hwm[tenant] = max(stats.total_cost_micro_usd, self._cost_hwm.get(tenant, 0))
        for (tenant, outcome), n in sorted(self._finished_hwm.items()):
            finished.add_metric([tenant, outcome], n)
        for tenant, micro in sorted(self._cost_hwm.items()):
            cost.add_metric([tenant], float(micro_to_usd(micro)))
        yield requests
        yield finished
        yield cost

    def close(self) -> None:
        self._redis.close()
