"""Cluster-wide metrics read from Redis at scrape time (one exporter for the whole cluster).

Everything here is the same whichever process asks, so it must be exported once (by
``genqueue exporter``), never by every worker: Prometheus would otherwise multiply it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import redis
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from genqueue.producer.connections import sync_redis
from genqueue.producer.keys import NON_TERMINAL
from genqueue.producer.record import micro_to_usd
from genqueue.producer.settings import Settings
from genqueue.producer.stats import (
    Stats,
    clock_commands,
    parse_clock,
    parse_stats,
    stats_commands,
)
from genqueue.worker.budget_metrics import budget_metrics


class StatsCollector(Collector):
    """A Prometheus collector over the stats snapshot, read from Redis at each scrape, with
    totals that never go backwards, even if Redis lost its last second of writes (rule 10)."""

    def __init__(self, settings: Settings, client: redis.Redis | None = None) -> None:
        self._settings = settings
        self._redis = client or sync_redis(
            settings.redis_url, decode_responses=True, socket_timeout=5, socket_connect_timeout=5
        )
        self._finished_hwm: dict[tuple[str, str], int] = {}
        self._cost_hwm: dict[str, int] = {}
        self._budget_clock: int | None = None

    def _read(self, *extra: tuple[str, ...]) -> tuple[list[Any], list[Any], int]:
        """The stats commands' replies (budgets' included), then ``extra`` commands' replies,
        and Redis' now (ms), in one pipeline after the clock's."""
        with self._redis.pipeline(transaction=False) as pipe:
            for cmd in clock_commands(self._settings.keys):
                pipe.execute_command(*cmd)  # type: ignore[no-untyped-call]
            now, self._budget_clock = parse_clock(pipe.execute())
        commands = stats_commands(self._settings.keys, now, self._budget_clock)
        with self._redis.pipeline(transaction=False) as pipe:
            for cmd in [*commands, *extra]:
                pipe.execute_command(*cmd)  # type: ignore[no-untyped-call]
            replies = pipe.execute()
        return replies[: len(commands)], replies[len(commands) :], now

    def _finished_high(self, key: tuple[str, str], n: int) -> None:
        self._finished_hwm[key] = max(n, self._finished_hwm.get(key, 0))

    def _cost_high(self, key: str, micro: int) -> None:
        self._cost_hwm[key] = max(micro, self._cost_hwm.get(key, 0))

    def close(self) -> None:
        self._redis.close()


def redis_up(answered: bool) -> Metric:
    """``genqueue_redis_up``: whether Redis answered this scrape."""
    up = GaugeMetricFamily("genqueue_redis_up", "1 if Redis answered this scrape.")
    up.add_metric([], 1 if answered else 0)
    return up


class ClusterCollector(StatsCollector):
    """A Prometheus collector over one Redis snapshot per scrape."""

    def snapshot(self) -> tuple[Stats, int]:
        """The stats and the number of live workers, read in two round trips."""
        replies, _, now = self._read()
        return self.parse(replies, now), self.alive()

    def parse(self, replies: list[Any], now: int) -> Stats:
        """The cluster's stats from the replies of ``_read``."""
        return parse_stats(replies, now, budget_clock_ms=self._budget_clock)

    def alive(self) -> int:
        """Worker processes with a live health key."""
        prefix = self._settings.keys.prefix
        return sum(1 for _ in self._redis.scan_iter(f"{prefix}:health:*", count=1000))

    def collect(self) -> Iterator[Metric]:
        try:
            stats, alive = self.snapshot()
        except (redis.RedisError, OSError):
            yield redis_up(False)
            return
        yield from self.metrics(stats, alive)

    def metrics(self, stats: Stats, alive: int) -> Iterator[Metric]:
        """The cluster's metrics from one snapshot (``genqueue_redis_up`` 1 first)."""
        yield redis_up(True)

        depth = GaugeMetricFamily(
            "genqueue_queue_depth",
            "arq timers due now (ready, including running ones) or later (deferred).",
            labels=["state"],
        )
        depth.add_metric(["ready"], stats.queue_ready)
        depth.add_metric(["deferred"], stats.queue_deferred)
        yield depth

        lag = GaugeMetricFamily(
            "genqueue_queue_lag_seconds",
            "Age of the oldest due timer (0 when none is due): how far behind the workers are.",
        )
        lag.add_metric([], stats.queue_lag_ms / 1000)
        yield lag

        by_status = GaugeMetricFamily(
            "genqueue_requests", "Requests per non-terminal status.", labels=["status"]
        )
        for status in NON_TERMINAL:
            by_status.add_metric([status], stats.requests_by_status.get(status, 0))
        yield by_status

        tracking = GaugeMetricFamily(
            "genqueue_requests_tracking",
            "Cancelled or expired requests whose billed upstream job is still being polled.",
        )
        tracking.add_metric([], stats.tracking)
        yield tracking

        inflight = GaugeMetricFamily(
            "genqueue_upstream_inflight",
            "Upstream jobs in flight (the in-flight cap counts these, and the slots admission "
            "reserved for creates not started yet).",
        )
        inflight.add_metric([], stats.active_upstream)
        yield inflight

        finished = CounterMetricFamily(
            "genqueue_requests_finished",
            "Requests that reached a terminal status, by model and outcome.",
            labels=["model", "outcome"],
        )
        for key, n in stats.finished.items():
            self._finished_high(key, n)
        for (model, outcome), n in sorted(self._finished_hwm.items()):
            finished.add_metric([model, outcome], n)
        yield finished

        cost = CounterMetricFamily(
            "genqueue_cost_usd",
            "Upstream cost recorded, in US dollars, by model.",
            labels=["model"],
        )
        for model, micro in stats.cost_micro_usd.items():
            self._cost_high(model, micro)
        for model, micro in sorted(self._cost_hwm.items()):
            cost.add_metric([model], float(micro_to_usd(micro)))
        yield cost

        yield from self._uncertain_spend(stats)

        paused = GaugeMetricFamily(
            "genqueue_creates_paused", "1 while upstream creates are paused for everyone."
        )
        paused.add_metric([], 1 if stats.paused else 0)
        yield paused

        workers = GaugeMetricFamily(
            "genqueue_workers_alive", "Worker processes with a live heartbeat."
        )
        workers.add_metric([], alive)
        yield workers

        if stats.budget is not None:
            yield from budget_metrics(
                "genqueue_budget", "for the whole deployment", [((), stats.budget.deployment)], []
            )

    def _uncertain_spend(self, stats: Stats) -> Iterator[Metric]:
        """Spend the recorded cost can't state: possibly billed attempts (and their
        estimate), completed jobs of unknown cost, superseded jobs. Labels: the totals'
        models, bounded (a model the upstream never accepted is ``other``)."""
        possibly = GaugeMetricFamily(
            "genqueue_possibly_billed",
            "Create attempts that may have created an upstream job nobody can find, by model.",
            labels=["model"],
        )
        estimate = GaugeMetricFamily(
            "genqueue_possibly_billed_usd",
            "Possible unrecorded spend: possibly billed attempts at the model's mean recorded "
            "cost, in US dollars.",
            labels=["model"],
        )
        priced = stats.possibly_billed_estimate_micro_usd
        for model, n in sorted(stats.possibly_billed.items()):
            possibly.add_metric([model], n)
            estimate.add_metric([model], float(micro_to_usd(priced.get(model, 0))))
        unknown = GaugeMetricFamily(
            "genqueue_cost_unknown_jobs",
            "Completed upstream jobs whose cost was missing or unusable, by model.",
            labels=["model"],
        )
        for model, n in sorted(stats.cost_unknown.items()):
            unknown.add_metric([model], n)
        superseded = GaugeMetricFamily(
            "genqueue_superseded_jobs_running",
            "Superseded upstream jobs still checked (each holds an upstream slot).",
        )
        superseded.add_metric([], stats.superseded_running)
        yield from (possibly, estimate, unknown, superseded)
