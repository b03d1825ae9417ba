"""``create_app()``: the gateway's ASGI application, for backends in any language."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import redis
import structlog
from fastapi import FastAPI

from genqueue.gateway import errors
from genqueue.gateway.auth import (
    ENV_API_KEYS,
    ApiKeys,
    AuthMiddleware,
    GatewayConfigError,
    api_keys_from_env,
    parse_api_keys,
)
from genqueue.gateway.auth_limit import AuthFailures
from genqueue.gateway.gcra import LimitScript
from genqueue.gateway.limits import RateLimit, WaiterCap
from genqueue.gateway.middleware import BodyLimit, RequestContext
from genqueue.gateway.resources import Resources
from genqueue.gateway.routes import build_health_router, build_v1_router
from genqueue.gateway.settings import GatewaySettings
from genqueue.producer import Settings
from genqueue.producer.api_keys import KeyOwner, count_keys
from genqueue.producer.api_keys import lookup as lookup_key
from genqueue.producer.connections import sync_redis

log = structlog.get_logger(__name__)

#: Largest request body accepted (bytes); larger ones get 413.
MAX_BODY_BYTES = 256 * 1024
#: Longest ``?wait=`` long-poll (seconds).
MAX_WAIT_S = 60.0
#: Seconds to wait for a connection to Redis before answering 503.
REDIS_CONNECT_TIMEOUT_S = 5.0

DESCRIPTION = f"""
HTTP access to genqueue, a durable queue for slow, paid AI video generations.

**Auth.** Every `/v1` operation needs `Authorization: Bearer <key>`: a key created with
`genqueue key create --tenant NAME` (or `--admin`), or one listed in `{ENV_API_KEYS}`
(comma-separated; keys of the `default` tenant). No or a malformed header: **401** with
`WWW-Authenticate: Bearer`; an unknown or revoked key: **403**. `/healthz`, `/readyz` and
this document are open. (A gateway started with `allow_anonymous=True` accepts a request
without a key as the `default` tenant's: development only.)

**Tenants.** A key belongs to one tenant and reaches only that tenant's generations: another
tenant's id answers **404** (ids are never confirmed), `Idempotency-Key`s are per tenant, and
`/v1/stats` shows the tenant's own figures. An admin key reaches every tenant's generations
and acts for one with the header `X-Genqueue-Tenant: NAME` (creates, stats); without it an
admin key creates as `default` and sees the cluster's stats.

**Limits.** Each key may make `GENQUEUE_GATEWAY_RATE_BURST` requests at once, refilled at
`GENQUEUE_GATEWAY_RATE_RPS` per second, counted across every gateway process; beyond that,
and beyond `GENQUEUE_GATEWAY_MAX_WAITERS` concurrent long-polls, **429** with `Retry-After`.
A client address may fail authentication (401/403) `GENQUEUE_GATEWAY_AUTH_FAIL_BURST` times
at once, refilled at `GENQUEUE_GATEWAY_AUTH_FAIL_PER_MIN` per minute; beyond, *every* request
from it (a right key's too) gets **429** with `Retry-After` until it has a failure left.

**Idempotency.** `POST /v1/generations` honours an `Idempotency-Key` header: the same key
always names the same generation. A repeat creates nothing and answers **201** again with the
same id and `Location`, and the record as it is now (the original response is replayed, as
Stripe does; the first body wins).

**Long-poll.** `GET /v1/generations/{{id}}?wait=S` (0 < S <= {MAX_WAIT_S:g}) holds the
request until the generation is terminal or S seconds passed, and answers **200** either way
with the current record: look at `status`.

**Cancel.** `DELETE /v1/generations/{{id}}` answers **200** with outcome `cancelled` or
`already_finished`, and **202** with `requested` when the generation is being submitted
upstream at that moment (the cancel is honoured at its next step).

**Errors** all have one shape:
`{{"error": {{"type": "...", "message": "...",
"fields": [{{"field": "...", "message": "..."}}]}}}}`.
400 the body is not JSON (wrong `Content-Type`, malformed, empty); 422 it is JSON but not a
valid request (`fields` names each bad field; nothing is written); 413 the body exceeds
{MAX_BODY_BYTES // 1024} KiB; 404 unknown id; 429 over a limit (with `Retry-After`); 503 Redis
unreachable (with `Retry-After`).
Every response carries an `X-Request-ID` (the client's own, if it sent a sane one).
"""


def _stored_keys(settings: Settings) -> int:
    """How many API keys Redis holds (``genqueue key create``)."""
    try:
        with sync_redis(settings.redis_url, socket_connect_timeout=REDIS_CONNECT_TIMEOUT_S) as conn:
            return count_keys(conn, settings.keys)
    except (redis.RedisError, OSError, ValueError) as exc:
        raise GatewayConfigError(
            f"no {ENV_API_KEYS} and Redis ({settings.redis_url_redacted}) could not be asked "
            f"for stored API keys: {type(exc).__name__}"
        ) from None


def _resolve_keys(
    api_keys: Sequence[str] | None, allow_anonymous: bool, settings: Settings
) -> ApiKeys | None:
    """The ``default`` tenant's keys from the environment (or ``api_keys``). Without any,
    the gateway starts only if Redis holds keys or anonymous access is allowed."""
    keys = api_keys_from_env() if api_keys is None else parse_api_keys(",".join(api_keys))
    if keys:
        return ApiKeys(keys)
    if allow_anonymous:
        log.warning("gateway_anonymous", message="a request without a key is accepted")
        return None
    if _stored_keys(settings) == 0:
        raise GatewayConfigError(
            f"no API keys configured: create one (`genqueue key create --tenant NAME`), set "
            f"{ENV_API_KEYS} (comma-separated) or pass api_keys; allow_anonymous=True runs "
            "without auth (development only)"
        )
    return None


def create_app(
    settings: Settings | None = None,
    api_keys: Sequence[str] | None = None,
    *,
    allow_anonymous: bool = False,
    max_body_bytes: int = MAX_BODY_BYTES,
    max_wait_s: float = MAX_WAIT_S,
    limits: GatewaySettings | None = None,
) -> FastAPI:
    """The gateway app, served at the root or mounted inside another ASGI app.

    Its Redis pool and ``AsyncClient`` open on first use (a host that mounts the gateway need
    not run its lifespan); its lifespan, when run, opens them at start and closes them at the
    end. ``api_keys`` None reads ``GENQUEUE_API_KEYS``. With no keys at all the app refuses
    to be built (``GatewayConfigError``) unless ``allow_anonymous=True`` (development only).
    ``limits`` None reads ``GENQUEUE_GATEWAY_*``.
    """
    resolved = settings or Settings.from_env()
    keys = _resolve_keys(api_keys, allow_anonymous, resolved)
    try:
        caps = limits or GatewaySettings.from_env()
    except ValueError as exc:
        raise GatewayConfigError(str(exc)) from None
    resources = Resources(
        resolved,
        max_connections=caps.gateway_redis_max_connections,
        connect_timeout_s=REDIS_CONNECT_TIMEOUT_S,
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        _ = resources.client  # open at start, so a bad URL shows before the first request
        log.info(
            "gateway_started",
            redis=resolved.redis_url_redacted,
            keys=len(keys or ()),
            rate_rps=caps.gateway_rate_rps,
            rate_burst=caps.gateway_rate_burst,
            auth_fail_per_min=caps.gateway_auth_fail_per_min,
            auth_fail_burst=caps.gateway_auth_fail_burst,
            trusted_proxies=caps.gateway_trusted_proxies,
            max_waiters=caps.gateway_max_waiters,
            redis_max_connections=caps.gateway_redis_max_connections,
        )
        try:
            yield
        finally:
            await resources.aclose()
            log.info("gateway_stopped")

    app = FastAPI(
        title="genqueue gateway",
        version="1",
        description=DESCRIPTION,
        lifespan=lifespan,
    )
    app.state.resources = resources
    app.state.waiters = WaiterCap(caps.gateway_max_waiters)
    app.include_router(build_health_router())
    app.include_router(build_v1_router(max_wait_s, app.state.waiters), tags=["generations"])
    errors.install(app)
    # Added last = outermost: request id, then auth, then the rate limit, then the body cap.
    app.add_middleware(BodyLimit, max_bytes=max_body_bytes)
    # Both limits are counted in Redis, for every gateway process on it together.
    script = LimitScript(lambda: resources.client.redis)
    failures = AuthFailures(
        script,
        resolved.keys,
        per_min=caps.gateway_auth_fail_per_min,
        burst=caps.gateway_auth_fail_burst,
    )
    app.add_middleware(
        RateLimit,
        script=script,
        keys=resolved.keys,
        rate_rps=caps.gateway_rate_rps,
        burst=caps.gateway_rate_burst,
        failures=failures,
    )

    async def lookup(token: bytes) -> KeyOwner | None:
        return await lookup_key(resources.client.redis, resolved.keys, token)

    app.add_middleware(
        AuthMiddleware,
        keys=keys,
        lookup=lookup,
        anonymous=allow_anonymous,
        failures=failures,
        trusted_proxies=caps.trusted_proxies,
    )
    app.add_middleware(RequestContext)
    return app
