"""API keys kept in Redis: each names its owner (a tenant, or an operator: admin).

Only a SHA-256 of a key is stored (the hash's field), never the key: someone who reads Redis
cannot call the gateway with it. The key itself is shown once, when created. A gateway looks
a presented key up at every request, so a key created or revoked takes effect at once.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import uuid
from dataclasses import dataclass
from typing import Any, Final

import redis
import redis.asyncio

from genqueue.producer.keys import Keys
from genqueue.producer.tenants import UnknownTenant, check_tenant_name, tenant_exists

#: Every generated key starts so (secret scanners and humans recognise it).
KEY_PREFIX: Final = "gq_"


def key_digest(key: str | bytes) -> str:
    """The stored name of a key: SHA-256, hex (a key is 256 random bits: no salt needed)."""
    data = key.encode("utf-8", "surrogateescape") if isinstance(key, str) else key
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True, slots=True)
class KeyOwner:
    """Who a key speaks for: ``tenant`` (None for an admin key, which acts for any)."""

    id: str
    tenant: str | None
    name: str = ""
    admin: bool = False

    def to_json(self) -> str:
        data = {"id": self.id, "tenant": self.tenant, "name": self.name, "admin": self.admin}
        return json.dumps(data, separators=(",", ":"))

    @classmethod
    def from_json(cls, raw: str) -> KeyOwner:
        data: dict[str, Any] = json.loads(raw)
        admin = bool(data.get("admin"))
        return cls(
            id=str(data["id"]),
            tenant=None if admin else str(data["tenant"]),
            name=str(data.get("name") or ""),
            admin=admin,
        )

    def to_json_dict(self) -> dict[str, Any]:
        return {"id": self.id, "tenant": self.tenant, "name": self.name, "admin": self.admin}


def create_key(
    conn: redis.Redis, keys: Keys, *, tenant: str | None, name: str = "", admin: bool = False
) -> tuple[str, KeyOwner]:
    """A new key for ``tenant`` (configured, or ``default``) or, ``admin``, for operators;
    returns the key (shown once) and what is stored about it."""
    if admin == (tenant is not None):
        raise ValueError("a key is either a tenant's or an admin key")
    if tenant is not None:
        check_tenant_name(tenant)
        if not tenant_exists(conn, keys, tenant):
            raise UnknownTenant(tenant)
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    owner = KeyOwner(id=uuid.uuid4().hex[:12], tenant=tenant, name=name, admin=admin)
    conn.hset(keys.api_keys, key_digest(key), owner.to_json())
    return key, owner


def list_keys(conn: redis.Redis, keys: Keys) -> list[KeyOwner]:
    """Every stored key's owner (never a key), admin keys first, then by tenant and id."""
    raw: dict[str, str] = conn.hgetall(keys.api_keys)  # type: ignore[assignment]
    owners = [KeyOwner.from_json(v) for v in raw.values()]
    return sorted(owners, key=lambda o: (not o.admin, o.tenant or "", o.id))


def revoke_key(conn: redis.Redis, keys: Keys, key_id: str) -> bool:
    """Delete the key with this id; False if there is none."""
    raw: dict[str, str] = conn.hgetall(keys.api_keys)  # type: ignore[assignment]
    for digest, value in raw.items():
        if KeyOwner.from_json(value).id == key_id:
            return bool(conn.hdel(keys.api_keys, digest))
    return False


def count_keys(conn: redis.Redis, keys: Keys) -> int:
    """How many keys are stored."""
    return int(conn.hlen(keys.api_keys))  # type: ignore[arg-type]


async def lookup(
    client: redis.asyncio.Redis, keys: Keys, presented: str | bytes
) -> KeyOwner | None:
    """The owner of a presented key, or None (one ``HGET`` of its digest)."""
    raw = await client.hget(keys.api_keys, key_digest(presented))  # type: ignore[misc]
    return None if raw is None else KeyOwner.from_json(raw)
