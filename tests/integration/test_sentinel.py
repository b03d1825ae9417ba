"""Everything reaches a Sentinel-managed primary through ``redis+sentinel://``: the CLI's
``submit`` and ``stats`` (real processes), the gateway, the exporter's collector, the worker
runtime; and the clients follow the primary across a failover (real ``redis-server``s)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
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


async def _left_pending(client: AsyncClient, rid: str, within_s: float) -> float | None:
    """Seconds until the request is no longer ``pending`` (its submit timer ran), or None."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    while loop.time() - start < within_s:
        try:
            if (await client.get(rid)).status != "pending":
                return loop.time() - start
        except (redis.ConnectionError, redis.TimeoutError):
            pass
        await asyncio.sleep(0.05)
    return None


async def _submit(client: AsyncClient, key: str) -> str:
    for attempt in range(40):  # a connection dropped by the failover is retried
        try:
            return await client.submit(REQ, idempotency_key=key)
        except (redis.ConnectionError, redis.TimeoutError):
            if attempt == 39:
                raise
            await asyncio.sleep(0.25)
    raise AssertionError("unreachable")


async def test_the_wake_listener_works_across_a_failover(
    cluster: LocalSentinelCluster, settings: Settings
) -> None:
    """A worker process's loop (``run_worker``) waiting on its wake list through the sentinels
    is woken by a create on the new primary after a failover: its listener's lost connection
    ends the loop, the supervisor starts it again, and the new ``BLPOP`` follows the primary
    (an idle worker that missed the token would look only after ``idle_wait_max_s``)."""
    from genqueue.simulator import SimConfig, create_app
    from genqueue.worker.app import run_worker
    from tests.conftest import FAST_SCALE, worker_config

    cap_s = 300.0
    cfg = worker_config(settings, idle_wait_max_s=cap_s)
    sim = create_app(SimConfig(time_scale=FAST_SCALE, seed=7, failure_share=0.0))
    worker = asyncio.create_task(run_worker(cfg, transport=httpx.ASGITransport(app=sim)))
    try:
        async with AsyncClient(settings) as client:
            # Before: the first look may find the request; the second one needs the token.
            for key in ("before-1", "before-2"):
                rid = await _submit(client, key)
                assert await _left_pending(client, rid, 60) is not None
                await asyncio.sleep(0.5)  # the worker is waiting again
            await asyncio.to_thread(cluster.fail_over)
            # The restarted loop's first look takes whatever is due, and proves it runs.
            rid = await _submit(client, "after-1")
            assert await _left_pending(client, rid, 60) is not None
            await asyncio.sleep(0.5)
            rid = await _submit(client, "after-2")
            took = await _left_pending(client, rid, 30)
            assert took is not None, "the create's wake token reached no waiting worker"
            assert took < cap_s
    finally:
        if not worker.done():
            os.kill(os.getpid(), signal.SIGTERM)  # run_worker's own handler: a clean stop
        await asyncio.wait_for(worker, timeout=60)
