"""What ``genqueue exporter`` serves: the cluster's and the tenants' metrics from ONE stats
snapshot per scrape (two collectors reading their own would send every stats command twice).
"""

from __future__ import annotations

from collections.abc import Iterator

import redis
from prometheus_client import CollectorRegistry
from prometheus_client.core import Metric
from prometheus_client.registry import Collector

from genqueue.producer.settings import Settings
from genqueue.worker.cluster_metrics import ClusterCollector, redis_up
from genqueue.worker.tenant_metrics import TenantCollector


class ExporterCollector(Collector):
    """``ClusterCollector``'s and ``TenantCollector``'s metrics, read together: one clock
    round trip, one pipeline of stats commands, then the health keys' scan."""

    def __init__(self, settings: Settings, client: redis.Redis | None = None) -> None:
        self._cluster = ClusterCollector(settings, client)
        # Same connection; each keeps its own high-water marks (rule 10).
        self._tenants = TenantCollector(settings, self._cluster._redis)

    def collect(self) -> Iterator[Metric]:
        try:
            replies, (configured,), now = self._cluster._read(self._tenants.tenants_command())
            stats = self._cluster.parse(replies, now)
            alive = self._cluster.alive()
        except (redis.RedisError, OSError):
            yield redis_up(False)
            return
        by_tenant = self._tenants.parse(replies, configured, now, self._cluster._budget_clock)
        yield from self._cluster.metrics(stats, alive)
        yield from self._tenants.metrics(by_tenant)

    def close(self) -> None:
        self._cluster.close()


def exporter_registry(settings: Settings, client: redis.Redis | None = None) -> CollectorRegistry:
    """A registry with the exporter's collector (the caller closes nothing: it lives as long
    as the process)."""
    registry = CollectorRegistry()
    registry.register(ExporterCollector(settings, client))
    return registry
