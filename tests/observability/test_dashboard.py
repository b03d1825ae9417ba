"""The Grafana dashboard and its provisioning: generated from code, well-formed, wired up."""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.dashboard import Dashboard
from prometheus_client import CollectorRegistry, Metric

from genqueue.producer.settings import Settings
from genqueue.worker.exporter_metrics import ExporterCollector
from genqueue.worker.metrics import WorkerMetrics
from tests.observability.tools import (
    COMPOSE,
    DASHBOARD,
    MONITORING_DOC,
    PROMETHEUS_CONFIG,
    PROVISIONING,
    ROOT,
    alert_rules,
    dashboard,
    load_yaml,
    panels,
    substitute,
)

#: What the issue asks the dashboard to show, and the panel titles that show it.
REQUIRED_PANELS = {
    "queue depth": ["Queue depth"],
    "in-flight by status": ["In flight by status"],
    "throughput by outcome": ["Throughput by outcome"],
    "latency p50/p95/p99 per phase": [
        "Latency: queue wait",
        "Latency: upstream generation",
        "Latency: end to end",
    ],
    "detection lag": ["Detection lag"],
    "cost per hour and per model": ["Cost per hour", "Spend by model in range"],
    "upstream error and 429 rates": ["Upstream error rate", "Upstream 429 rate"],
    "polls per video": ["Polls per video in range", "Polls per video by model"],
    "re-armed timers": ["Re-armed timers"],
}
METRIC = re.compile(r"\b(genqueue_[a-z0-9_]+|up)\b")
#: A cluster metric must be deduplicated across exporters right where it is selected ...
DEDUPED = re.compile(r"(?:max|min)(?: by \([^()]*\))? ?\((?:rate\(|increase\()?$")
#: ... and a per-process counter or histogram summed across workers.
SUMMED = re.compile(r"sum(?: by \([^()]*\))? ?\((?:rate\(|increase\()?$")


def _load_builder() -> ModuleType:
    path = ROOT / "grafana" / "build_dashboard.py"
    spec = importlib.util.spec_from_file_location("genqueue_build_dashboard", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def _samples(family: Metric) -> set[str]:
    """The sample names a metric family is scraped as."""
    if family.type == "counter":
        return {family.name + "_total"}
    if family.type == "histogram":
        return {family.name + s for s in ("_bucket", "_sum", "_count")}
    return {family.name}


@pytest.fixture
def exported(settings: Settings) -> Iterator[tuple[set[str], set[str]]]:
    """(per-process sample names, cluster sample names) as genqueue exports them."""
    per_process = {n for f in WorkerMetrics().registry.collect() for n in _samples(f)}
    collector = ExporterCollector(settings)
    registry = CollectorRegistry()
    registry.register(collector)
    cluster = {n for f in registry.collect() for n in _samples(f)}
    collector.close()
    yield per_process, cluster


def _exprs() -> Iterator[tuple[str, str]]:
    for panel in panels(dashboard()):
        for target in panel["targets"]:
            yield panel["title"], target["expr"]
    for rule in alert_rules():
        yield rule["alert"], rule["expr"]


def test_committed_dashboard_is_the_generated_one() -> None:
    """grafana/dashboards/genqueue.json is exactly what grafana/build_dashboard.py builds."""
    builder = _load_builder()
    assert DASHBOARD.read_text() == builder.render(), (
        "stale dashboard: run `.venv/bin/python grafana/build_dashboard.py`"
    )


def test_dashboard_round_trips_through_grafanas_typed_model() -> None:
    """The JSON parses into the SDK's typed Dashboard and back without losing a field."""
    data = dashboard()
    again = json.loads(json.dumps(Dashboard.from_json(data), cls=JSONEncoder))
    assert again == data


def test_dashboard_shows_every_figure_the_issue_asks_for() -> None:
    """Each requested figure has its panels, each with at least one query."""
    by_title = {p["title"]: p for p in panels(dashboard())}
    for figure, titles in REQUIRED_PANELS.items():
        for title in titles:
            assert title in by_title, f"{figure}: no panel {title!r}"
            assert by_title[title]["targets"], title


def test_panels_are_well_formed() -> None:
    """Unique ids, datasource variable everywhere, unique refIds, a 24-column grid without
    overlaps, and only known Grafana variables in the queries."""
    board = dashboard()
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert variables["model"]["datasource"]["uid"] == "${datasource}"
    cells: set[tuple[int, int]] = set()
    for p in board["panels"]:
        g = p["gridPos"]
        assert g["x"] >= 0 and g["w"] > 0 and g["x"] + g["w"] <= 24, p.get("title")
        mine = {
            (x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])
        }
        assert not mine & cells, f"{p.get('title')} overlaps another panel"
        cells |= mine
    for p in panels(board):
        assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
        assert p["description"], p["title"]
        refs = [t["refId"] for t in p["targets"]]
        assert len(refs) == len(set(refs)), p["title"]
        for t in p["targets"]:
            assert t["datasource"] == p["datasource"]
            assert t.get("instant") is (p["type"] != "timeseries"), p["title"]
            substitute(t["expr"], rate_interval="1m", interval="15s", range_="1h")  # known vars


def test_every_query_names_a_metric_genqueue_exports(
    exported: tuple[set[str], set[str]],
) -> None:
    """Every metric a panel or alert queries is exported by the workers or the exporter."""
    per_process, cluster = exported
    known = per_process | cluster | {"up"}
    for where, expr in _exprs():
        for name in METRIC.findall(expr):
            assert name in known, f"{where}: {name} is not exported"


def test_cluster_figures_are_deduplicated_and_worker_figures_summed(
    exported: tuple[set[str], set[str]],
) -> None:
    """Cluster metrics are reduced with max/min (a second exporter doubles nothing) and
    per-process counters and histograms with sum (every worker counts)."""
    per_process, cluster = exported
    gauges = {"genqueue_clock_skew_seconds"}  # per host: shown per instance
    for where, expr in _exprs():
        for m in METRIC.finditer(expr):
            name, before = m.group(1), expr[: m.start()]
            if name in cluster:
                assert DEDUPED.search(before), f"{where}: {name} is not deduplicated: {expr}"
            elif name in per_process - gauges:
                assert SUMMED.search(before), f"{where}: {name} is not summed: {expr}"


def test_provisioning_points_at_the_compose_prometheus_and_dashboards() -> None:
    """The datasource is the compose Prometheus at its scrape interval, and the dashboard
    provider reads the folder compose mounts the dashboards into."""
    compose = load_yaml(COMPOSE)["services"]
    (source,) = load_yaml(PROVISIONING / "datasources" / "prometheus.yml")["datasources"]
    assert source["type"] == "prometheus" and source["isDefault"] is True
    assert source["url"] == "http://prometheus:9090"
    assert "9090:9090" in compose["prometheus"]["ports"]
    scrape = load_yaml(PROMETHEUS_CONFIG)["global"]["scrape_interval"]
    assert source["jsonData"]["timeInterval"] == scrape

    (provider,) = load_yaml(PROVISIONING / "dashboards" / "genqueue.yml")["providers"]
    mounts = dict(v.split(":")[:2] for v in compose["grafana"]["volumes"])
    assert mounts["./grafana/dashboards"] == provider["options"]["path"]
    assert mounts["./grafana/provisioning"] == "/etc/grafana/provisioning"
    env = compose["grafana"]["environment"]
    home = Path(env["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"])
    assert (
        ROOT / "grafana" / "dashboards" / home.relative_to(provider["options"]["path"])
    ).exists()
    assert env["GF_AUTH_ANONYMOUS_ENABLED"] == "true"
    assert env["GF_AUTH_ANONYMOUS_ORG_ROLE"] == "Viewer"


def test_monitoring_doc_describes_every_metric_panel_and_alert(
    exported: tuple[set[str], set[str]],
) -> None:
    """docs/monitoring.md names every exported metric, every panel and every alert."""
    doc = MONITORING_DOC.read_text()
    per_process, cluster = exported
    families = {re.sub(r"_(bucket|sum|count)$", "", n) for n in per_process | cluster}
    missing = [n for n in sorted(families) if f"`{n}" not in doc]
    missing += [p["title"] for p in panels(dashboard()) if f"**{p['title']}**" not in doc]
    missing += [r["alert"] for r in alert_rules() if f"`{r['alert']}`" not in doc]
    assert not missing, f"docs/monitoring.md does not describe: {missing}"
