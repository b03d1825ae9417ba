"""Prometheus' configuration and alert rules, checked by promtool, and their compose wiring."""

from __future__ import annotations

import re
import subprocess

from tests.observability.tools import (
    ALERT_TESTS,
    ALERTS,
    COMPOSE,
    PROMETHEUS_CONFIG,
    PROMETHEUS_DIR,
    PrometheusTools,
    alert_rules,
    dashboard,
    load_yaml,
    panels,
)


def _promtool(tools: PrometheusTools, *args: str) -> str:
    done = subprocess.run(
        [tools.promtool, *args],
        cwd=PROMETHEUS_DIR,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout + done.stderr


def test_prometheus_config_passes_promtool(prometheus_tools: PrometheusTools) -> None:
    """`promtool check config` accepts the compose Prometheus config and its rule file."""
    out = _promtool(prometheus_tools, "check", "config", PROMETHEUS_CONFIG.name)
    assert "SUCCESS" in out


def test_alert_rules_pass_promtool_check(prometheus_tools: PrometheusTools) -> None:
    """`promtool check rules` accepts every alert rule."""
    out = _promtool(prometheus_tools, "check", "rules", ALERTS.name)
    assert f"SUCCESS: {len(alert_rules())} rules found" in out


def test_alert_rules_pass_their_promtool_tests(prometheus_tools: PrometheusTools) -> None:
    """`promtool test rules` passes, with a case for every alert (firing and quiet)."""
    _promtool(prometheus_tools, "test", "rules", ALERT_TESTS.name)
    cases = load_yaml(ALERT_TESTS)["tests"]
    tested = {c["alertname"] for case in cases for c in case.get("alert_rule_test", [])}
    fired = {
        c["alertname"]
        for case in cases
        for c in case.get("alert_rule_test", [])
        if c.get("exp_alerts")
    }
    names = {r["alert"] for r in alert_rules()}
    assert names == tested, f"alerts without a test case: {names - tested}"
    assert names == fired, f"alerts never shown firing: {names - fired}"


def test_the_alerts_users_expect_exist() -> None:
    """Queue backing up, upstream errors, spend per hour and no worker alive are covered,
    each with a severity, a summary and a wait before firing."""
    rules = {r["alert"]: r for r in alert_rules()}
    for name in (
        "GenqueueQueueBackingUp",
        "GenqueueUpstreamErrorRate",
        "GenqueueSpendHigh",
        "GenqueueNoWorkerAlive",
    ):
        assert name in rules
    for rule in rules.values():
        assert rule["labels"]["severity"] in ("warning", "critical")
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]
        assert rule.get("for"), rule["alert"]


def test_compose_wires_prometheus_to_workers_and_exporter() -> None:
    """Prometheus finds every worker replica by DNS on their metrics port, scrapes the one
    exporter, and the job names the dashboard and alerts use are the config's."""
    services = load_yaml(COMPOSE)["services"]
    config = load_yaml(PROMETHEUS_CONFIG)
    jobs = {j["job_name"]: j for j in config["scrape_configs"]}

    (dns,) = jobs["genqueue-worker"]["dns_sd_configs"]
    worker = services["worker"]
    assert dns["names"] == ["worker"] and dns["type"] == "A"
    assert worker["environment"]["GENQUEUE_METRICS_PORT"] == str(dns["port"])
    assert str(dns["port"]) in worker["expose"]
    assert worker["deploy"]["replicas"] >= 2

    (static,) = jobs["genqueue-exporter"]["static_configs"]
    host, port = static["targets"][0].split(":")
    exporter = services[host]
    assert exporter["command"][:1] == ["exporter"] and port in exporter["command"]
    assert exporter.get("deploy", {}).get("replicas", 1) == 1

    prometheus = services["prometheus"]
    assert "./deploy/prometheus:/etc/prometheus:ro" in prometheus["volumes"]
    assert "--config.file=/etc/prometheus/prometheus.yml" in prometheus["command"]
    for rule_file in config["rule_files"]:
        assert (PROMETHEUS_DIR / rule_file).exists()

    queried = " ".join(
        [t["expr"] for p in panels(dashboard()) for t in p["targets"]]
        + [r["expr"] for r in load_yaml(ALERTS)["groups"][0]["rules"]]
    )
    assert set(re.findall(r'job="([^"]+)"', queried)) <= set(jobs)


def test_compose_runs_the_whole_stack() -> None:
    """Redis with AOF, a volume and a healthcheck; scaled workers; exporter, gateway,
    Prometheus and Grafana; the simulator only under the sim profile."""
    services = load_yaml(COMPOSE)["services"]
    assert {"redis", "worker", "exporter", "gateway", "simulator", "prometheus", "grafana"} <= set(
        services
    )
    redis = services["redis"]
    assert "--appendonly" in redis["command"] and redis["volumes"] and redis["healthcheck"]
    assert services["simulator"]["profiles"] == ["sim"]
    assert all("profiles" not in s for n, s in services.items() if n != "simulator")
