"""Spend against budget as Prometheus gauges (``producer/budgets.py``): the deployment's in
``ClusterCollector``, each tenant's in ``TenantCollector`` (labels: configured tenants only)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from prometheus_client.core import GaugeMetricFamily, Metric

from genqueue.producer.budgets import BudgetLine
from genqueue.producer.record import micro_to_usd


def budget_metrics(
    name: str, whose: str, lines: Sequence[tuple[tuple[str, ...], BudgetLine]], labels: list[str]
) -> Iterator[Metric]:
    """Spend against budget in the budget's current period (the UTC day's where there is no
    budget): gauges, since each period starts from zero."""
    budget = GaugeMetricFamily(
        f"{name}_usd",
        f"Spend budget in US dollars per period (day or month, UTC), {whose}.",
        labels=[*labels, "period"],
    )
    spent = GaugeMetricFamily(
        f"{name}_spent_usd",
        f"Spent in the budget's current period (unknown costs at their estimate), {whose}.",
        labels=labels,
    )
    reserved = GaugeMetricFamily(
        f"{name}_reserved_usd",
        f"Reserved for admitted videos not yet settled, in the current period, {whose}.",
        labels=labels,
    )
    used = GaugeMetricFamily(
        f"{name}_used_ratio",
        f"(spent + reserved) / budget in the current period, {whose} (only with a budget).",
        labels=labels,
    )
    for values, line in lines:
        cur = line.current
        spent.add_metric(list(values), float(micro_to_usd(cur.spent)))
        reserved.add_metric(list(values), float(micro_to_usd(cur.reserved)))
        if line.budget is not None:
            budget.add_metric(
                [*values, line.budget.period], float(micro_to_usd(line.budget.micro_usd))
            )
            share = line.used_share
            used.add_metric(list(values), share if share is not None else 0.0)
    yield from (budget, spent, reserved, used)
