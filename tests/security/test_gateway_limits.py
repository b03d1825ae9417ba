"""The gateway under load: a per-key request rate shared by every gateway process, a cap on
concurrent long-polls (both 429 with Retry-After), defaults that let a backend's burst of a
few hundred through, and a bounded Redis pool."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import httpx
import pytest
import redis.asyncio
from asgi_lifespan import LifespanManager
from click.testing import CliRunner

import genqueue.cli
from genqueue.cli import main
from genqueue.gateway import create_app
from genqueue.gateway.auth_limit import AuthFailures
from genqueue.gateway.gcra import Gcra, LimitScript
from genqueue.gateway.limits import WaiterCap
from genqueue.gateway.settings import GatewaySettings
from genqueue.producer import AsyncClient, Settings
from tests.security.conftest import KEY, OTHER_KEY, REQ

AUTH = {"Authorization": f"Bearer {KEY}"}
OTHER = {"Authorization": f"Bearer {OTHER_KEY}"}


async def _serve(settings: Settings, limits: GatewaySettings) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings, api_keys=[KEY, OTHER_KEY], limits=limits)
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as http:
            yield http


@pytest.fixture
async def tight(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """A gateway allowing 3 requests per key at once, refilled at a crawl."""
    limits = GatewaySettings(gateway_rate_rps=0.01, gateway_rate_burst=3)
    async for http in _serve(settings, limits):
        yield http


@pytest.fixture
async def one_waiter(settings: Settings) -> AsyncIterator[tuple[httpx.AsyncClient, WaiterCap]]:
    """A gateway holding at most 1 long-poll (the default request rate), and its counter."""
    app = create_app(
        settings, api_keys=[KEY, OTHER_KEY], limits=GatewaySettings(gateway_max_waiters=1)
    )
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as http:
            yield http, app.state.waiters


async def test_over_the_rate_a_key_gets_429_and_other_keys_do_not(
    tight: httpx.AsyncClient,
) -> None:
    """Past its burst a key is answered 429 with Retry-After; another key is unaffected and
    the open probes are not counted."""
    for _ in range(3):
        assert (await tight.get("/v1/stats", headers=AUTH)).status_code == 200
    refused = await tight.get("/v1/stats", headers=AUTH)
    assert refused.status_code == 429
    assert refused.json()["error"]["type"] == "rate_limited"
    assert int(refused.headers["retry-after"]) >= 1
    assert (await tight.post("/v1/generations", json=REQ, headers=AUTH)).status_code == 429
    assert (await tight.get("/v1/stats", headers=OTHER)).status_code == 200
    assert (await tight.get("/healthz")).status_code == 200


async def test_over_the_waiter_cap_a_long_poll_gets_429(
    one_waiter: tuple[httpx.AsyncClient, WaiterCap], client: AsyncClient
) -> None:
    """With the one long-poll slot held, another ``?wait=`` is answered 429 with Retry-After;
    once the first ends, long-polls are served again."""
    first_id, second_id = await client.submit(REQ), await client.submit(REQ)
    tight, waiters = one_waiter
    holder = asyncio.create_task(
        tight.get(f"/v1/generations/{first_id}", params={"wait": 30}, headers=AUTH)
    )
    # Until the holder has its slot (bounded by the test timeout); the counter has no event.
    while waiters.active < 1:  # noqa: ASYNC110
        await asyncio.sleep(0.01)
    refused = await tight.get(f"/v1/generations/{second_id}", params={"wait": 5}, headers=OTHER)
    assert refused.status_code == 429
    assert refused.headers["retry-after"] == "1"
    assert "long-poll" in refused.json()["error"]["message"]
    await client.cancel(first_id)
    assert (await holder).json()["status"] == "cancelled"
    again = await tight.get(f"/v1/generations/{second_id}", params={"wait": 0.05}, headers=OTHER)
    assert again.status_code == 200


def test_default_rate_lets_a_burst_of_a_few_hundred_through() -> None:
    """With the defaults a key may send 500 requests at once before any is refused (GCRA:
    tolerance / interval + 1 at once)."""
    defaults = GatewaySettings()
    limit = Gcra.of(per_s=defaults.gateway_rate_rps, burst=defaults.gateway_rate_burst)
    assert limit.tolerance_us // limit.interval_us + 1 == 500


async def test_a_burst_goes_through_then_the_limit_refuses(settings: Settings) -> None:
    """The script lets exactly ``burst`` requests through at once, then refuses."""
    client = redis.asyncio.Redis.from_url(settings.redis_url, decode_responses=True)
    script = LimitScript(lambda: client)
    limit = Gcra.of(per_s=0.01, burst=5)
    try:
        for _ in range(5):
            assert (await script.run("gqt:burst", limit)).outcome == "OK"
        refused = await script.run("gqt:burst", limit)
        assert refused.outcome == "RATE" and refused.wait_s > 90
    finally:
        await client.aclose()


async def test_a_refused_request_is_told_when_the_next_one_is_free(settings: Settings) -> None:
    """An exhausted limit answers the wait until its next request (at most one interval),
    and grants that request once the wait has passed."""
    client = redis.asyncio.Redis.from_url(settings.redis_url, decode_responses=True)
    script = LimitScript(lambda: client)
    limit = Gcra.of(per_s=20.0, burst=1)
    try:
        assert (await script.run("gqt:refill", limit)).outcome == "OK"
        refused = await script.run("gqt:refill", limit)
        assert refused.outcome == "RATE" and 0 < refused.wait_s <= 0.05
        await asyncio.sleep(refused.wait_s)
        assert (await script.run("gqt:refill", limit)).outcome == "OK"
    finally:
        await client.aclose()


def test_limits_read_from_the_environment() -> None:
    """GENQUEUE_GATEWAY_RATE_RPS / _RATE_BURST / _MAX_WAITERS / _REDIS_MAX_CONNECTIONS."""
    limits = GatewaySettings.from_env(
        {
            "GENQUEUE_GATEWAY_RATE_RPS": "7.5",
            "GENQUEUE_GATEWAY_RATE_BURST": "40",
            "GENQUEUE_GATEWAY_MAX_WAITERS": "9",
            "GENQUEUE_GATEWAY_REDIS_MAX_CONNECTIONS": "12",
            "GENQUEUE_GATEWAY_AUTH_FAIL_PER_MIN": "6",
            "GENQUEUE_GATEWAY_AUTH_FAIL_BURST": "8",
            "GENQUEUE_GATEWAY_TRUSTED_PROXIES": "10.0.0.0/8, 2001:db8::1",
        }
    )
    assert limits == GatewaySettings(7.5, 40, 9, 12, 6.0, 8, "10.0.0.0/8, 2001:db8::1")
    assert [str(n) for n in limits.trusted_proxies] == ["10.0.0.0/8", "2001:db8::1/128"]
    with pytest.raises(ValueError, match="gateway_rate_burst"):
        GatewaySettings(gateway_rate_burst=0)
    with pytest.raises(ValueError, match="gateway_auth_fail_per_min"):
        GatewaySettings(gateway_auth_fail_per_min=0)
    with pytest.raises(ValueError, match="gateway_trusted_proxies"):
        GatewaySettings(gateway_trusted_proxies="10.0.0.0/8,proxy.local")


async def test_redis_connections_are_bounded(settings: Settings) -> None:
    """The gateway's Redis pool is a blocking pool of GENQUEUE_GATEWAY_REDIS_MAX_CONNECTIONS."""
    limits = GatewaySettings(gateway_redis_max_connections=7)
    app = create_app(settings, api_keys=[KEY], limits=limits)
    try:
        pool = app.state.resources.client.redis.connection_pool
        assert isinstance(pool, redis.asyncio.BlockingConnectionPool)
        assert pool.max_connections == 7
    finally:
        await app.state.resources.aclose()


def test_remembered_refusals_use_a_monotonic_clock() -> None:
    """A process remembers refused addresses by a monotonic clock (a wall-clock step cannot
    end a refusal early); the shared limits use Redis's clock."""
    failures = AuthFailures(LimitScript(lambda: redis.asyncio.Redis()), Settings().keys, 1, 1)
    assert failures.clock is time.monotonic


def test_gateway_command_refuses_a_bad_limit(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`genqueue gateway` with an unparsable or zero limit exits 2 naming it, before serving."""
    monkeypatch.setattr(genqueue.cli, "configure_logging", lambda *a, **k: None)
    base = {"GENQUEUE_REDIS_URL": settings.redis_url, "GENQUEUE_API_KEYS": KEY}
    for name, value in (
        ("GENQUEUE_GATEWAY_RATE_RPS", "fast"),
        ("GENQUEUE_GATEWAY_MAX_WAITERS", "0"),
    ):
        result = CliRunner().invoke(main, ["gateway"], env={**base, name: value})
        assert result.exit_code == 2, result.output
        assert name.removeprefix("GENQUEUE_").lower() in result.stderr.lower()
