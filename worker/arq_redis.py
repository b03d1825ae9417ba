"""arq's Redis settings from genqueue's Redis URL, credentials included wherever they are.

``RedisSettings.from_dsn`` reads the password only from the userinfo; redis-py also accepts
``?username=`` and ``?password=`` in the query string, so a URL the producer connects with
must connect the worker's arq pool too. A ``redis+sentinel://`` URL gives arq the sentinels,
the service and the data nodes' credentials. The work is ``producer/connections.py``'s
``arq_settings`` (the one place Redis connections are built from a URL).
"""

from __future__ import annotations

from arq.connections import RedisSettings

from genqueue.producer.connections import arq_settings


def arq_redis_settings(url: str) -> RedisSettings:
    """arq's settings for ``url``: plain (query-string credentials included) or Sentinel."""
    return arq_settings(url)
