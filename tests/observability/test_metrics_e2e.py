"""The proof: the dashboard and the alert rules, evaluated by a real Prometheus on a real run.

Two workers and two exporters (one restarted midway) run a small demo against a faulty
simulator while Prometheus scrapes them every second. The demo forces every kind of event a
panel shows (failures, 429s, 5xx, a re-armed timer, a cancel, webhooks, downloads). Then every
PromQL expression of the dashboard and of the alert rules goes through Prometheus' HTTP API
with Grafana's macros substituted, and the totals are compared with the ground truth: the
records in Redis and the simulator's own books.
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections import Counter
from dataclasses import replace
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from genqueue.local_redis import free_port
from genqueue.producer import Client, Settings
from genqueue.producer.budgets import Budget, set_tenant_budget
from genqueue.producer.keys import TERMINAL, Field, timer_job_id
from genqueue.producer.record import micro_to_usd
from tests.observability.stack import (
    Processes,
    PrometheusAPI,
    finite_values,
    http_ok,
    label_values,
    prometheus_config,
    scrape,
    wait_until,
)
from tests.observability.tools import (
    ALERTS,
    PrometheusTools,
    alert_rules,
    dashboard,
    panels,
    substitute,
)

TIME_SCALE = 0.01
SCRAPE_S = 1
#: Grafana: $__rate_interval = max($__interval + scrape interval, 4 x scrape interval).
RATE_INTERVAL = f"{4 * SCRAPE_S}s"
FAST_MODELS = ("google/veo-3.0-fast", "pixverse/pixverse-v5")
SLOW_MODEL = "openai/sora-2-pro"  # ~2.4 s at this scale: in flight long enough to lose a timer
VIDEOS_PER_MODEL = 25
SLOW_VIDEOS = 4
WEBHOOK_EVERY = 4
SECRET = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
FAULTS = "none,error_5xx_share=0.08,rate_limit_share=0.05,rate_limit_retry_s=0.2"

#: Panels whose figures must be positive at some point in the run, by a series' labels
#: ({} = any series): the demo forces these events.
MUST_BE_POSITIVE: dict[str, list[dict[str, str]]] = {
    "Queue depth": [{"state": "ready"}, {"state": "deferred"}],
    "In flight by status": [{}],
    "Throughput by outcome": [{"outcome": "completed"}, {"outcome": "failed"}],
    "Detection lag": [{}],
    "Latency: queue wait": [{}],
    "Latency: upstream generation": [{}],
    "Latency: end to end": [{}],
    "Cost per hour": [{}],
    "Upstream error rate": [{}],
    "Upstream 429 rate": [{}],
    "Upstream errors by code": [{"code": "429"}],
    "Upstream call latency p95": [{"operation": "create"}, {"operation": "retrieve"}],
    "Upstream calls": [{"operation": "create"}, {"operation": "retrieve"}],
    "Re-armed timers": [{}],
    "Side effects": [{}],
    "Polls per video by model": [{}],
    "Polls per video in range": [{}],
    "Spend by model in range": [{}],
    "Finished in range": [{}],
    "Spend in range": [{}],
    "Workers alive": [{}],
}


class _Hooks(BaseHTTPRequestHandler):
    received: list[str] = []

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length", "0"))
        self.rfile.read(length)
        self.received.append(self.headers.get("webhook-id", ""))
        self.send_response(204)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


def _matches(series: dict[str, Any], labels: dict[str, str]) -> bool:
    return all(series["metric"].get(k) == v for k, v in labels.items())


def _lose_timers(r: redis.Redis, settings: Settings, ids: list[str]) -> int:
    """Delete the current poll timer of each live request (as a crash between two writes
    would): the reconciler must find and re-arm it. How many were deleted."""
    deleted = 0
    for rid in ids:
        timer, seq, status = r.hmget(
            settings.keys.record(rid), [Field.TIMER, Field.SEQ, Field.STATUS]
        )
        if timer != "poll" or status in TERMINAL or seq is None:
            continue
        job_id = timer_job_id("poll", rid, int(seq))
        with r.pipeline(transaction=True) as pipe:
            pipe.zrem(settings.keys.queue, job_id)
            pipe.delete(f"arq:job:{job_id}")
            removed, _ = pipe.execute()
        deleted += int(removed)
    return deleted


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_dashboard_and_alerts_hold_on_a_real_prometheus(
    tmp_path: Path, settings: Settings, prometheus_tools: PrometheusTools
) -> None:
    """Every dashboard and alert expression parses and evaluates on a real Prometheus, every
    panel has data after a demo that forces each event, and the totals equal the ground truth."""
    started = time.monotonic()
    sim_port, prom_port = free_port(), free_port()
    worker_ports = [free_port(), free_port()]
    exporter_ports = [free_port(), free_port()]
    hooks = ThreadingHTTPServer(("127.0.0.1", 0), _Hooks)
    _Hooks.received = []
    threading.Thread(target=hooks.serve_forever, daemon=True).start()
    hook_url = f"http://127.0.0.1:{hooks.server_address[1]}/hook"

    env = dict(os.environ)
    env.update(
        GENQUEUE_REDIS_URL=settings.redis_url,
        GENQUEUE_KEY_PREFIX=settings.key_prefix,
        GENQUEUE_UPSTREAM_URL=f"http://127.0.0.1:{sim_port}",
        TOGETHER_API_KEY="sim-key",
        GENQUEUE_TIME_SCALE=str(TIME_SCALE),
        GENQUEUE_POLL_DELAY_S="0.02",
        GENQUEUE_RECONCILE_INTERVAL_S="1",
        GENQUEUE_RECONCILE_GRACE_S="30",  # scaled: 0.3 s
        GENQUEUE_TASK_TIMEOUT_S="6",
        GENQUEUE_CONNECT_TIMEOUT_S="1",
        GENQUEUE_READ_TIMEOUT_S="3",
        GENQUEUE_WEBHOOK_SECRET=SECRET,
        # The webhook receiver is on loopback: opened explicitly (docs/security.md).
        GENQUEUE_OUTBOUND_ALLOW_NETS="127.0.0.0/8",
        GENQUEUE_DOWNLOAD_DIR=str(tmp_path / "videos"),
        GENQUEUE_LOG_FORMAT="json",
        GENQUEUE_LOG_LEVEL="WARNING",
    )
    env.pop("GENQUEUE_METRICS_PORT", None)
    procs = Processes(tmp_path, env)
    api = PrometheusAPI(prom_port)
    r = redis.Redis.from_url(settings.redis_url, decode_responses=True)
    try:
        # --- the stack ---------------------------------------------------------------------
        procs.genqueue(
            "simulator", "simulator", "--port", str(sim_port), "--time-scale", str(TIME_SCALE),
            "--seed", "5", "--failure-share", "0.25", "--faults", FAULTS,
        )  # fmt: skip
        exporters = [
            procs.genqueue(f"exporter-{i}", "exporter", "--host", "127.0.0.1", "--port", str(p))
            for i, p in enumerate(exporter_ports)
        ]
        for i, p in enumerate(worker_ports):
            procs.genqueue(
                f"worker-{i}",
                "worker",
                env={"GENQUEUE_METRICS_PORT": str(p), "GENQUEUE_WORKER_NAME": f"w{i}"},
            )
        config = tmp_path / "prometheus.yml"
        prometheus_config(
            config, workers=worker_ports, exporters=exporter_ports, rule_files=[ALERTS]
        )
        procs.spawn(
            "prometheus",
            [
                prometheus_tools.prometheus,
                f"--config.file={config}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{prom_port}",
                "--log.level=warn",
            ],
        )
        wait_until(lambda: http_ok(f"http://127.0.0.1:{prom_port}/-/ready"), 30, "Prometheus")

        def all_scraped() -> bool:
            procs.check_alive()
            targets = api.targets()
            return len(targets) == 4 and all(
                t["health"] == "up" and not t["lastScrape"].startswith("0001") for t in targets
            )

        # Every target scraped once before anything happens: each counter's zero is on record.
        wait_until(all_scraped, 40, "Prometheus to scrape 2 workers and 2 exporters")
        wait_until(lambda: api.value("max(genqueue_workers_alive)") == 2, 20, "2 heartbeats")

        # A budget far above the demo's spend: its panel and alert expression have a series.
        set_tenant_budget(r, settings.keys, "default", budget=Budget(10**10, "day"))
        with Client(replace(settings, outbound_allow_nets="127.0.0.0/8")) as client:

            def all_done() -> bool:
                procs.check_alive()
                st = client.stats()
                return sum(st.requests_by_status.values()) == 0 and st.tracking == 0

            # Warm-up: every worker polls every model before the measured range starts.
            # Prometheus' rate()/increase() cannot see the first value of a series that appears
            # inside their window; in a long-running cluster each (worker, model) series is old.
            warm: list[str] = []

            def warmed() -> bool:
                procs.check_alive()
                seen = [label_values(p, "genqueue_polls_total", "model") for p in worker_ports]
                if all(models <= s for s in seen) and all_done():
                    return True
                if all_done():
                    warm.extend(
                        client.submit({"model": m, "prompt": f"warm-up {len(warm)} {m}"})
                        for m in sorted(models)
                        for _ in range(3)
                    )
                return False

            models = {*FAST_MODELS, SLOW_MODEL}
            wait_until(warmed, 60, "each worker to poll each model", every_s=1)
            time.sleep(2 * SCRAPE_S)  # scraped: the measured range starts after the warm-up
            t0 = time.time()
            time.sleep(1.5 * SCRAPE_S)  # and holds a sample from before the demo

            # --- the demo ----------------------------------------------------------------------
            slow = [
                client.submit({"model": SLOW_MODEL, "prompt": f"slow {i}"})
                for i in range(SLOW_VIDEOS)
            ]
            ids = list(slow)
            hooked = 0
            for i in range(VIDEOS_PER_MODEL):
                for m in FAST_MODELS:
                    hook = hook_url if i % WEBHOOK_EVERY == 0 else None
                    hooked += hook is not None
                    ids.append(client.submit({"model": m, "prompt": f"{m} {i}"}, webhook_url=hook))
            cancelled = client.submit({"model": SLOW_MODEL, "prompt": "never mind"})
            ids.append(cancelled)
            client.cancel(cancelled)

            # A lost timer: delete the live poll timers of the slow requests from under them.
            def rearmed_total() -> float:
                return sum(scrape(p).get("genqueue_timers_rearmed_total", 0) for p in worker_ports)

            before = rearmed_total()

            def rearmed() -> bool:
                procs.check_alive()
                if rearmed_total() > before:
                    return True
                _lose_timers(r, settings, slow)
                return False

            wait_until(rearmed, 30, "the reconciler to re-arm a deleted timer", every_s=1.5)

            # An exporter restart loses nothing: its figures are Redis' totals.
            Processes.stop(exporters[1])
            exporters[1] = procs.genqueue(
                "exporter-1-restarted",
                "exporter", "--host", "127.0.0.1", "--port", str(exporter_ports[1]),
            )  # fmt: skip

            wait_until(all_done, 90, "every request to finish", every_s=0.5)
            views = [client.get(i) for i in ids]
            warm_views = [client.get(i) for i in warm]
        wait_until(lambda: len(_Hooks.received) >= hooked, 30, f"{hooked} webhooks")

        # --- ground truth ------------------------------------------------------------------
        sim = httpx.get(f"http://127.0.0.1:{sim_port}/_sim/stats", timeout=5).json()
        outcomes = Counter(v.status for v in views)
        polls = sum(v.polls for v in views)
        cost_micro = sum(v.cost_micro_usd or 0 for v in views)
        cost_by_model: Counter[str] = Counter()
        for v in views:
            cost_by_model[v.model] += v.cost_micro_usd or 0
        upstream_429 = sum(codes.get("429", 0) for codes in sim["requests"].values())
        upstream_5xx = sum(
            n for codes in sim["requests"].values() for c, n in codes.items() if c[:1] == "5"
        )
        all_views = views + warm_views
        all_outcomes = Counter(v.status for v in all_views)
        all_polls = sum(v.polls for v in all_views)
        assert all(v.status in TERMINAL for v in all_views)
        assert outcomes["completed"] and outcomes["failed"] and outcomes["cancelled"]
        assert upstream_429 and upstream_5xx
        assert sum(v.cost_micro_usd or 0 for v in all_views) == sim["billed_micro_usd"]

        finished_q = "sum(max by (model, outcome) (genqueue_requests_finished_total))"
        wait_until(
            lambda: (
                api.value(finished_q) == len(all_views)
                and api.value("sum(genqueue_polls_total)") == all_polls
                and api.value('sum(genqueue_webhook_deliveries_total{outcome="done"})') == hooked
            ),
            20,
            "Prometheus to scrape the final figures",
        )
        time.sleep(2 * SCRAPE_S)  # one more scrape of everything, and a rule evaluation
        t1 = time.time()

        # The totals equal the ground truth: finished records, billed dollars, calls, polls.
        by_outcome = {
            s["metric"]["outcome"]: float(s["value"][1])
            for s in api.query(
                "sum by (outcome) (max by (model, outcome) (genqueue_requests_finished_total))"
            )
        }
        assert by_outcome == {k: float(n) for k, n in all_outcomes.items()}
        cost = api.value("sum(max by (model) (genqueue_cost_usd_total))")
        assert cost is not None
        assert Decimal(f"{cost:.6f}") == Decimal(sim["billed_usd"])
        assert api.value('sum(genqueue_upstream_requests_total{code="429"})') == upstream_429
        assert api.value('sum(genqueue_upstream_requests_total{code=~"5.."})') == upstream_5xx
        assert api.value("sum(genqueue_polls_total)") == all_polls
        assert api.value("count(up == 1)") == 4

        # --- every dashboard query -----------------------------------------------------------
        board = dashboard()
        range_ = f"{math.ceil(t1 - t0)}s"
        results: dict[str, list[Any]] = {}
        problems: list[str] = []
        for panel in panels(board):
            title = panel["title"]
            series: list[Any] = []
            for target in panel["targets"]:
                expr = substitute(
                    target["expr"],
                    rate_interval=RATE_INTERVAL,
                    interval=f"{SCRAPE_S}s",
                    range_=range_,
                )
                if target.get("instant"):
                    series += api.query(expr, at=t1)
                else:
                    series += api.query_range(expr, t0, t1, SCRAPE_S)
            results[title] = series
            if not finite_values(series):
                problems.append(f"{title!r}: no data")
            for labels in MUST_BE_POSITIVE.get(title, []):
                if not any(
                    v > 0 for v in finite_values([s for s in series if _matches(s, labels)])
                ):
                    problems.append(f"{title!r}: no positive value for {labels or 'any series'}")
        assert not problems, "\n".join(problems) + f"\nsimulator: {sim}"
        assert not set(MUST_BE_POSITIVE) - set(results), "MUST_BE_POSITIVE names a lost panel"

        # The single-value panels show the same figures as the ground truth.
        def single(title: str, **labels: str) -> float:
            found = [s for s in results[title] if _matches(s, labels)]
            assert len(found) == 1, f"{title} {labels}: {found}"
            return float(found[0]["value"][1])

        # "In range" figures count the measured run only (the warm-up finished before it).
        assert single("Finished in range") == len(ids)
        assert Decimal(f"{single('Spend in range'):.6f}") == micro_to_usd(cost_micro)
        # Every request of this run is ``default``'s: its spend is all of it.
        spent_default = single("Spend by tenant in range", tenant="default")
        assert Decimal(f"{spent_default:.6f}") == micro_to_usd(cost_micro)
        for model, micro in cost_by_model.items():
            if micro:
                spent = single("Spend by model in range", model=model)
                assert Decimal(f"{spent:.6f}") == micro_to_usd(micro)
        assert {float(s["value"][1]) for s in results["Workers alive"]} == {2.0}
        assert single("Creates") == 0
        assert single("Upstream jobs in flight") == 0
        # increase() extrapolates the polls to the range's ends (at most one scrape interval
        # each), never below what happened; the finished count below it is exact.
        per_video, true_per_video = single("Polls per video in range"), polls / len(ids)
        span = t1 - t0
        assert true_per_video <= per_video <= true_per_video * span / (span - 2.2 * SCRAPE_S)

        # The dashboard's variable queries (label_values) find every model, and the tenant
        # every request of this run belongs to (none named: ``default``).
        expected = {"model": {*FAST_MODELS, SLOW_MODEL}, "tenant": {"default"}}
        for variable in board["templating"]["list"]:
            if variable["type"] != "query":
                continue
            metric, label = variable["query"].removeprefix("label_values(").rstrip(")").split(",")
            found = api.label_values(label.strip(), metric.strip(), t0, t1)
            assert set(found) >= expected[variable["name"]], (variable["name"], found)

        # --- every alert rule ----------------------------------------------------------------
        for rule in alert_rules():
            api.query(rule["expr"], at=t1)  # parses and evaluates on the run's data
        loaded = {rule["name"]: rule for rule in api.rules()}
        assert set(loaded) == {rule["alert"] for rule in alert_rules()}
        for name, rule in loaded.items():
            assert rule["health"] == "ok", (name, rule.get("lastError"))
            assert not rule["lastEvaluation"].startswith("0001"), f"{name} never evaluated"
        print(f"proof: {len(ids)} requests {dict(outcomes)}, {polls} polls, billed "
              f"{micro_to_usd(cost_micro)} USD, polls/video {per_video:.2f} (true "
              f"{true_per_video:.2f}), {upstream_429} x 429, {upstream_5xx} x 5xx, "
              f"{time.monotonic() - started:.1f} s")  # fmt: skip
    except BaseException:
        print(procs.logs())
        raise
    finally:
        procs.stop_all()
        hooks.shutdown()
        hooks.server_close()
        api.close()
        r.close()
