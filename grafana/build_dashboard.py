"""Build the genqueue Grafana dashboard from code: ``grafana/dashboards/genqueue.json``.

The dashboard is generated with Grafana's typed ``grafana-foundation-sdk`` (a dev dependency)
and committed; ``tests/observability`` checks that the committed JSON equals what this module
builds, checks its structure, and evaluates every query on a real Prometheus.

    python grafana/build_dashboard.py           # rewrite the JSON
    python grafana/build_dashboard.py --check   # exit 1 if the committed JSON is stale

Query rules (so that every figure is true):

* Cluster figures come from ``genqueue exporter`` (read from Redis at scrape time). They are
  reduced with ``max by (<their labels>)`` before any ``sum``: a second exporter (a scaled
  service, an HA pair) would otherwise double them.
* Per-process figures (latency histograms, upstream calls, polls, re-armed timers) come from
  every worker and are summed across workers; ``rate``/``increase`` absorb worker restarts.
* "In range" totals of cluster counters are exact differences (now minus the value at the
  start of the range, or zero for series born inside it), not ``increase()``'s extrapolation.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from grafana_foundation_sdk.builders import bargauge, prometheus, stat, timeseries
from grafana_foundation_sdk.builders import common as common_builders
from grafana_foundation_sdk.builders import dashboard as dash
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models import dashboard as model

OUTPUT = Path(__file__).parent / "dashboards" / "genqueue.json"
UID = "genqueue"
DATASOURCE_VARIABLE = "datasource"
DATASOURCE = model.DataSourceRef(type_val="prometheus", uid="${" + DATASOURCE_VARIABLE + "}")
MODEL = 'model=~"$model"'
TENANT = 'tenant=~"$tenant"'

Kind = Literal["timeseries", "stat", "bargauge"]


@dataclass(frozen=True)
class Target:
    """One PromQL query of a panel (instant for single-value panels)."""

    expr: str
    legend: str = ""


@dataclass(frozen=True)
class PanelSpec:
    """What a panel shows; the layout flows left to right, 24 columns per line."""

    title: str
    description: str
    targets: tuple[Target, ...]
    kind: Kind = "timeseries"
    unit: str = "short"
    width: int = 8
    height: int = 8
    stacked: bool = False
    bars: bool = False
    #: value -> (text, colour) for stat panels (e.g. 0 -> running).
    mappings: dict[str, tuple[str, str]] = field(default_factory=dict)


@dataclass(frozen=True)
class Row:
    title: str
    panels: tuple[PanelSpec, ...]


# --- the queries ------------------------------------------------------------------------------


def _cluster(metric: str, by: str, selector: str = "") -> str:
    """A cluster metric deduplicated across exporters."""
    sel = "{" + selector + "}" if selector else ""
    return f"max by ({by}) ({metric}{sel})"


def _in_range(metric: str, by: str, selector: str = "") -> str:
    """A cluster counter's exact growth over the dashboard range, per ``by`` labels: now minus
    the value at the range's start (0 for series born inside the range)."""
    now = _cluster(metric, by, selector)
    sel = "{" + selector + "}" if selector else ""
    then = f"max by ({by}) ({metric}{sel} offset $__range)"
    return f"{now} - ({then} or {now} * 0)"


def _cluster_rate(metric: str, by: str, selector: str = "") -> str:
    sel = "{" + selector + "}" if selector else ""
    return f"max by ({by}) (rate({metric}{sel}[$__rate_interval]))"


def _quantiles(bucket_selector: str, by: str = "le") -> tuple[Target, ...]:
    return tuple(
        Target(
            f"histogram_quantile({q}, sum by ({by}) (rate({bucket_selector}[$__rate_interval])))",
            f"p{round(q * 100)}",
        )
        for q in (0.5, 0.95, 0.99)
    )


UPSTREAM_ERROR_CODES = "5..|timeout|connection_error|protocol_error"
FINISHED_IN_RANGE = _in_range("genqueue_requests_finished_total", "model, outcome", MODEL)

ROWS: tuple[Row, ...] = (
    Row(
        "Overview",
        (
            PanelSpec(
                "Workers alive",
                "Worker processes with a live heartbeat in Redis, and worker metrics "
                "endpoints Prometheus scrapes successfully.",
                (
                    Target("max(genqueue_workers_alive)", "heartbeat"),
                    Target('sum(up{job="genqueue-worker"})', "scraped"),
                ),
                kind="stat",
                width=4,
                height=5,
            ),
            PanelSpec(
                "Creates",
                "Whether upstream creates are paused for everyone by the circuit breaker "
                "(401/402/403 or an outage streak); `genqueue resume` ends a pause.",
                (Target("max(genqueue_creates_paused)"),),
                kind="stat",
                width=4,
                height=5,
                mappings={"0": ("running", "green"), "1": ("PAUSED", "red")},
            ),
            PanelSpec(
                "Upstream jobs in flight",
                "Upstream jobs holding a slot of the in-flight cap now.",
                (Target("max(genqueue_upstream_inflight)"),),
                kind="stat",
                width=4,
                height=5,
            ),
            PanelSpec(
                "Finished in range",
                "Requests that reached a terminal status during the dashboard's range "
                "(exact: cluster totals now minus at the range's start).",
                (Target(f"sum({FINISHED_IN_RANGE})"),),
                kind="stat",
                width=4,
                height=5,
            ),
            PanelSpec(
                "Spend in range",
                "Upstream cost recorded during the dashboard's range, in US dollars (exact).",
                (Target(f"sum({_in_range('genqueue_cost_usd_total', 'model', MODEL)})"),),
                kind="stat",
                unit="currencyUSD",
                width=4,
                height=5,
            ),
            PanelSpec(
                "Polls per video in range",
                "Status checks per finished request over the range (all workers; the "
                "naive 5 s loop makes ~36 for a 3-minute video).",
                (
                    Target(
                        f"sum(increase(genqueue_polls_total{{{MODEL}}}[$__range])) / "
                        f"sum({FINISHED_IN_RANGE})"
                    ),
                ),
                kind="stat",
                unit="none",
                width=4,
                height=5,
            ),
        ),
    ),
    Row(
        "Queue",
        (
            PanelSpec(
                "Queue depth",
                "arq timers due now (ready, including running ones) and deferred to later.",
                (Target(_cluster("genqueue_queue_depth", "state"), "{{state}}"),),
            ),
            PanelSpec(
                "Queue lag",
                "How long the oldest due timer has waited for a worker (a running job "
                "counts until it ends). Rising: the workers do not keep up.",
                (Target("max(genqueue_queue_lag_seconds)", "oldest due timer"),),
                unit="s",
            ),
            PanelSpec(
                "In flight by status",
                "Requests per non-terminal status, plus cancelled/expired requests whose "
                "billed upstream job is still tracked, and upstream jobs in flight.",
                (
                    Target(_cluster("genqueue_requests", "status"), "{{status}}"),
                    Target("max(genqueue_requests_tracking)", "tracking"),
                    Target("max(genqueue_upstream_inflight)", "upstream jobs in flight"),
                ),
            ),
        ),
    ),
    Row(
        "Throughput and latency",
        (
            PanelSpec(
                "Throughput by outcome",
                "Requests finishing per second by terminal status (completed, failed, "
                "cancelled, expired).",
                (
                    Target(
                        "sum by (outcome) ("
                        + _cluster_rate("genqueue_requests_finished_total", "model, outcome", MODEL)
                        + ")",
                        "{{outcome}}",
                    ),
                ),
                unit="reqps",
                width=12,
                stacked=True,
            ),
            PanelSpec(
                "Detection lag",
                "From the upstream finishing a job to genqueue recording it "
                "(p50/p95/p99, wall seconds).",
                _quantiles("genqueue_detection_lag_seconds_bucket"),
                unit="s",
                width=12,
            ),
            PanelSpec(
                "Latency: queue wait",
                "From enqueue to the upstream create (p50/p95/p99, wall seconds).",
                _quantiles(f'genqueue_request_duration_seconds_bucket{{phase="queue", {MODEL}}}'),
                unit="s",
            ),
            PanelSpec(
                "Latency: upstream generation",
                "From the upstream creating the job to finishing it, by its own clock "
                "(p50/p95/p99).",
                _quantiles(
                    f'genqueue_request_duration_seconds_bucket{{phase="upstream", {MODEL}}}'
                ),
                unit="s",
            ),
            PanelSpec(
                "Latency: end to end",
                "From enqueue to genqueue seeing the end (p50/p95/p99, wall seconds).",
                _quantiles(f'genqueue_request_duration_seconds_bucket{{phase="total", {MODEL}}}'),
                unit="s",
            ),
        ),
    ),
    Row(
        "Cost",
        (
            PanelSpec(
                "Cost per hour",
                "Upstream spend rate in US dollars per hour, all models and per model.",
                (
                    Target(
                        "sum("
                        + _cluster_rate("genqueue_cost_usd_total", "model", MODEL)
                        + ") * 3600",
                        "all models",
                    ),
                    Target(
                        _cluster_rate("genqueue_cost_usd_total", "model", MODEL) + " * 3600",
                        "{{model}}",
                    ),
                ),
                unit="currencyUSD",
                width=12,
            ),
            PanelSpec(
                "Spend by model in range",
                "Upstream cost recorded during the range per model, in US dollars (exact).",
                (Target(_in_range("genqueue_cost_usd_total", "model", MODEL), "{{model}}"),),
                kind="bargauge",
                unit="currencyUSD",
                width=12,
            ),
        ),
    ),
    Row(
        "Tenants",
        (
            PanelSpec(
                "Waiting and in flight by tenant",
                "Per tenant: requests waiting in its admission queue for an upstream slot, by "
                "why (cap: the in-flight cap is full; tenant_cap: its own; paused: creates "
                "paused), and in flight (submitting, queued, in progress).",
                (
                    Target(
                        _cluster("genqueue_tenant_waiting", "tenant, reason", TENANT),
                        "{{tenant}} waiting ({{reason}})",
                    ),
                    Target(
                        "sum by (tenant) ("
                        + _cluster(
                            "genqueue_tenant_requests",
                            "tenant, status",
                            TENANT + ', status=~"submitting|queued|in_progress"',
                        )
                        + ")",
                        "{{tenant}} in flight",
                    ),
                ),
                width=12,
            ),
            PanelSpec(
                "Throughput by tenant",
                "Requests finishing per second per tenant, by terminal status.",
                (
                    Target(
                        _cluster_rate(
                            "genqueue_tenant_requests_finished_total", "tenant, outcome", TENANT
                        ),
                        "{{tenant}} {{outcome}}",
                    ),
                ),
                unit="reqps",
                width=12,
            ),
            PanelSpec(
                "Cost per hour by tenant",
                "Upstream spend rate per tenant in US dollars per hour.",
                (
                    Target(
                        _cluster_rate("genqueue_tenant_cost_usd_total", "tenant", TENANT)
                        + " * 3600",
                        "{{tenant}}",
                    ),
                ),
                unit="currencyUSD",
                width=12,
            ),
            PanelSpec(
                "Spend by tenant in range",
                "Upstream cost recorded during the range per tenant, in US dollars (exact).",
                (
                    Target(
                        _in_range("genqueue_tenant_cost_usd_total", "tenant", TENANT), "{{tenant}}"
                    ),
                ),
                kind="bargauge",
                unit="currencyUSD",
                width=12,
            ),
            PanelSpec(
                "Spend against budget by tenant",
                "Per tenant with a spend budget: spent plus reserved (admitted videos not yet "
                "settled) as a share of its budget in the current UTC day or month. At 100 % "
                "its requests wait for the next period (alert GenqueueTenantBudget80 at 80 %).",
                (
                    Target(
                        _cluster("genqueue_tenant_budget_used_ratio", "tenant", TENANT),
                        "{{tenant}}",
                    ),
                ),
                kind="bargauge",
                unit="percentunit",
                width=12,
            ),
            PanelSpec(
                "Budget, spent and reserved",
                "The deployment's and each tenant's spend budget, spent and reserved in the "
                "budget's current period (UTC day or month), in US dollars.",
                (
                    Target(_cluster("genqueue_budget_usd", "period"), "deployment budget"),
                    Target("max(genqueue_budget_spent_usd)", "deployment spent"),
                    Target(
                        _cluster("genqueue_tenant_budget_usd", "tenant", TENANT),
                        "{{tenant}} budget",
                    ),
                    Target(
                        _cluster("genqueue_tenant_budget_spent_usd", "tenant", TENANT),
                        "{{tenant}} spent",
                    ),
                    Target(
                        _cluster("genqueue_tenant_budget_reserved_usd", "tenant", TENANT),
                        "{{tenant}} reserved",
                    ),
                ),
                unit="currencyUSD",
                width=12,
            ),
        ),
    ),
    Row(
        "Upstream",
        (
            PanelSpec(
                "Upstream error rate",
                "Share of upstream calls answered 5xx or failing in transport (timeout, "
                "connection, protocol), per operation.",
                (
                    Target(
                        "sum by (operation) (rate(genqueue_upstream_requests_total"
                        f'{{code=~"{UPSTREAM_ERROR_CODES}"}}[$__rate_interval])) / '
                        "sum by (operation) "
                        "(rate(genqueue_upstream_requests_total[$__rate_interval]))",
                        "{{operation}}",
                    ),
                ),
                unit="percentunit",
            ),
            PanelSpec(
                "Upstream 429 rate",
                "Upstream calls refused with 429 per second, and steps deferred by the "
                "shared local rate limit (GENQUEUE_RATE_LIMIT_RPS).",
                (
                    Target(
                        "sum by (operation) (rate(genqueue_upstream_requests_total"
                        '{code="429"}[$__rate_interval]))',
                        "429 {{operation}}",
                    ),
                    Target(
                        "sum by (operation) (rate(genqueue_rate_limited_total"
                        '{source="local"}[$__rate_interval]))',
                        "deferred by the local limit {{operation}}",
                    ),
                ),
                unit="reqps",
            ),
            PanelSpec(
                "Upstream errors by code",
                "Upstream calls per second that did not succeed, by HTTP code or "
                "transport outcome.",
                (
                    Target(
                        "sum by (code) (rate(genqueue_upstream_requests_total"
                        '{code!~"2.."}[$__rate_interval]))',
                        "{{code}}",
                    ),
                ),
                unit="reqps",
            ),
            PanelSpec(
                "Upstream call latency p95",
                "95th percentile duration of upstream HTTP calls, per operation.",
                (
                    Target(
                        "histogram_quantile(0.95, sum by (le, operation) (rate("
                        "genqueue_upstream_request_duration_seconds_bucket[$__rate_interval])))",
                        "{{operation}}",
                    ),
                ),
                unit="s",
                width=12,
            ),
            PanelSpec(
                "Upstream calls",
                "All upstream calls per second, by operation.",
                (
                    Target(
                        "sum by (operation) "
                        "(rate(genqueue_upstream_requests_total[$__rate_interval]))",
                        "{{operation}}",
                    ),
                ),
                unit="reqps",
                width=12,
            ),
        ),
    ),
    Row(
        "Efficiency and recovery",
        (
            PanelSpec(
                "Polls per video by model",
                "Status checks per finished request over the range, per model.",
                (
                    Target(
                        f"sum by (model) (increase(genqueue_polls_total{{{MODEL}}}[$__range])) / "
                        f"sum by (model) ({FINISHED_IN_RANGE})",
                        "{{model}}",
                    ),
                ),
                kind="bargauge",
                unit="none",
            ),
            PanelSpec(
                "Re-armed timers",
                "Lost timers the reconciler found and re-armed (a crash between two "
                "writes, Redis losing its last second); each is a request that would "
                "otherwise have stalled.",
                (
                    Target(
                        "sum(increase(genqueue_timers_rearmed_total[$__rate_interval]))",
                        "re-armed timers",
                    ),
                ),
                bars=True,
            ),
            PanelSpec(
                "Recovery events",
                "Ambiguous submits (a create that may have happened without genqueue "
                "learning the id), create pauses by code, unknown upstream statuses, "
                "webhooks and downloads given up on.",
                (
                    Target(
                        "sum(increase(genqueue_ambiguous_submits_total[$__rate_interval]))",
                        "ambiguous submits",
                    ),
                    Target(
                        "sum by (code) (increase(genqueue_create_pauses_total[$__rate_interval]))",
                        "create pause {{code}}",
                    ),
                    Target(
                        "sum(increase(genqueue_unknown_upstream_statuses_total[$__rate_interval]))",
                        "unknown upstream status",
                    ),
                    Target(
                        "sum(increase(genqueue_webhook_deliveries_total"
                        '{outcome="dead"}[$__rate_interval]))',
                        "webhooks given up",
                    ),
                    Target(
                        'sum(increase(genqueue_downloads_total{outcome="dead"}[$__rate_interval]))',
                        "downloads given up",
                    ),
                ),
                bars=True,
            ),
            PanelSpec(
                "Clock skew",
                "Each worker host's clock minus Redis' clock (timers use Redis' clock).",
                (Target("max by (instance) (genqueue_clock_skew_seconds)", "{{instance}}"),),
                unit="s",
                width=12,
            ),
            PanelSpec(
                "Side effects",
                "Webhook deliveries and video downloads per second, by outcome.",
                (
                    Target(
                        "sum by (outcome) "
                        "(rate(genqueue_webhook_deliveries_total[$__rate_interval]))",
                        "webhook {{outcome}}",
                    ),
                    Target(
                        "sum by (outcome) (rate(genqueue_downloads_total[$__rate_interval]))",
                        "download {{outcome}}",
                    ),
                ),
                unit="reqps",
                width=12,
            ),
        ),
    ),
)


# --- building -----------------------------------------------------------------------------------


def _query(target: Target, ref_id: str, instant: bool) -> prometheus.Dataquery:
    q = prometheus.Dataquery().expr(target.expr).ref_id(ref_id).datasource(DATASOURCE)
    if target.legend:
        q = q.legend_format(target.legend)
    return q.instant() if instant else q.range()


def _panel(spec: PanelSpec, panel_id: int) -> Any:
    instant = spec.kind != "timeseries"
    p: Any
    if spec.kind == "timeseries":
        p = (
            timeseries.Panel()
            .fill_opacity(10 if not spec.bars else 80)
            .line_width(1)
            .show_points(common.VisibilityMode.NEVER)
            .legend(
                common_builders.VizLegendOptions()
                .show_legend(True)
                .display_mode(common.LegendDisplayMode.LIST)
                .placement(common.LegendPlacement.BOTTOM)
            )
            .tooltip(
                common_builders.VizTooltipOptions()
                .mode(common.TooltipDisplayMode.MULTI)
                .sort(common.SortOrder.DESCENDING)
            )
        )
        if spec.bars:
            p = p.draw_style(common.GraphDrawStyle.BARS)
        if spec.stacked:
            p = p.stacking(common_builders.StackingConfig().mode(common.StackingMode.NORMAL))
    elif spec.kind == "stat":
        p = (
            stat.Panel()
            .graph_mode(common.BigValueGraphMode.NONE)
            .color_mode(common.BigValueColorMode.VALUE)
            .reduce_options(common_builders.ReduceDataOptions().calcs(["lastNotNull"]))
        )
        if spec.mappings:
            p = p.mappings(
                [
                    model.ValueMap(
                        options={
                            value: model.ValueMappingResult(text=text, color=colour, index=i)
                            for i, (value, (text, colour)) in enumerate(spec.mappings.items())
                        }
                    )
                ]
            )
    else:
        p = (
            bargauge.Panel()
            .display_mode(common.BarGaugeDisplayMode.BASIC)
            .orientation(common.VizOrientation.HORIZONTAL)
            .reduce_options(common_builders.ReduceDataOptions().calcs(["lastNotNull"]))
        )
    p = (
        p.id(panel_id)
        .title(spec.title)
        .description(spec.description)
        .datasource(DATASOURCE)
        .unit(spec.unit)
        .span(spec.width)
        .height(spec.height)
    )
    for i, target in enumerate(spec.targets):
        p = p.with_target(_query(target, chr(ord("A") + i), instant))
    return p


def _all_or_some(label: str, title: str, metric: str) -> dash.QueryVariable:
    """A multi-select variable over the values of ``label`` on ``metric``, All by default."""
    return (
        dash.QueryVariable(label)
        .label(title)
        .datasource(DATASOURCE)
        .query(f"label_values({metric}, {label})")
        .refresh(model.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(model.VariableSort.ALPHABETICAL_ASC)
        .multi(True)
        .include_all(True)
        .all_value(".*")
        .current(model.VariableOption(selected=True, text="All", value="$__all"))
    )


def build() -> dict[str, Any]:
    """The dashboard as a JSON-ready dict."""
    d = (
        dash.Dashboard("genqueue")
        .uid(UID)
        .description(
            "genqueue: queue depth, throughput, latency, cost and upstream health. "
            "Reference: docs/monitoring.md."
        )
        .tags(["genqueue"])
        .editable()
        .time("now-3h", "now")
        .refresh("30s")
        .timezone("browser")
        .tooltip(model.DashboardCursorSync.CROSSHAIR)
        .annotation(
            dash.AnnotationQuery()
            .name("Annotations & Alerts")
            .datasource(model.DataSourceRef(type_val="grafana", uid="-- Grafana --"))
            .enable(True)
            .hide(True)
            .icon_color("rgba(0, 211, 255, 1)")
            .type("dashboard")
            .built_in(1)
        )
        .with_variable(
            dash.DatasourceVariable(DATASOURCE_VARIABLE).label("Data source").type("prometheus")
        )
        .with_variable(_all_or_some("model", "Model", "genqueue_requests_finished_total"))
        .with_variable(_all_or_some("tenant", "Tenant", "genqueue_tenant_requests"))
    )
    panel_id = 1
    for row in ROWS:
        d = d.with_row(dash.Row(row.title).id(panel_id))
        panel_id += 1
        for spec in row.panels:
            d = d.with_panel(_panel(spec, panel_id))
            panel_id += 1
    data: dict[str, Any] = json.loads(json.dumps(d.build(), cls=JSONEncoder))
    return data


def render() -> str:
    """The dashboard JSON exactly as committed."""
    return json.dumps(build(), indent=2, sort_keys=True) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the JSON is stale")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        if not OUTPUT.exists() or OUTPUT.read_text() != text:
            print(f"{OUTPUT} is stale: run python grafana/build_dashboard.py", file=sys.stderr)
            return 1
        print(f"{OUTPUT}: up to date")
        return 0
    OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    OUTPUT.write_text(text)
    print(f"wrote {OUTPUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
