"""The one place Redis clients are built from ``GENQUEUE_REDIS_URL``: plain or Sentinel.

``redis://[user:password@]host:port/DB`` (``rediss://`` for TLS) names one server.
``redis+sentinel://[user:password@]host1:26379,host2:26379/SERVICE/DB`` (``rediss+sentinel://``
for TLS) names the sentinels watching SERVICE; clients ask them for the current primary on every
new connection, so they follow it across a failover. The user and password are the data nodes'
(the sentinels are reached without credentials); they are never logged (see ``redact_url``).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit

import redis
import redis.asyncio
import redis.asyncio.sentinel
import redis.sentinel

SENTINEL_SCHEMES = ("redis+sentinel", "rediss+sentinel")
DEFAULT_SENTINEL_PORT = 26379


@dataclass(frozen=True, slots=True)
class SentinelTarget:
    """A Sentinel-managed primary: where the sentinels are, which service, which database."""

    sentinels: tuple[tuple[str, int], ...]
    service: str
    db: int = 0
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    ssl: bool = False

    def data_kwargs(self) -> dict[str, Any]:
        """Connection options for the data nodes (primary and replicas)."""
        out: dict[str, Any] = {"db": self.db}
        if self.username:
            out["username"] = self.username
        if self.password:
            out["password"] = self.password
        if self.ssl:
            out["ssl"] = True
        return out


def is_sentinel_url(url: str) -> bool:
    """True for a ``redis+sentinel://`` or ``rediss+sentinel://`` URL."""
    return url.split("://", 1)[0].lower() in SENTINEL_SCHEMES


def parse_sentinel_url(url: str) -> SentinelTarget:
    """Parse ``redis+sentinel://[user:password@]h1:26379,h2:26379/SERVICE/DB``.

    Raises ``ValueError`` (never echoing the password) when the URL is malformed.
    """
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() not in SENTINEL_SCHEMES:
        raise ValueError("not a redis+sentinel:// URL")
    netloc, _, path = rest.partition("/")
    path = urlsplit("//x/" + path).path  # drop any ?query or #fragment
    userinfo, at, hosts = netloc.rpartition("@")
    username = password = None
    if at:
        user, colon, pw = userinfo.partition(":")
        username = unquote(user) or None
        password = unquote(pw) if colon else None
    sentinels = tuple(_host_port(h) for h in hosts.split(",") if h)
    if not sentinels:
        raise ValueError("a redis+sentinel:// URL needs at least one sentinel host:port")
    parts = [p for p in path.split("/") if p]
    if not parts or len(parts) > 2:
        raise ValueError("a redis+sentinel:// URL ends in /SERVICE or /SERVICE/DB")
    try:
        db = int(parts[1]) if len(parts) == 2 else 0
    except ValueError:
        raise ValueError(f"database {parts[1]!r} is not a number") from None
    return SentinelTarget(
        sentinels=sentinels,
        service=unquote(parts[0]),
        db=db,
        username=username,
        password=password,
        ssl=scheme.lower() == "rediss+sentinel",
    )


def _host_port(text: str) -> tuple[str, int]:
    if text.startswith("["):  # [IPv6]:port
        host, _, rest = text[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    else:
        host, _, port = text.partition(":")
    if not host:
        raise ValueError("a sentinel address has no host")
    try:
        return host, int(port) if port else DEFAULT_SENTINEL_PORT
    except ValueError:
        raise ValueError(f"sentinel port {port!r} is not a number") from None


def _sentinel_kwargs(target: SentinelTarget, options: dict[str, Any]) -> dict[str, Any]:
    """Options for the connections to the sentinels: the timeouts, and TLS if asked (with the
    same ``ssl_*`` options, e.g. a CA, as the data nodes: one deployment, one PKI)."""
    out = {k: v for k, v in options.items() if k.startswith("socket_")}
    if target.ssl:
        out["ssl"] = True
        out.update({k: v for k, v in options.items() if k.startswith("ssl_")})
    return out


class SentinelAsyncRedis(redis.asyncio.Redis):
    """An asyncio client for a Sentinel-managed primary; ``aclose()`` also closes the
    connections to the sentinels."""

    sentinel_manager: redis.asyncio.sentinel.Sentinel | None = None

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        await super().aclose(close_connection_pool)
        if self.sentinel_manager is not None:
            for s in self.sentinel_manager.sentinels:
                await s.aclose()


class SentinelRedis(redis.Redis):
    """A blocking client for a Sentinel-managed primary; ``close()`` also closes the
    connections to the sentinels."""

    sentinel_manager: redis.sentinel.Sentinel | None = None

    def close(self) -> None:
        super().close()
        if self.sentinel_manager is not None:
            for s in self.sentinel_manager.sentinels:
                s.close()


@functools.cache
def _sentinel_class(client_class: type[redis.asyncio.Redis]) -> type[SentinelAsyncRedis]:
    """``client_class`` that also closes its sentinels (e.g. arq's ``ArqRedis``)."""
    if client_class is redis.asyncio.Redis:
        return SentinelAsyncRedis
    return type(f"Sentinel{client_class.__name__}", (SentinelAsyncRedis, client_class), {})


class BlockingSentinelConnectionPool(
    redis.asyncio.sentinel.SentinelConnectionPool, redis.asyncio.BlockingConnectionPool
):
    """A Sentinel-managed pool with a bound: at most ``max_connections``, a caller finding all
    busy waits up to ``timeout`` seconds for one (then ``ConnectionError``), as
    ``BlockingConnectionPool`` does for one server."""


def async_redis(
    url: str,
    *,
    max_connections: int | None = None,
    pool_timeout_s: float | None = None,
    client_class: type[redis.asyncio.Redis] = redis.asyncio.Redis,
    **options: Any,
) -> redis.asyncio.Redis:
    """An asyncio client for ``url`` (plain or Sentinel); ``options`` as for ``Redis()``.

    With ``max_connections`` the pool is bounded and blocking: a caller finding every
    connection busy waits up to ``pool_timeout_s`` (None: forever) for one. ``client_class``:
    a subclass of ``Redis`` to build (the worker's arq pool is an ``ArqRedis``).
    """
    if not is_sentinel_url(url):
        if max_connections is None:
            plain: redis.asyncio.Redis = client_class.from_url(url, **options)
            return plain
        pool = redis.asyncio.BlockingConnectionPool.from_url(
            url, max_connections=max_connections, timeout=pool_timeout_s, **options
        )
        bounded: redis.asyncio.Redis = client_class.from_pool(pool)
        return bounded
    target = parse_sentinel_url(url)
    sentinel = redis.asyncio.sentinel.Sentinel(  # type: ignore[no-untyped-call]
        list(target.sentinels), sentinel_kwargs=_sentinel_kwargs(target, options)
    )
    pool_options: dict[str, Any] = {}
    if max_connections is not None:
        pool_options = {
            "connection_pool_class": BlockingSentinelConnectionPool,
            "max_connections": max_connections,
            "timeout": pool_timeout_s,
        }
    client: SentinelAsyncRedis = sentinel.master_for(
        target.service,
        redis_class=_sentinel_class(client_class),
        **target.data_kwargs(),
        **pool_options,
        **options,
    )
    client.sentinel_manager = sentinel
    return client


def sync_redis(url: str, **options: Any) -> redis.Redis:
    """A blocking client for ``url`` (plain or Sentinel); ``options`` as for ``Redis()``."""
    if not is_sentinel_url(url):
        return redis.Redis.from_url(url, **options)
    target = parse_sentinel_url(url)
    sentinel = redis.sentinel.Sentinel(  # type: ignore[no-untyped-call]
        list(target.sentinels), sentinel_kwargs=_sentinel_kwargs(target, options)
    )
    client: SentinelRedis = sentinel.master_for(  # type: ignore[no-untyped-call]
        target.service, redis_class=SentinelRedis, **target.data_kwargs(), **options
    )
    client.sentinel_manager = sentinel
    return client
