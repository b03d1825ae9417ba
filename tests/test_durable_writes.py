"""Critical writes wait for a replica: a request's creation (producer) and an upstream id
(worker), against a real primary and replica; a wait that times out is reported."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from asgi_lifespan import LifespanManager

from genqueue.gateway import create_app
from genqueue.local_redis import LocalRedis
from genqueue.producer import AsyncClient, Client, Settings, WriteNotDurable
from genqueue.producer.connections import async_redis
from genqueue.producer.contracts import Cancel
from genqueue.producer.keys import Tag
from genqueue.producer.scripts import AsyncScripts
from genqueue.worker.config import WorkerConfig
from genqueue.worker.durability import Durability, policy_for
from genqueue.worker.metrics import WorkerMetrics

REQ: dict[str, Any] = {"model": "openai/sora-2", "prompt": "a lighthouse in fog"}


class Pair:
    """A primary and one replica, each a real ``redis-server``."""

    def __init__(self, tmp: Path) -> None:
        (tmp / "p").mkdir()
        (tmp / "r").mkdir()
        self.primary = LocalRedis(appendfsync="everysec", data_dir=tmp / "p")
        self.primary.start()
        self.replica = LocalRedis(
            appendfsync="everysec",
            data_dir=tmp / "r",
            extra_args=["--replicaof", "127.0.0.1", str(self.primary.port)],
        )
        self.replica.start()
        with redis.Redis(port=self.primary.port, decode_responses=True) as r:
            r.config_set("repl-diskless-sync-delay", "0")
            deadline_polls = 200
            while "online" not in str(r.info("replication").get("slave0", "")):
                deadline_polls -= 1
                assert deadline_polls > 0, "replica never synced"
                r.execute_command("WAIT", 1, 50)

    def waits(self) -> int:
        """How many WAIT commands the primary has run."""
        with redis.Redis(port=self.primary.port, decode_responses=True) as r:
            stats = r.info("commandstats").get("cmdstat_wait", {})
            return int(stats.get("calls", 0)) if isinstance(stats, dict) else 0

    def close(self) -> None:
        for node in (self.replica, self.primary):
            node.kill()  # a SIGTERMed primary would wait up to 10 s for its replica
            node.close()


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[Pair]:
    p = Pair(tmp_path)
    try:
        yield p
    finally:
        p.close()


def _settings(pair: Pair, **kw: Any) -> Settings:
    return Settings(redis_url=pair.primary.url, key_prefix=f"dw-{uuid.uuid4().hex[:6]}", **kw)


async def test_a_create_waits_for_the_replica(pair: Pair) -> None:
    """With a replica attached, each create is followed by WAIT and is on the replica once
    submit returns."""
    before = pair.waits()
    async with AsyncClient(_settings(pair)) as client:
        rid = await client.submit(REQ)
    assert pair.waits() == before + 1
    with redis.Redis(port=pair.replica.port, decode_responses=True) as r:
        assert r.keys(f"*{rid}*")


async def test_a_create_no_replica_acknowledged_raises_and_is_detected_again(pair: Pair) -> None:
    """When the replica is gone, the create raises WriteNotDurable naming the written id; the
    next create re-detects the setup (no replica: no wait) and succeeds."""
    settings = _settings(pair, durable_create_timeout_s=0.2)
    async with AsyncClient(settings) as client:
        await client.submit(REQ)  # detects: one replica -> WAIT
        pair.replica.kill()
        with pytest.raises(WriteNotDurable) as info:
            await client.submit(REQ, idempotency_key="k1")
        rid = info.value.request_id
        assert (await client.get(rid)).status == "pending"
        assert await client.submit(REQ, idempotency_key="k1") == rid


def test_the_blocking_client_reports_an_unreplicated_create(pair: Pair) -> None:
    """The sync client raises WriteNotDurable the same way."""
    with Client(_settings(pair, durable_create_timeout_s=0.2)) as client:
        client.submit(REQ)
        pair.replica.kill()
        with pytest.raises(WriteNotDurable):
            client.submit(REQ)


def test_durable_creates_off_sends_no_wait(pair: Pair) -> None:
    """``durable_creates="off"`` never waits, even with a replica attached."""
    before = pair.waits()
    with Client(_settings(pair, durable_creates="off")) as client:
        client.submit(REQ)
    assert pair.waits() == before


async def test_worker_counts_an_upstream_id_write_its_replica_did_not_acknowledge(
    pair: Pair,
) -> None:
    """The worker's durable step returns the script's reply and counts a timed-out wait in
    genqueue_durable_write_timeouts_total."""
    settings = _settings(pair)
    config = WorkerConfig(settings=settings, api_key="k", durable_wait_timeout_s=0.2)
    client = async_redis(settings.redis_url, decode_responses=True)
    metrics = WorkerMetrics()
    durability = Durability(
        client, policy_for(config), on_unacknowledged=metrics.durable_write_timeouts.inc
    )
    await durability.detect()
    scripts = AsyncScripts(client)
    c = Cancel(request_id="no-such-id", tracking_limit_ms=1000).call(settings)
    try:
        assert (await durability.run(client, scripts, c)).tag is Tag.MISSING
        assert metrics.registry.get_sample_value("genqueue_durable_write_timeouts_total") == 0
        pair.replica.kill()
        assert (await durability.run(client, scripts, c)).tag is Tag.MISSING
        assert metrics.registry.get_sample_value("genqueue_durable_write_timeouts_total") == 1
    finally:
        await client.aclose()


async def test_gateway_answers_503_naming_the_id_when_a_create_is_not_replicated(
    pair: Pair,
) -> None:
    """POST /v1/generations answers 503 with Retry-After and the written id, so a retry with
    the same Idempotency-Key is the caller's next step."""
    key = "gq-test-key-0123456789abcdef"
    app = create_app(_settings(pair, durable_create_timeout_s=0.2), api_keys=[key])
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(
            transport=transport,
            base_url="http://gw",
            headers={"Authorization": f"Bearer {key}"},
        ) as http:
            assert (await http.post("/v1/generations", json=REQ)).status_code == 201
            pair.replica.kill()
            resp = await http.post(
                "/v1/generations", json=REQ, headers={"Idempotency-Key": "idem-1"}
            )
    assert resp.status_code == 503
    assert resp.headers["Retry-After"]
    assert "Idempotency-Key" in resp.json()["error"]["message"]
