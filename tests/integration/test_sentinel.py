"""Everything reaches a Sentinel-managed primary through ``redis+sentinel://``: the CLI's
``submit`` and ``stats`` (real processes), the gateway, the exporter's collector, the worker
runtime; and the clients follow the primary across a failover (real ``redis-server``s)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis
from asgi_lifespan import LifespanManager

from genqueue.gateway import create_app
from genqueue.gateway.settings import GatewaySettings
from genqueue.local_redis import free_port, redis_reachable
from genqueue.local_sentinel import LocalSentinelCluster
from genqueue.producer import AsyncClient, Client, Settings
from genqueue.producer.connections import BlockingSentinelConnectionPool
from genqueue.worker.cluster_metrics import ClusterCollector
from genqueue.worker.config import WorkerConfig
from genqueue.worker.runtime import Runtime

REQ: dict[str, Any] = {"model": "openai/sora-2", "prompt": "a kite over dunes"}
KEY = "gq-test-key-0123456789abcdef"


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalSentinelCluster]:
    """One primary, two replicas, three sentinels; every process killed at the end."""
    c = LocalSentinelCluster()
    try:
        c.start()
        yield c
    finally:
        c.close()


@pytest.fixture
def settings(cluster: LocalSentinelCluster) -> Settings:
    return Settings(redis_url=cluster.url, key_prefix=f"st-{uuid.uuid4().hex[:6]}")


def _cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env.update(GENQUEUE_REDIS_URL=settings.redis_url, GENQUEUE_KEY_PREFIX=settings.key_prefix)
    return subprocess.run(
        [sys.executable, "-m", "genqueue", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_a_sentinel_url_is_reachable_and_a_dead_one_is_not(cluster: LocalSentinelCluster) -> None:
    """``redis_reachable`` (the demo's check of GENQUEUE_REDIS_URL) asks the sentinels."""
    assert redis_reachable(cluster.url)
    assert not redis_reachable(f"redis+sentinel://127.0.0.1:{free_port()}/genqueue/0", 0.5)


@pytest.mark.slow
def test_cli_submit_and_stats_work_through_the_sentinel_url(settings: Settings) -> None:
    """`genqueue submit` writes to the primary the sentinels name; `genqueue stats` reads it."""
    sub = _cli(settings, "submit", "--model", "openai/sora-2", "--prompt", "a kite")
    assert sub.returncode == 0, sub.stderr
    rid = sub.stdout.strip()
    stats = _cli(settings, "stats", "--json")
    assert stats.returncode == 0, stats.stderr
    assert json.loads(stats.stdout)["requests_by_status"]["pending"] == 1
    with Client(settings) as client:
        assert client.get(rid).status == "pending"


async def test_gateway_and_exporter_work_through_the_sentinel_url(settings: Settings) -> None:
    """The gateway creates through the sentinels, its pool bounded as for a plain URL
    (``GENQUEUE_GATEWAY_REDIS_MAX_CONNECTIONS``); the exporter's collector counts it."""
    app = create_app(
        settings, api_keys=[KEY], limits=GatewaySettings(gateway_redis_max_connections=4)
    )
    async with LifespanManager(app) as manager:
        pool = app.state.resources.client._redis.connection_pool
        assert isinstance(pool, BlockingSentinelConnectionPool)
        assert pool.max_connections == 4
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://gw", headers={"Authorization": f"Bearer {KEY}"}
        ) as http:
            resp = await http.post("/v1/generations", json=REQ)
    assert resp.status_code == 201, resp.text
    collector = ClusterCollector(settings)
    stats, _ = collector.snapshot()
    assert stats.requests_by_status["pending"] == 1


async def test_worker_runtime_connects_and_waits_for_a_replica(settings: Settings) -> None:
    """A worker's runtime reaches the primary through the sentinels and plans WAIT 1 for
    upstream ids."""
    rt = await Runtime.start(WorkerConfig(settings=settings, api_key="k"))
    try:
        assert rt.durability.writer is not None
        plan = await rt.durability.writer.plan()
        assert plan.commands[0][:2] == ("WAIT", 1)
    finally:
        await rt.close()


async def test_clients_follow_the_primary_across_a_failover(
    cluster: LocalSentinelCluster, settings: Settings
) -> None:
    """After the primary is SIGKILLed and a replica promoted, an acknowledged create is still
    there and new creates reach the new primary (one retry for the dropped connection)."""
    async with AsyncClient(settings) as client:
        before = await client.submit(REQ, idempotency_key="before")
        old, new = cluster.fail_over()
        assert old != new
        for attempt in range(20):
            try:
                after = await client.submit(REQ, idempotency_key="after")
                break
            except (redis.ConnectionError, redis.TimeoutError):
                assert attempt < 19
        assert (await client.get(before)).status == "pending"
        assert (await client.get(after)).status == "pending"
    with redis.Redis(port=new, decode_responses=True) as r:
        assert r.info("replication")["role"] == "master"
