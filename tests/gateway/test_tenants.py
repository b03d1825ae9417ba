"""Tenants through the gateway: the isolation matrix (two tenants, their keys, an admin key, a
revoked key) over create, read, wait, cancel, idempotency keys, stats and webhooks signed
with each tenant's own secret (verified with the ``standardwebhooks`` library)."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from typing import Any

import httpx
import pytest
import redis
import redis.asyncio
from asgi_lifespan import LifespanManager
from standardwebhooks import Webhook, WebhookVerificationError

from genqueue.gateway import GatewayConfigError, create_app
from genqueue.producer import AsyncClient, Settings
from genqueue.producer.api_keys import create_key, list_keys, revoke_key
from genqueue.producer.keys import Field
from genqueue.producer.tenants import new_webhook_secret, set_tenant
from genqueue.worker.outbound.resolver import StaticResolver
from tests.conftest import StartWorker
from tests.faults import RouterTransport

REQ: dict[str, Any] = {"model": "minimax/video-01-director", "prompt": "acme's secret prompt"}
OTHER_REQ: dict[str, Any] = {"model": "minimax/video-01-director", "prompt": "globex's own"}
GLOBAL_SECRET = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
HOOK_A = "http://hooks-a.test/acme?token=acme-hook-token"
HOOK_B = "http://hooks-b.test/globex"
HOOK_D = "http://hooks-d.test/default"
LOCAL_HOOKS = StaticResolver(
    {"hooks-a.test": ["127.0.0.1"], "hooks-b.test": ["127.0.0.1"], "hooks-d.test": ["127.0.0.1"]}
)


@dataclasses.dataclass
class World:
    """Two tenants with a key each, an admin key, a revoked key, and their secrets."""

    settings: Settings
    conn: redis.Redis
    acme: str
    globex: str
    admin: str
    revoked: str
    secret_a: str
    secret_b: str


@pytest.fixture
def world(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    monkeypatch.delenv("GENQUEUE_API_KEYS", raising=False)
    conn = redis.Redis.from_url(settings.redis_url, decode_responses=True)
    keys = settings.keys
    secret_a = set_tenant(conn, keys, "acme", generate_webhook_secret=True).generated_secret
    secret_b = new_webhook_secret()
    set_tenant(conn, keys, "globex", webhook_secret=secret_b)
    acme, _ = create_key(conn, keys, tenant="acme", name="acme backend")
    globex, _ = create_key(conn, keys, tenant="globex")
    admin, _ = create_key(conn, keys, tenant=None, admin=True)
    revoked, owner = create_key(conn, keys, tenant="acme", name="leaked")
    assert revoke_key(conn, keys, owner.id)
    assert secret_a is not None
    yield World(settings, conn, acme, globex, admin, revoked, secret_a, secret_b)
    conn.close()


@pytest.fixture
async def http(world: World) -> AsyncIterator[httpx.AsyncClient]:
    """The gateway, started with no ``GENQUEUE_API_KEYS``: its keys live in Redis."""
    app = create_app(world.settings, api_keys=None)
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as c:
            yield c


def as_(key: str, **extra: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}", **extra}


async def create(
    http: httpx.AsyncClient, key: str, body: dict[str, Any], **headers: str
) -> httpx.Response:
    return await http.post("/v1/generations", json=body, headers=as_(key, **headers))


async def test_isolation_matrix(http: httpx.AsyncClient, world: World) -> None:
    """A tenant's key reaches only its own requests (another's id is 404 for read, wait and
    cancel), idempotency keys are per tenant, stats are its own; an admin key reaches all
    and acts for a tenant; a revoked key is refused."""
    body = {**REQ, "webhook_url": HOOK_A, "metadata": {"order": "1"}}
    a = await create(http, world.acme, body, **{"Idempotency-Key": "order-1"})
    assert a.status_code == 201 and a.json()["tenant"] == "acme"
    a_id = a.json()["id"]
    # Globex with the same Idempotency-Key gets its own request, never acme's.
    b = await create(http, world.globex, OTHER_REQ, **{"Idempotency-Key": "order-1"})
    assert b.status_code == 201
    b_id = b.json()["id"]
    assert b_id != a_id
    assert b.json()["request"]["prompt"] == "globex's own" and b.json()["webhook_url"] is None
    assert "acme" not in b.text
    # Acme's replay of its own key still names its own request.
    again = await create(http, world.acme, REQ, **{"Idempotency-Key": "order-1"})
    assert again.json()["id"] == a_id

    # Read, wait and cancel of another tenant's id: 404, exactly as an unknown id.
    unknown = await http.get("/v1/generations/no-such-id", headers=as_(world.globex))
    for resp in (
        await http.get(f"/v1/generations/{a_id}", headers=as_(world.globex)),
        await http.get(f"/v1/generations/{a_id}?wait=1", headers=as_(world.globex)),
        await http.delete(f"/v1/generations/{a_id}", headers=as_(world.globex)),
    ):
        assert resp.status_code == 404
        assert resp.json() == unknown.json()
    # A header naming another tenant does not widen a tenant's key.
    sneaky = as_(world.globex, **{"X-Genqueue-Tenant": "acme"})
    assert (await http.get(f"/v1/generations/{a_id}", headers=sneaky)).status_code == 404
    own = await http.get(f"/v1/generations/{a_id}", headers=as_(world.acme))
    assert own.status_code == 200 and own.json()["status"] == "pending"

    # The admin key reaches both; acting for a tenant it sees only that tenant's.
    for rid in (a_id, b_id):
        assert (await http.get(f"/v1/generations/{rid}", headers=as_(world.admin))).is_success
    for_globex = as_(world.admin, **{"X-Genqueue-Tenant": "globex"})
    assert (await http.get(f"/v1/generations/{a_id}", headers=for_globex)).status_code == 404
    made = await create(http, world.admin, OTHER_REQ, **{"X-Genqueue-Tenant": "globex"})
    assert made.status_code == 201 and made.json()["tenant"] == "globex"
    nobody = await create(http, world.admin, REQ, **{"X-Genqueue-Tenant": "initech"})
    assert nobody.status_code == 422

    # Stats: each tenant's own; the admin's the cluster's.
    async def pending(key: str, **headers: str) -> int:
        resp = await http.get("/v1/stats", headers=as_(key, **headers))
        assert resp.status_code == 200
        return int(resp.json()["requests_by_status"]["pending"])

    assert await pending(world.acme) == 1
    assert await pending(world.globex) == 2
    assert await pending(world.admin) == 3
    assert await pending(world.admin, **{"X-Genqueue-Tenant": "acme"}) == 1

    # Cancel: the owner may; it shows in its stats only.
    done = await http.delete(f"/v1/generations/{a_id}", headers=as_(world.acme))
    assert done.status_code == 200 and done.json()["outcome"] == "cancelled"
    acme_stats = (await http.get("/v1/stats", headers=as_(world.acme))).json()
    globex_stats = (await http.get("/v1/stats", headers=as_(world.globex))).json()
    assert acme_stats["finished_by_outcome"] == {"cancelled": 1}
    assert globex_stats["finished_by_outcome"] == {} and globex_stats["tenant"] == "globex"
    assert (await http.get(f"/v1/generations/{b_id}", headers=as_(world.globex))).is_success

    # A revoked key is refused; a key created or revoked now counts at once.
    assert (await http.get("/v1/stats", headers=as_(world.revoked))).status_code == 403
    fresh, owner = create_key(world.conn, world.settings.keys, tenant="globex")
    assert (await http.get(f"/v1/generations/{b_id}", headers=as_(fresh))).status_code == 200
    revoke_key(world.conn, world.settings.keys, owner.id)
    assert (await http.get(f"/v1/generations/{b_id}", headers=as_(fresh))).status_code == 403


async def test_keys_are_stored_as_hashes(world: World) -> None:
    """Redis holds no API key in clear: only digests name them."""
    stored = world.conn.hgetall(world.settings.keys.api_keys)
    blob = repr(stored)
    for key in (world.acme, world.globex, world.admin):
        assert key not in blob
    assert {o.tenant for o in list_keys(world.conn, world.settings.keys)} == {
        "acme",
        "globex",
        None,
    }


def test_gateway_needs_a_key_somewhere(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without ``GENQUEUE_API_KEYS`` the gateway starts only when Redis holds a key."""
    monkeypatch.delenv("GENQUEUE_API_KEYS", raising=False)
    with pytest.raises(GatewayConfigError):
        create_app(settings, api_keys=None)
    with redis.Redis.from_url(settings.redis_url, decode_responses=True) as conn:
        create_key(conn, settings.keys, tenant="default")
    create_app(settings, api_keys=None)


async def test_webhooks_are_signed_with_each_tenants_secret(
    http: httpx.AsyncClient,
    world: World,
    start_worker: StartWorker,
    sim_app: Any,
    aredis: redis.asyncio.Redis,
) -> None:
    """Each tenant's webhooks verify with its own secret and not with another's; a tenant
    without a secret of its own (default) is signed with GENQUEUE_WEBHOOK_SECRET."""
    received: dict[str, httpx.Request] = {}

    def receiver(request: httpx.Request) -> httpx.Response:
        received[request.headers["host"]] = request
        return httpx.Response(200)

    hooks = httpx.MockTransport(receiver)
    transport = RouterTransport(
        {
            "sim": httpx.ASGITransport(app=sim_app),
            "hooks-a.test": hooks,
            "hooks-b.test": hooks,
            "hooks-d.test": hooks,
        }
    )
    await start_worker(
        side_transport=transport,
        with_side=True,
        webhook_secret=GLOBAL_SECRET,
        resolver=LOCAL_HOOKS,
        settings=replace(world.settings, outbound_allow_nets="127.0.0.0/8"),
    )
    ids = {
        "hooks-a.test": (await create(http, world.acme, {**REQ, "webhook_url": HOOK_A})),
        "hooks-b.test": (await create(http, world.globex, {**REQ, "webhook_url": HOOK_B})),
        "hooks-d.test": (
            await create(
                http,
                world.admin,
                {**REQ, "webhook_url": HOOK_D},
                **{"X-Genqueue-Tenant": "default"},
            )
        ),
    }
    async with AsyncClient(world.settings) as producer:
        for resp in ids.values():
            await producer.wait(resp.json()["id"], 20)
        for _ in range(1000):
            states = [
                await aredis.hget(world.settings.keys.record(r.json()["id"]), Field.WEBHOOK_STATE)
                for r in ids.values()
            ]
            if states == ["done"] * 3:
                break
            await asyncio.sleep(0.02)
    assert set(received) == set(ids)
    own = {
        "hooks-a.test": world.secret_a,
        "hooks-b.test": world.secret_b,
        "hooks-d.test": GLOBAL_SECRET,
    }
    for host, request in received.items():
        body, headers = request.content.decode(), dict(request.headers)
        payload = Webhook(own[host]).verify(body, headers)
        assert payload["data"]["id"] == ids[host].json()["id"]
        for other_host, other in own.items():
            if other_host != host:
                with pytest.raises(WebhookVerificationError):
                    Webhook(other).verify(body, headers)


async def test_env_keys_are_defaults_and_anonymous_is_default(world: World) -> None:
    """A ``GENQUEUE_API_KEYS`` key acts for ``default`` (another tenant's id is 404 to it);
    with anonymous access allowed, a request without a key is ``default``'s while a wrong key
    is still refused."""
    env_key = "env-key-0123456789abcdef"
    acme_id = ""
    for app, headers in (
        (create_app(world.settings, api_keys=[env_key]), as_(env_key)),
        (create_app(world.settings, api_keys=[], allow_anonymous=True), {}),
    ):
        async with LifespanManager(app) as manager:
            transport = httpx.ASGITransport(app=manager.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://gw") as http:
                if not acme_id:
                    acme_id = (await create(http, world.acme, REQ)).json()["id"]
                made = await http.post("/v1/generations", json=REQ, headers=headers)
                assert made.status_code == 201 and made.json()["tenant"] == "default"
                read = await http.get(f"/v1/generations/{acme_id}", headers=headers)
                assert read.status_code == 404
                wrong = await http.get("/v1/stats", headers=as_("not-a-key-0123456789"))
                assert wrong.status_code == 403


async def test_a_full_admission_queue_is_a_429_and_priority_is_kept(
    http: httpx.AsyncClient, world: World
) -> None:
    """Beyond a tenant's max_waiting the gateway answers 429 with a clear body (nothing
    written); a generation's priority and why it waits show in its record."""
    set_tenant(world.conn, world.settings.keys, "acme", max_waiting=1)
    world.conn.hset(world.settings.keys.admission, "max_inflight", "1")
    first = await create(http, world.acme, REQ)
    queued = await create(http, world.acme, {**REQ, "priority": "high"})
    assert (first.status_code, queued.status_code) == (201, 201)
    assert queued.json()["priority"] == "high" and queued.json()["waiting"] == "cap"
    assert first.json()["waiting"] is None
    before = world.conn.dbsize()
    refused = await create(http, world.acme, REQ, **{"Idempotency-Key": "one-too-many"})
    assert refused.status_code == 429 and refused.headers["Retry-After"]
    error = refused.json()["error"]
    assert error["type"] == "rate_limited" and "max_waiting" in error["message"]
    assert world.conn.dbsize() == before
    # Another tenant's queue is its own.
    assert (await create(http, world.globex, OTHER_REQ)).status_code == 201
    bad = await create(http, world.acme, {**REQ, "priority": "urgent"})
    assert bad.status_code == 422
