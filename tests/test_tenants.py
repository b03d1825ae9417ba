"""Tenants in the producer, the scripts and the worker's signing: who owns a request, what a
tenant sees, refused tenants, the mapping guard, and webhook secret rotation."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest
import redis
import redis.asyncio
import structlog
from standardwebhooks import Webhook, WebhookVerificationError

from genqueue.producer import AsyncClient, RequestNotFound, Settings
from genqueue.producer.contracts import Cancel
from genqueue.producer.keys import Field
from genqueue.producer.record import RequestView
from genqueue.producer.scripts import AsyncScripts
from genqueue.producer.stats import parse_stats
from genqueue.producer.tenants import (
    TenantError,
    UnknownTenant,
    check_webhook_secret,
    list_tenants,
    new_webhook_secret,
    set_tenant,
)
from genqueue.worker.side_effects import signature_header

REQ = {"model": "minimax/video-01-director", "prompt": "a red balloon"}


async def test_unknown_tenant_is_refused_and_nothing_written(
    client: AsyncClient, aredis: redis.asyncio.Redis, settings: Settings
) -> None:
    """A request for a tenant that is not configured is refused before anything is stored."""
    with pytest.raises(UnknownTenant):
        await client.submit(REQ, tenant="initech", idempotency_key="k")
    with pytest.raises(TenantError):
        await client.submit(REQ, tenant="Not A Name")
    assert await aredis.keys(f"{settings.key_prefix}:*") == []


async def test_a_client_bound_to_a_tenant_sees_only_its_own(
    settings: Settings, conn: redis.Redis
) -> None:
    """``AsyncClient(tenant=...)`` submits as its tenant and treats another tenant's id as
    unknown (get, wait, cancel); an unscoped client (trusted) reaches both."""
    set_tenant(conn, settings.keys, "acme")
    async with (
        AsyncClient(settings) as anyone,
        AsyncClient(settings, tenant="acme") as acme,
    ):
        theirs = await anyone.submit(REQ)
        mine = await acme.submit(REQ)
        assert (await anyone.get(mine)).tenant == "acme"
        assert (await anyone.get(theirs)).tenant == "default"
        with pytest.raises(RequestNotFound):
            await acme.get(theirs)
        with pytest.raises(RequestNotFound):
            await acme.wait(theirs, 0.1)
        with pytest.raises(RequestNotFound):
            await acme.cancel(theirs)
        assert (await anyone.get(theirs)).status == "pending"
        assert await acme.cancel(mine) == "cancelled"


async def test_a_script_refuses_a_tenant_mapping_it_was_not_given(
    settings: Settings, conn: redis.Redis, aredis: redis.asyncio.Redis
) -> None:
    """Ending a tenant's request with an idempotency key but without its tenant is an error
    (it would expire ``default``'s mapping of the same key), and nothing is written."""
    set_tenant(conn, settings.keys, "acme")
    async with AsyncClient(settings) as client:
        rid = await client.submit(REQ, tenant="acme", idempotency_key="order-1")
    scripts = AsyncScripts(aredis)
    wrong = Cancel(request_id=rid, idempotency_key="order-1", tracking_limit_ms=1000)
    with pytest.raises(redis.ResponseError, match="tenant"):
        await scripts.run(wrong.call(settings))
    assert await aredis.hget(settings.keys.record(rid), Field.STATUS) == "pending"
    right = Cancel(request_id=rid, idempotency_key="order-1", tenant="acme", tracking_limit_ms=1)
    assert (await scripts.run(right.call(settings))).tag == "CANCELLED"
    assert await aredis.pttl(settings.keys.idempotency("order-1", "acme")) > 0


def test_a_record_without_a_tenant_is_defaults() -> None:
    """A record written before tenants (no ``tenant`` field) belongs to ``default``."""
    raw = {Field.ID: "r1", Field.STATUS: "pending", Field.MODEL: "m", Field.VERSION: "2"}
    assert RequestView.from_hash(raw).tenant == "default"


def test_default_is_the_cluster_minus_the_other_tenants() -> None:
    """``default``'s figures are the cluster's minus each other tenant's own fields (so they
    include records written before tenants); a tenant's are its own."""
    counts = {"pending": "5", "t|acme|pending": "2", "t|globex|pending": "1", "tracking": "1"}
    totals = {
        "finished|m|completed": "10",
        "t|acme|finished|m|completed": "4",
        "cost_micro|m": "1000",
        "t|acme|cost_micro|m": "300",
    }
    replies = [counts, 9, 0, 0, totals, {}, []]
    default = parse_stats(replies, 0, tenant="default")
    acme = parse_stats(replies, 0, tenant="acme")
    cluster = parse_stats(replies, 0)
    assert default.requests_by_status["pending"] == 2 and default.tracking == 1
    assert default.finished == {("m", "completed"): 6} and default.cost_micro_usd == {"m": 700}
    assert acme.requests_by_status["pending"] == 2 and acme.inflight == 2
    assert acme.cost_micro_usd == {"m": 300}
    assert cluster.requests_by_status["pending"] == 5 and cluster.inflight == 9


def test_webhook_secret_rotation_signs_with_old_and_new(
    settings: Settings, conn: redis.Redis
) -> None:
    """A new secret signs first while the previous one still signs (a receiver with either
    verifies); retiring the old ones leaves only the newest."""
    old, new = new_webhook_secret(), new_webhook_secret()
    set_tenant(conn, settings.keys, "acme", webhook_secret=old)
    rotated = set_tenant(conn, settings.keys, "acme", webhook_secret=new).config
    assert rotated.webhook_secrets == (new, old)
    at, body = datetime.now(UTC), '{"type":"generation.completed"}'
    header = signature_header(rotated.webhook_secrets, "wh_1", at, body)
    headers = {
        "webhook-id": "wh_1",
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": header,
    }
    assert Webhook(old).verify(body, headers) and Webhook(new).verify(body, headers)
    retired = set_tenant(conn, settings.keys, "acme", retire_old_secrets=True).config
    assert retired.webhook_secrets == (new,)
    headers["webhook-signature"] = signature_header(retired.webhook_secrets, "wh_1", at, body)
    with pytest.raises(WebhookVerificationError):
        Webhook(old).verify(body, headers)
    assert [t.name for t in list_tenants(conn, settings.keys)] == ["default", "acme"]
    with pytest.raises(TenantError) as refused:
        check_webhook_secret("whsec_???" + old)
    assert old not in str(refused.value)


async def test_gateway_logs_bind_the_tenant_never_the_key(settings: Settings) -> None:
    """Every gateway log line of a request names the caller's tenant and key id, not the key."""
    import httpx
    from asgi_lifespan import LifespanManager
    from structlog.testing import capture_logs

    from genqueue.gateway import create_app
    from genqueue.producer.api_keys import create_key

    with redis.Redis.from_url(settings.redis_url, decode_responses=True) as conn:
        set_tenant(conn, settings.keys, "acme")
        key, owner = create_key(conn, settings.keys, tenant="acme")
    app = create_app(settings, api_keys=["env-key-0123456789abcdef"])
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as http:
            with capture_logs(processors=[structlog.contextvars.merge_contextvars]) as logs:
                resp = await http.post(
                    "/v1/generations", json=REQ, headers={"Authorization": f"Bearer {key}"}
                )
    assert resp.status_code == 201
    lines = [e for e in logs if e.get("http_request_id")]
    assert lines and all(e["tenant"] == "acme" and e["key_id"] == owner.id for e in lines)
    assert key not in repr(logs)


async def test_tenant_metrics_label_default_and_configured_tenants(
    settings: Settings, conn: redis.Redis
) -> None:
    """The exporter's per-tenant metrics show each configured tenant's own requests and
    ``default``'s (the rest), finished by outcome; no other label value."""
    from prometheus_client import CollectorRegistry, generate_latest

    from genqueue.worker.tenant_metrics import TenantCollector

    set_tenant(conn, settings.keys, "acme")
    set_tenant(conn, settings.keys, "globex")
    async with AsyncClient(settings) as client:
        await client.submit(REQ)
        kept = await client.submit(REQ, tenant="acme")
        await client.submit(REQ, tenant="acme")
        await client.cancel(kept)
    registry = CollectorRegistry()
    collector = TenantCollector(settings, conn)
    registry.register(collector)
    text = generate_latest(registry).decode()
    assert 'genqueue_tenant_requests{status="pending",tenant="acme"} 1.0' in text
    assert 'genqueue_tenant_requests{status="pending",tenant="default"} 1.0' in text
    assert 'genqueue_tenant_requests{status="pending",tenant="globex"} 0.0' in text
    assert 'genqueue_tenant_requests_finished_total{outcome="cancelled",tenant="acme"} 1.0' in text
    assert 'genqueue_tenant_requests_finished_total{outcome="cancelled",tenant="default"} 0.0' in (
        text
    )
    assert set(re.findall(r'tenant="([^"]*)"', text)) == {"default", "acme", "globex"}


async def test_worker_logs_bind_the_tenant(
    settings: Settings, conn: redis.Redis, aredis: redis.asyncio.Redis, sim_app: object
) -> None:
    """The worker's log lines for a request name its tenant."""
    import httpx
    from structlog.testing import capture_logs

    from genqueue.worker.runtime import Runtime
    from genqueue.worker.tasks import run_submit
    from genqueue.worker.upstream import UpstreamClient
    from tests.conftest import worker_config

    set_tenant(conn, settings.keys, "acme")
    async with AsyncClient(settings, tenant="acme") as client:
        rid = await client.submit(REQ)
    rt = Runtime(
        config=worker_config(settings),
        redis=aredis,
        upstream=UpstreamClient(
            base_url="http://sim", api_key="k", transport=httpx.ASGITransport(app=sim_app)
        ),
    )
    try:
        with capture_logs(processors=[structlog.contextvars.merge_contextvars]) as logs:
            await run_submit(rt, rid, 0)
    finally:
        await rt.close()
        structlog.contextvars.clear_contextvars()
    mine = [e for e in logs if e.get("request_id") == rid]
    assert mine and all(e["tenant"] == "acme" for e in mine)


def test_tenant_settings_this_version_does_not_know_are_kept(
    settings: Settings, conn: redis.Redis
) -> None:
    """``tenant set`` keeps settings written by a newer version (weights, budgets...)."""
    conn.hset(settings.keys.tenants, "acme", '{"weight":3,"webhook_secrets":[]}')
    set_tenant(conn, settings.keys, "acme", generate_webhook_secret=True)
    stored = conn.hget(settings.keys.tenants, "acme")
    assert stored is not None and '"weight":3' in stored


async def test_dead_letters_name_the_tenant(
    settings: Settings, conn: redis.Redis, aredis: redis.asyncio.Redis
) -> None:
    """`genqueue webhooks dead` says whose webhook was given up on."""
    from genqueue.producer.dead_letters import list_dead

    set_tenant(conn, settings.keys, "acme")
    async with AsyncClient(settings) as client:
        mine = await client.submit(REQ, tenant="acme")
        theirs = await client.submit(REQ)
    await aredis.zadd(settings.keys.dead_letters, {mine: 2, theirs: 1})
    assert [(d.request_id, d.tenant) for d in list_dead(conn, settings)] == [
        (mine, "acme"),
        (theirs, "default"),
    ]


async def test_events_name_a_tenants_requests(
    settings: Settings, conn: redis.Redis, aredis: redis.asyncio.Redis
) -> None:
    """Every event of a tenant's request names the tenant; ``default``'s name none."""
    set_tenant(conn, settings.keys, "acme")
    async with AsyncClient(settings) as client:
        mine = await client.submit(REQ, tenant="acme")
        theirs = await client.submit(REQ)
        await client.cancel(mine)
    events = [f for _, f in await aredis.xrange(settings.keys.events)]
    assert [(e["id"], e["status"], e.get("tenant")) for e in events] == [
        (mine, "pending", "acme"),
        (theirs, "pending", None),
        (mine, "cancelled", "acme"),
    ]
