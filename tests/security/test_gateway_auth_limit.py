"""Failed authentications are limited per client address and the per-key rate is shared, both
across gateway processes (two app instances on one Redis); X-Forwarded-For counts only from a
trusted proxy; the limit keys expire and never name a key."""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import httpx
import pytest
import redis.asyncio
from asgi_lifespan import LifespanManager

import genqueue.gateway.app
from genqueue.gateway import create_app
from genqueue.gateway.auth_limit import MAX_REMEMBERED, AuthFailures
from genqueue.gateway.client_address import client_ip, limit_address
from genqueue.gateway.gcra import LimitScript
from genqueue.gateway.settings import GatewaySettings
from genqueue.producer import Settings
from tests.security.conftest import KEY, OTHER_KEY, WRONG_KEY

RIGHT = {"Authorization": f"Bearer {KEY}"}
OTHER = {"Authorization": f"Bearer {OTHER_KEY}"}
WRONG = {"Authorization": f"Bearer {WRONG_KEY}"}
ATTACKER = "203.0.113.7"
BYSTANDER = "198.51.100.20"
#: Three failures at once, then one every 100 s: a test never sees one refill.
TIGHT_AUTH = GatewaySettings(gateway_auth_fail_per_min=0.6, gateway_auth_fail_burst=3)

Open = Callable[[str], Awaitable[httpx.AsyncClient]]


@asynccontextmanager
async def _gateways(
    settings: Settings, limits: GatewaySettings, count: int = 2
) -> AsyncIterator[list[Open]]:
    """``count`` gateway apps on one Redis, as ``count`` processes would be; each entry opens
    an HTTP client to its app as seen from a given peer address."""
    async with AsyncExitStack() as stack:
        apps = []
        for _ in range(count):
            app = create_app(settings, api_keys=[KEY, OTHER_KEY], limits=limits)
            apps.append((await stack.enter_async_context(LifespanManager(app))).app)

        def opener(app: Any) -> Open:
            async def open_from(peer: str) -> httpx.AsyncClient:
                transport = httpx.ASGITransport(app=app, client=(peer, 40000))
                http = httpx.AsyncClient(transport=transport, base_url="http://gw")
                return await stack.enter_async_context(http)

            return open_from

        yield [opener(app) for app in apps]


async def test_past_its_failures_an_address_gets_429_even_with_the_right_key(
    settings: Settings,
) -> None:
    """An address gets 401/403 for its first failed authentications, then 429 with
    Retry-After for every request, a right key's included; another address is unaffected."""
    async with _gateways(settings, TIGHT_AUTH, count=1) as (gateway,):
        attacker, bystander = await gateway(ATTACKER), await gateway(BYSTANDER)
        assert (await attacker.get("/v1/stats", headers=WRONG)).status_code == 403
        assert (await attacker.get("/v1/stats")).status_code == 401
        assert (await attacker.post("/v1/generations", json={}, headers=WRONG)).status_code == 403
        for headers in (WRONG, {}, RIGHT):
            refused = await attacker.get("/v1/stats", headers=headers)
            assert refused.status_code == 429
            assert refused.json()["error"]["type"] == "rate_limited"
            assert "failed authentications" in refused.json()["error"]["message"]
            assert int(refused.headers["retry-after"]) >= 60
        assert (await bystander.get("/v1/stats", headers=RIGHT)).status_code == 200
        assert (await bystander.get("/v1/stats", headers=WRONG)).status_code == 403
        assert (await attacker.get("/healthz")).status_code == 200


async def test_two_gateways_share_an_addresss_failures(settings: Settings) -> None:
    """Failures counted by one gateway process count on another: the burst is spent across
    both, and the other one then refuses the address's right key too."""
    async with _gateways(settings, TIGHT_AUTH) as (first, second):
        a, b = await first(ATTACKER), await second(ATTACKER)
        assert (await a.get("/v1/stats", headers=WRONG)).status_code == 403
        assert (await b.get("/v1/stats", headers=WRONG)).status_code == 403
        assert (await a.get("/v1/stats", headers=WRONG)).status_code == 403
        assert (await b.get("/v1/stats", headers=WRONG)).status_code == 429
        assert (await a.get("/v1/stats", headers=RIGHT)).status_code == 429


async def test_a_refused_address_costs_no_key_lookup(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Once a gateway has refused an address, its further guesses are answered 429 without
    looking their key up in Redis."""
    looked_up: list[bytes] = []
    real = genqueue.gateway.app.lookup_key

    async def counting(client: Any, keys: Any, token: bytes) -> Any:
        looked_up.append(token)
        return await real(client, keys, token)

    monkeypatch.setattr(genqueue.gateway.app, "lookup_key", counting)
    async with _gateways(settings, TIGHT_AUTH, count=1) as (gateway,):
        attacker = await gateway(ATTACKER)
        for _ in range(4):
            await attacker.get("/v1/stats", headers=WRONG)
        assert len(looked_up) == 4  # three 403s and the one refused in Redis
        for n in range(20):
            guess = {"Authorization": f"Bearer guess-{n}"}
            assert (await attacker.get("/v1/stats", headers=guess)).status_code == 429
        assert len(looked_up) == 4


async def test_two_gateways_share_a_keys_request_rate(settings: Settings) -> None:
    """A key's burst is spent across gateway processes: two gateways together let through
    what one would, then refuse that key (429, Retry-After) and not another key."""
    limits = GatewaySettings(gateway_rate_rps=0.01, gateway_rate_burst=3)
    async with _gateways(settings, limits) as (first, second):
        a, b = await first(BYSTANDER), await second(BYSTANDER)
        assert (await a.get("/v1/stats", headers=RIGHT)).status_code == 200
        assert (await b.get("/v1/stats", headers=RIGHT)).status_code == 200
        assert (await b.get("/v1/stats", headers=RIGHT)).status_code == 200
        for http in (a, b):
            refused = await http.get("/v1/stats", headers=RIGHT)
            assert refused.status_code == 429
            assert "this API key" in refused.json()["error"]["message"]
            assert int(refused.headers["retry-after"]) >= 1
        assert (await a.get("/v1/stats", headers=OTHER)).status_code == 200


async def test_x_forwarded_for_counts_only_from_a_trusted_proxy(settings: Settings) -> None:
    """Without trusted proxies a client rotating X-Forwarded-For is still counted by its own
    address; behind a trusted proxy each forwarded client is counted on its own, by the hop
    the proxy appended (not by what the client wrote further left)."""
    async with _gateways(settings, TIGHT_AUTH, count=1) as (gateway,):
        direct = await gateway(ATTACKER)
        for n in range(3):
            spoofed = {**WRONG, "X-Forwarded-For": f"192.0.2.{n}"}
            assert (await direct.get("/v1/stats", headers=spoofed)).status_code == 403
        spoofed = {**WRONG, "X-Forwarded-For": "192.0.2.99"}
        assert (await direct.get("/v1/stats", headers=spoofed)).status_code == 429
    behind = GatewaySettings(
        gateway_auth_fail_per_min=0.6,
        gateway_auth_fail_burst=3,
        gateway_trusted_proxies="10.0.0.0/8",
    )
    async with _gateways(settings, behind, count=1) as (gateway,):
        proxy = await gateway("10.0.0.5")
        for n in range(3):
            # The client wrote a fake first hop; the proxy appended the real one.
            forwarded = {**WRONG, "X-Forwarded-For": f"192.0.2.{n}, {BYSTANDER}"}
            assert (await proxy.get("/v1/stats", headers=forwarded)).status_code == 403
        forwarded = {**RIGHT, "X-Forwarded-For": f"192.0.2.77, {BYSTANDER}"}
        assert (await proxy.get("/v1/stats", headers=forwarded)).status_code == 429
        other_client = {**RIGHT, "X-Forwarded-For": "192.0.2.77"}
        assert (await proxy.get("/v1/stats", headers=other_client)).status_code == 200


async def test_limit_keys_expire_and_never_name_a_key(
    settings: Settings, aredis: redis.asyncio.Redis
) -> None:
    """Every key the gateway's limits write has a TTL no longer than its burst's refill, and
    holds neither an API key nor its SHA-256 (the name ``{prefix}:apikeys`` uses)."""
    limits = GatewaySettings(
        gateway_rate_rps=100, gateway_rate_burst=500, gateway_auth_fail_burst=50
    )
    async with _gateways(settings, limits, count=1) as (gateway,):
        http = await gateway(ATTACKER)
        for headers in (RIGHT, OTHER, WRONG, {}):
            await http.get("/v1/stats", headers=headers)
    written = [k async for k in aredis.scan_iter(f"{settings.key_prefix}:gw:*")]
    assert len(written) == 3  # two keys' rates, one address's failures
    secrets = [s for k in (KEY, OTHER_KEY, WRONG_KEY) for s in _spellings(k)]
    for key in written:
        ttl_ms = await aredis.pttl(key)
        refill_ms = 50 * 3000 if ":authfail:" in key else 500 * 10
        assert 0 < ttl_ms <= refill_ms + 1000, key
        value = await aredis.get(key)
        assert not any(s in key or s in value for s in secrets), key


def _spellings(key: str) -> list[str]:
    digest = hashlib.sha256(key.encode()).hexdigest()
    return [key, digest, digest[:16]]


def test_client_address_reads_forwarded_hops_only_from_trusted_proxies() -> None:
    """The peer is the client unless it is a trusted proxy; then the rightmost hop that is
    not a trusted proxy is, and a garbled hop stops the walk at the last trusted one."""
    proxies = (ipaddress.ip_network("10.0.0.0/8"),)

    def scope(peer: str, forwarded: str | None) -> dict[str, Any]:
        headers = [] if forwarded is None else [(b"x-forwarded-for", forwarded.encode())]
        return {"client": (peer, 1), "headers": headers}

    assert str(client_ip(scope("203.0.113.7", "1.2.3.4"))) == "203.0.113.7"
    assert str(client_ip(scope("203.0.113.7", "1.2.3.4"), proxies)) == "203.0.113.7"
    assert str(client_ip(scope("10.0.0.5", "1.2.3.4, 5.6.7.8"), proxies)) == "5.6.7.8"
    assert str(client_ip(scope("10.0.0.5", "1.2.3.4, 10.1.1.1"), proxies)) == "1.2.3.4"
    assert str(client_ip(scope("10.0.0.5", "1.2.3.4, junk, 10.1.1.1"), proxies)) == "10.1.1.1"
    assert str(client_ip(scope("10.0.0.5", None), proxies)) == "10.0.0.5"
    assert client_ip({"headers": []}) is None


def test_ipv6_addresses_count_per_64() -> None:
    """Addresses of one IPv6 /64 share one failure count; an IPv4-mapped address counts as
    its IPv4 address; no address at all is one shared name."""
    one = limit_address(ipaddress.ip_address("2001:db8:1:2::1"))
    assert one == limit_address(ipaddress.ip_address("2001:db8:1:2:ffff::9")) == "2001:db8:1:2::/64"
    assert limit_address(ipaddress.ip_address("2001:db8:1:3::1")) != one
    assert limit_address(ipaddress.ip_address("::ffff:203.0.113.7")) == "203.0.113.7"
    assert limit_address(None) == "unknown"


def test_remembered_refusals_are_bounded() -> None:
    """A process remembers at most MAX_REMEMBERED refused addresses, forgetting the oldest."""
    failures = AuthFailures(
        LimitScript(lambda: redis.asyncio.Redis()), Settings().keys, 1, 1, clock=lambda: 0.0
    )
    for n in range(MAX_REMEMBERED + 5):
        failures.remember(f"a{n}", 60.0)
    assert failures.refused_for("a0") == 0.0
    assert failures.refused_for(f"a{MAX_REMEMBERED + 4}") == 60.0
    assert sum(failures.refused_for(f"a{n}") > 0 for n in range(MAX_REMEMBERED + 5)) == (
        MAX_REMEMBERED
    )


def test_served_gateway_leaves_forwarded_headers_to_its_own_setting(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``serve()`` turns uvicorn's X-Forwarded-For handling off (it trusts loopback peers by
    default), so only GENQUEUE_GATEWAY_TRUSTED_PROXIES decides who the client is."""
    import uvicorn

    from genqueue.gateway.server import serve

    seen: list[uvicorn.Config] = []
    monkeypatch.setattr(uvicorn.Server, "run", lambda self, *a, **k: seen.append(self.config))
    serve(settings, api_keys=[KEY])
    assert seen[0].proxy_headers is False
