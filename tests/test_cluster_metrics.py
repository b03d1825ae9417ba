"""Cluster metrics come from Redis at scrape time and never go backwards."""

from __future__ import annotations

import re

import redis
import redis.asyncio
from prometheus_client import CollectorRegistry, generate_latest

from genqueue.producer import AsyncClient, Settings
from genqueue.producer.stats import oldest_due_age_ms, redis_time_ms
from genqueue.worker.cluster_metrics import ClusterCollector
from genqueue.worker.exporter_metrics import exporter_registry
from tests.test_producer import REQ, finish_directly


def scrape(collector: ClusterCollector) -> str:
    registry = CollectorRegistry()
    registry.register(collector)
    return generate_latest(registry).decode()


async def test_figures_match_redis(
    client: AsyncClient, settings: Settings, aredis: redis.asyncio.Redis
) -> None:
    """Queue depth, requests by status, finished totals and cost are read from Redis."""
    ids = [await client.submit(REQ) for _ in range(3)]
    await finish_directly(settings, aredis, ids[0])
    collector = ClusterCollector(settings)
    text = scrape(collector)
    collector.close()
    model = REQ["model"]
    assert "genqueue_redis_up 1.0" in text
    assert 'genqueue_requests{status="pending"} 2.0' in text
    assert 'genqueue_queue_depth{state="ready"} 3.0' in text  # incl. the finished one's stale timer
    assert f'genqueue_requests_finished_total{{model="{model}",outcome="completed"}} 1.0' in text
    assert f'genqueue_cost_usd_total{{model="{model}"}} 0.28' in text


async def test_totals_never_go_backwards(
    client: AsyncClient, settings: Settings, aredis: redis.asyncio.Redis
) -> None:
    """If Redis loses part of its totals, the exported counters keep their high-water mark."""
    rid = await client.submit(REQ)
    await finish_directly(settings, aredis, rid)
    collector = ClusterCollector(settings)
    before = scrape(collector)
    await aredis.delete(settings.keys.totals)  # what a lost AOF second could do
    after = scrape(collector)
    collector.close()
    line = f'genqueue_cost_usd_total{{model="{REQ["model"]}"}} 0.28'
    assert line in before and line in after


def _lag_s(text: str) -> float:
    m = re.search(r"^genqueue_queue_lag_seconds (\S+)$", text, re.M)
    assert m, text
    return float(m.group(1))


async def test_queue_lag_is_the_age_of_the_oldest_due_timer(
    settings: Settings, aredis: redis.asyncio.Redis
) -> None:
    """genqueue_queue_lag_seconds is how long the oldest due timer has waited; 0 when none is."""
    now_ms = redis_time_ms(await aredis.time())
    collector = ClusterCollector(settings)
    assert _lag_s(scrape(collector)) == 0.0  # an empty queue
    await aredis.zadd(settings.keys.queue, {"later": now_ms + 60_000})
    assert _lag_s(scrape(collector)) == 0.0  # nothing due yet
    await aredis.zadd(settings.keys.queue, {"late": now_ms - 42_000, "recent": now_ms - 1_000})
    lag = _lag_s(scrape(collector))
    collector.close()
    assert 42.0 <= lag < 60.0  # the oldest one's age, however slow this scrape was


def test_oldest_due_age_reads_flat_and_paired_replies() -> None:
    """The lag is read from RESP2 (flat) and redis-py (paired) replies alike, never negative."""
    assert oldest_due_age_ms([], 10_000) == 0
    assert oldest_due_age_ms([b"job", b"4000"], 10_000) == 6_000
    assert oldest_due_age_ms([("job", 4000.0)], 10_000) == 6_000
    assert oldest_due_age_ms([b"job", b"15000"], 10_000) == 0


def test_redis_down_reports_up_zero(settings: Settings) -> None:
    """An unreachable Redis gives genqueue_redis_up 0 instead of a failed scrape."""
    from genqueue.local_redis import free_port

    down = Settings(redis_url=f"redis://127.0.0.1:{free_port()}/0")
    collector = ClusterCollector(down)
    assert "genqueue_redis_up 0.0" in scrape(collector)
    collector.close()


def _calls(conn: redis.Redis) -> dict[str, int]:
    """Commands served by the test Redis since its last ``CONFIG RESETSTAT``, by name."""
    stats: dict[str, dict[str, int]] = conn.info("commandstats")  # type: ignore[assignment]
    return {name.removeprefix("cmdstat_"): int(s["calls"]) for name, s in stats.items()}


async def test_one_scrape_reads_the_snapshot_once(
    client: AsyncClient, settings: Settings, conn: redis.Redis
) -> None:
    """One scrape of the exporter's registry sends each stats command once, though it serves
    both the cluster's and the tenants' metrics from it."""
    await client.submit(REQ)
    conn.config_resetstat()
    text = generate_latest(exporter_registry(settings, conn)).decode()
    calls = _calls(conn)
    assert 'genqueue_requests{status="pending"} 1.0' in text
    assert 'genqueue_tenant_requests{status="pending",tenant="default"} 1.0' in text
    assert calls["time"] == 1
    assert calls["zcard"] == 1
    assert calls["hkeys"] == 1
