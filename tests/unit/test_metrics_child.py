"""``WorkerMetrics.child`` is ``labels()`` looked up once."""

from __future__ import annotations

from genqueue.worker.metrics import WorkerMetrics


def test_child_is_the_labelled_series_and_counts_into_it() -> None:
    """The kept child is the series ``labels()`` names: increments through either add up."""
    m = WorkerMetrics()
    m.child(m.polls, "model-a").inc()
    m.child(m.polls, "model-a").inc()
    m.polls.labels("model-a").inc()
    m.child(m.polls, "model-b").inc()
    assert m.registry.get_sample_value("genqueue_polls_total", {"model": "model-a"}) == 3
    assert m.registry.get_sample_value("genqueue_polls_total", {"model": "model-b"}) == 1
    assert m.child(m.polls, "model-a") is m.polls.labels("model-a")
