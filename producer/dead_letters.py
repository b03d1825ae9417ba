"""Dead-lettered webhooks: list them, and replay them (a fresh attempt, same webhook-id).

Workers add a request to ``{prefix}:webhooks:dead`` when they give its webhook up, and trim
the set by age and count there (``webhooks.dead_max_age_s``, ``webhooks.dead_max``:
``GENQUEUE_WEBHOOK_DEAD_MAX_AGE_S``, ``GENQUEUE_WEBHOOK_DEAD_MAX``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import urlsplit

import redis

from genqueue.producer.contracts import WebhookReplay
from genqueue.producer.keys import DEFAULT_TENANT, Field, tenant_of
from genqueue.producer.record import read_full_sync
from genqueue.producer.scripts import SyncScripts
from genqueue.producer.settings import Settings


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One given-up webhook, as operators see it (the URL reduced to its host: query strings
    carry tokens)."""

    request_id: str
    dead_at_ms: int
    status: str
    webhook_host: str
    attempts: int
    last_status: str
    reason: str
    #: The request's owner (whose receiver, and whose webhook secret signed it).
    tenant: str = DEFAULT_TENANT

    def to_json_dict(self) -> dict[str, Any]:
        return asdict(self)


def _host(url: str) -> str:
    try:
        return urlsplit(url).hostname or ""
    except ValueError:
        return ""


def list_dead(client: redis.Redis, settings: Settings, limit: int = 100) -> list[DeadLetter]:
    """The newest ``limit`` dead letters whose record still exists, newest first."""
    keys = settings.keys
    entries: list[tuple[str, float]] = client.zrevrange(  # type: ignore[assignment]
        keys.dead_letters, 0, limit - 1, withscores=True
    )
    out = []
    for rid, score in entries:
        raw = read_full_sync(client, keys, rid)
        if not raw.get(Field.STATUS):
            continue  # the record expired; the worker's trim drops the entry in time
        out.append(
            DeadLetter(
                request_id=rid,
                dead_at_ms=int(score),
                status=raw[Field.STATUS],
                webhook_host=_host(raw.get(Field.WEBHOOK_URL, "")),
                attempts=int(raw.get(Field.WEBHOOK_ATTEMPTS) or 0),
                # Absent on records dead-lettered before the field existed.
                last_status=raw.get(Field.WEBHOOK_LAST_STATUS, ""),
                reason=raw.get(Field.WEBHOOK_ERROR, ""),
                tenant=tenant_of(raw),
            )
        )
    return out


def replay(client: redis.Redis, settings: Settings, request_id: str) -> str:
    """Owe the webhook again: ``OK``, ``NOT_DEAD`` (delivered or pending) or ``MISSING``."""
    fields: list[Any] = client.hmget(  # type: ignore[assignment]
        settings.keys.record(request_id), [Field.IDEMPOTENCY_KEY, Field.TENANT]
    )
    idem, tenant = fields
    c = WebhookReplay(
        request_id=request_id,
        idempotency_key=str(idem) if idem else None,
        tenant=str(tenant) if tenant else DEFAULT_TENANT,
    )
    return str(SyncScripts(client).run(c.call(settings)).tag)


def replay_all(client: redis.Redis, settings: Settings) -> dict[str, int]:
    """Replay every dead letter; counts by outcome."""
    counts: dict[str, int] = {}
    ids: list[str] = client.zrange(settings.keys.dead_letters, 0, -1)  # type: ignore[assignment]
    for rid in ids:
        outcome = replay(client, settings, rid)
        counts[outcome] = counts.get(outcome, 0) + 1
    return counts
