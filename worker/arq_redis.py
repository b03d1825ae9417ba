"""arq's Redis settings from genqueue's Redis URL, credentials included wherever they are.

``RedisSettings.from_dsn`` reads the password only from the userinfo; redis-py also accepts
``?username=`` and ``?password=`` in the query string, so a URL the producer connects with
must connect the worker's arq pool too.
"""

from __future__ import annotations

from dataclasses import replace
from urllib.parse import parse_qs, urlsplit

from arq.connections import RedisSettings


def arq_redis_settings(url: str) -> RedisSettings:
    """``RedisSettings.from_dsn(url)`` plus a username/password given in the query string."""
    base = RedisSettings.from_dsn(url)
    query = parse_qs(urlsplit(url).query)
    username = query.get("username", [None])[-1] or base.username
    password = query.get("password", [None])[-1] or base.password
    return replace(base, username=username, password=password)
