"""Fixtures for the security tests: keys, and a Redis user that needs a password."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import urlsplit

import pytest
import redis

from genqueue.producer.settings import Settings

KEY = "gq-sec-right-key-0123456789abcdef"
OTHER_KEY = "gq-sec-other-key-fedcba9876543210"
WRONG_KEY = "gq-sec-wrong-key-000000000000000"
MODEL = "minimax/video-01-director"
REQ = {"model": MODEL, "prompt": "a paper boat on a canal"}


@dataclass(frozen=True)
class RedisUser:
    """A Redis ACL user with a password: ``host``/``port``/``db`` of the test server."""

    name: str
    password: str
    host: str
    port: int
    db: str

    def url_in_userinfo(self) -> str:
        return f"redis://{self.name}:{self.password}@{self.host}:{self.port}/{self.db}"

    def url_in_query(self) -> str:
        return (
            f"redis://{self.host}:{self.port}/{self.db}"
            f"?username={self.name}&password={self.password}"
        )


@pytest.fixture
def redis_user(redis_url: str) -> Iterator[RedisUser]:
    """A password-protected ACL user on the test server (the default user is untouched)."""
    parts = urlsplit(redis_url)
    user = RedisUser(
        name=f"gq-sec-{uuid.uuid4().hex[:6]}",
        password=f"pw-{uuid.uuid4().hex}",
        host=parts.hostname or "127.0.0.1",
        port=parts.port or 6379,
        db=parts.path.strip("/") or "0",
    )
    admin = redis.Redis.from_url(redis_url)
    admin.execute_command(
        "ACL", "SETUSER", user.name, "on", f">{user.password}", "~*", "&*", "+@all"
    )
    try:
        yield user
    finally:
        admin.execute_command("ACL", "DELUSER", user.name)
        admin.close()


@pytest.fixture
def secure_settings(settings: Settings, redis_user: RedisUser) -> Settings:
    """The test settings, connecting as the password-protected user (password in the query)."""
    return Settings(redis_url=redis_user.url_in_query(), key_prefix=settings.key_prefix)
