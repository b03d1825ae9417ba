"""The worker's arq pool, built from genqueue's Redis URL like every other Redis client.

arq's own ``create_pool`` (from a ``RedisSettings``) is not used, for two reasons:

* with ``rediss+sentinel://`` it passes ``ssl`` to the data nodes only, so its connections to
  the sentinels were plain TCP (and a TLS-only sentinel refused them);
* while Redis is unreachable at start it retries with a new ``Sentinel`` client each time and
  never closes the ones it gave up on (their connections to the sentinels stay open).

``producer/connections.py``'s ``async_redis`` builds the pool instead: the same URL rules
(credentials in the userinfo or the query string, TLS to the sentinels and the data nodes),
and a client whose ``aclose()`` also closes its sentinels. The worker hands it to arq
(``redis_pool=``); a failed start is retried by the supervisor (``run_worker``), which closes
the pool first.
"""

from __future__ import annotations

from typing import Any, cast

from arq.connections import ArqRedis
from arq.constants import expires_extra_ms as ARQ_EXPIRES_EXTRA_MS
from arq.jobs import Deserializer, Serializer

from genqueue.producer.connections import async_redis

#: Seconds to wait for a connection to Redis (arq's own default is 1).
CONNECT_TIMEOUT_S = 5.0


def arq_pool(
    url: str,
    *,
    queue_name: str,
    job_serializer: Serializer | None = None,
    job_deserializer: Deserializer | None = None,
    expires_extra_ms: int = ARQ_EXPIRES_EXTRA_MS,
    **options: Any,
) -> ArqRedis:
    """arq's pool for ``url`` (plain or Sentinel, TLS wherever the scheme says ``rediss``);
    nothing connects until the first command. ``options`` as for ``Redis()``."""
    options.setdefault("socket_connect_timeout", CONNECT_TIMEOUT_S)
    pool = cast(ArqRedis, async_redis(url, client_class=ArqRedis, **options))
    pool.default_queue_name = queue_name
    pool.job_serializer = job_serializer
    pool.job_deserializer = job_deserializer
    pool.expires_extra_ms = expires_extra_ms
    return pool
