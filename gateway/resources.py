"""The gateway's Redis connection and producer client, opened on first use.

Opened lazily so the gateway works wherever it is served: at the root (its lifespan closes
them), or mounted inside another app whose lifespan never runs the gateway's.
"""

from __future__ import annotations

import redis.asyncio
import structlog

from genqueue.producer import AsyncClient, Settings
from genqueue.producer.connections import async_redis

log = structlog.get_logger(__name__)


class Resources:
    """One bounded Redis pool and one ``AsyncClient`` per gateway app.

    The pool holds at most ``max_connections``; a request finding all of them busy waits up
    to ``connect_timeout_s`` for one (then redis-py raises, answered 503).
    """

    def __init__(self, settings: Settings, max_connections: int, connect_timeout_s: float):
        self._settings = settings
        self._max_connections = max_connections
        self._connect_timeout_s = connect_timeout_s
        self._client: AsyncClient | None = None
        self._redis: redis.asyncio.Redis | None = None

    @property
    def client(self) -> AsyncClient:
        """The producer client, created on first use (no await: no two are ever made)."""
        if self._client is None:
            # Plain or Sentinel (``redis+sentinel://``), through the one connection module.
            self._redis = async_redis(
                self._settings.redis_url,
                decode_responses=True,
                max_connections=self._max_connections,
                pool_timeout_s=self._connect_timeout_s,
                # A bounded connect: an unreachable Redis answers 503 soon, not a hang.
                socket_connect_timeout=self._connect_timeout_s,
            )
            self._client = AsyncClient(self._settings, client=self._redis)
            log.info(
                "gateway_redis_opened",
                redis=self._settings.redis_url_redacted,
                max_connections=self._max_connections,
            )
        return self._client

    async def aclose(self) -> None:
        """Close the client and its pool (a later request opens them again)."""
        client, connection = self._client, self._redis
        self._client = self._redis = None
        if client is not None:
            await client.aclose()
        if connection is not None:
            await connection.aclose(close_connection_pool=True)
