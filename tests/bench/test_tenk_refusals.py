"""The 10k run reads the shared rate limit's refusals off each worker's metrics endpoint."""

from __future__ import annotations

from prometheus_client import generate_latest

from bench.tenk import _local_refusals
from genqueue.worker.metrics import WorkerMetrics


def test_local_refusals_are_read_by_operation_and_upstream_429s_left_out() -> None:
    """Only the local limit's refusals count, split into creates and retrieves."""
    metrics = WorkerMetrics()
    metrics.rate_limited.labels("local", "create").inc(3)
    metrics.rate_limited.labels("local", "retrieve").inc(5)
    metrics.rate_limited.labels("upstream", "retrieve").inc(7)
    text = generate_latest(metrics.registry).decode()
    assert _local_refusals(text) == {"create": 3, "retrieve": 5}
