"""The tenants registry in Redis: who may own requests, and each tenant's own settings.

A tenant is a backend (a team, a product, a platform's customer) sharing the deployment.
``default`` always exists (it owns every request that names no tenant, and every record
written before tenants existed); any other tenant exists only once configured, so tenant
names stay a bounded set (they are metric labels). Settings are one JSON value per tenant in
the ``tenants`` hash (``lua/_admit.lua`` reads the admission ones: ``weight``,
``max_inflight``, ``max_waiting``); later settings (budgets) join ``TenantConfig``.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Final

import redis
import redis.asyncio
from standardwebhooks import Webhook

from genqueue.producer.admission import admit_all_sync
from genqueue.producer.errors import GenqueueError
from genqueue.producer.keys import DEFAULT_TENANT, Keys, Tag
from genqueue.producer.scripts import decode_reply, source

#: Lowercase letters, digits, "-" and "_", starting with a letter or digit, at most 32: safe
#: in Redis key names (no ":"), in the counts hash (no "|") and as a metric label.
TENANT_NAME: Final = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")
#: Webhook secrets kept per tenant: the newest signs, the older ones sign too (rotation).
MAX_WEBHOOK_SECRETS: Final = 3
#: Shortest webhook secret accepted (bytes of key material).
MIN_SECRET_BYTES: Final = 16


class TenantError(GenqueueError, ValueError):
    """A tenant name is malformed, unknown, or the operation is refused for it."""


class UnknownTenant(TenantError):
    """The tenant is not configured (a request for it is refused, nothing written)."""

    def __init__(self, tenant: str) -> None:
        self.tenant = tenant
        super().__init__(f"unknown tenant {tenant!r}: configure it with `genqueue tenant set`")


def check_tenant_name(name: str) -> str:
    """``name`` if it is a well-formed tenant name, else ``TenantError``."""
    if not TENANT_NAME.match(name):
        raise TenantError(
            "a tenant name is 1-32 characters: lowercase letters, digits, '-' and '_', "
            "starting with a letter or digit"
        )
    return name


def new_webhook_secret() -> str:
    """A fresh Standard Webhooks secret (``whsec_`` + 32 random bytes, base64)."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def check_webhook_secret(secret: str) -> str:
    """``secret`` if it is ``whsec_`` followed by strict base64 of at least 16 bytes (what
    Standard Webhooks signs with); the error never repeats the value."""
    problem = TenantError("a webhook secret is 'whsec_' followed by base64 of 16+ bytes")
    if not secret.startswith("whsec_"):
        raise problem
    try:
        raw = base64.b64decode(secret.removeprefix("whsec_"), validate=True)
        Webhook(secret)
    except Exception:
        raise problem from None
    if len(raw) < MIN_SECRET_BYTES:
        raise problem
    return secret


@dataclass(frozen=True, slots=True)
class TenantConfig:
    """One tenant's settings as stored (JSON in the ``tenants`` hash)."""

    name: str
    #: Newest first: the first signs new webhooks and so do the others, until retired, so a
    #: receiver verifying with either the old or the new secret accepts during a rotation.
    webhook_secrets: tuple[str, ...] = field(default=(), repr=False)
    #: Share of admissions while tenants wait for slots (relative to the others' weights).
    weight: float = 1.0
    #: Most upstream slots the tenant holds at once (0: no cap of its own).
    max_inflight: int = 0
    #: Most requests waiting in its admission queue; beyond, submits are refused (0: no bound).
    max_waiting: int = 0
    #: Settings this version does not know (written by a newer one), kept as they are when
    #: this version rewrites the tenant.
    other: Mapping[str, Any] = field(default_factory=dict, repr=False)

    def to_json(self) -> str:
        data = {
            **self.other,
            "webhook_secrets": list(self.webhook_secrets),
            "weight": self.weight,
            "max_inflight": self.max_inflight,
            "max_waiting": self.max_waiting,
        }
        return json.dumps(data, separators=(",", ":"))

    @classmethod
    def from_json(cls, name: str, raw: str | None) -> TenantConfig:
        data: dict[str, Any] = json.loads(raw) if raw else {}
        secrets_ = tuple(str(s) for s in data.pop("webhook_secrets", ()))
        return cls(
            name,
            secrets_,
            weight=float(data.pop("weight", 1.0)),
            max_inflight=int(data.pop("max_inflight", 0)),
            max_waiting=int(data.pop("max_waiting", 0)),
            other=data,
        )

    def public_dict(self) -> dict[str, Any]:
        """What ``tenant list`` shows: never a secret, only how many there are."""
        return {
            "name": self.name,
            "webhook_secrets": len(self.webhook_secrets),
            "weight": self.weight,
            "max_inflight": self.max_inflight,
            "max_waiting": self.max_waiting,
        }


@dataclass(frozen=True, slots=True)
class SetResult:
    """What ``set_tenant`` did: the stored config, whether it created the tenant, and the
    secret it generated (shown once, never again)."""

    config: TenantConfig
    created: bool
    generated_secret: str | None = None


def set_tenant(
    conn: redis.Redis,
    keys: Keys,
    name: str,
    *,
    webhook_secret: str | None = None,
    generate_webhook_secret: bool = False,
    retire_old_secrets: bool = False,
    weight: float | None = None,
    max_inflight: int | None = None,
    max_waiting: int | None = None,
) -> SetResult:
    """Create or update a tenant. A new webhook secret (given or generated) becomes the one
    that signs first; older ones keep signing (up to ``MAX_WEBHOOK_SECRETS``) until
    ``retire_old_secrets`` drops all but the newest. ``weight`` (> 0), ``max_inflight`` and
    ``max_waiting`` (>= 0, 0 = none) change admission (``producer/admission.py``): waiting
    requests a raised weight or cap lets through are admitted at once."""
    check_tenant_name(name)
    if weight is not None and not (0 < weight < float("inf")):
        raise TenantError("a weight is a number > 0")
    if max_inflight is not None and max_inflight < 0:
        raise TenantError("max_inflight is >= 0 (0: no cap of its own)")
    if max_waiting is not None and max_waiting < 0:
        raise TenantError("max_waiting is >= 0 (0: no bound)")
    if webhook_secret is not None and generate_webhook_secret:
        raise TenantError("give a webhook secret or ask for a generated one, not both")
    fresh = new_webhook_secret() if generate_webhook_secret else webhook_secret
    if fresh is not None:
        check_webhook_secret(fresh)
    with conn.pipeline(transaction=True) as pipe:
        while True:
            try:
                pipe.watch(keys.tenants)  # type: ignore[no-untyped-call]
                raw = pipe.hget(keys.tenants, name)
                created = raw is None and name != DEFAULT_TENANT
                config = TenantConfig.from_json(name, raw)  # type: ignore[arg-type]
                held = config.webhook_secrets
                if fresh is not None:
                    held = (fresh, *(s for s in held if s != fresh))[:MAX_WEBHOOK_SECRETS]
                if retire_old_secrets:
                    held = held[:1]
                config = replace(
                    config,
                    webhook_secrets=held,
                    weight=config.weight if weight is None else float(weight),
                    max_inflight=config.max_inflight if max_inflight is None else max_inflight,
                    max_waiting=config.max_waiting if max_waiting is None else max_waiting,
                )
                pipe.multi()
                pipe.hset(keys.tenants, name, config.to_json())
                pipe.execute()
                break
            except redis.WatchError:
                continue
    if weight is not None or max_inflight is not None:
        admit_all_sync(conn, keys)
    return SetResult(config, created, fresh if generate_webhook_secret else None)


def _tenants(raw: Mapping[str, str]) -> list[TenantConfig]:
    found = {n: TenantConfig.from_json(n, v) for n, v in raw.items()}
    default = found.pop(DEFAULT_TENANT, TenantConfig(DEFAULT_TENANT))
    return [default, *(found[n] for n in sorted(found))]


def list_tenants(conn: redis.Redis, keys: Keys) -> list[TenantConfig]:
    """Every tenant, ``default`` first (configured or not), then by name."""
    raw: dict[str, str] = conn.hgetall(keys.tenants)  # type: ignore[assignment]
    return _tenants(raw)


async def list_tenants_async(client: redis.asyncio.Redis, keys: Keys) -> list[TenantConfig]:
    """``list_tenants`` on an async client (decoding responses)."""
    raw: dict[str, str] = await client.hgetall(keys.tenants)  # type: ignore[misc]
    return _tenants(raw)


def delete_tenant(conn: redis.Redis, keys: Keys, name: str) -> int:
    """Delete a tenant and revoke its API keys (how many is returned); refused
    (``TenantError``) for ``default``, an unknown tenant, or one with requests in flight."""
    check_tenant_name(name)
    if name == DEFAULT_TENANT:
        raise TenantError("the default tenant cannot be deleted")
    script = conn.register_script(source("tenant_delete"))
    reply = decode_reply(script(keys=[keys.tenants, keys.counts, keys.api_keys], args=[name]))
    if reply[0] == Tag.MISSING:
        raise UnknownTenant(name)
    if reply[0] == Tag.BUSY:
        raise TenantError(f"tenant {name!r} has {reply[1]} requests in flight: not deleted")
    return int(reply[1])


def tenant_exists(conn: redis.Redis, keys: Keys, name: str) -> bool:
    """True for ``default`` and for every configured tenant."""
    return name == DEFAULT_TENANT or bool(conn.hexists(keys.tenants, name))


async def webhook_secrets(client: redis.asyncio.Redis, keys: Keys, tenant: str) -> Sequence[str]:
    """The secrets that sign ``tenant``'s webhooks, newest first (empty: none of its own;
    the caller falls back to ``GENQUEUE_WEBHOOK_SECRET``)."""
    raw = await client.hget(keys.tenants, tenant)  # type: ignore[misc]
    return TenantConfig.from_json(tenant, raw).webhook_secrets
