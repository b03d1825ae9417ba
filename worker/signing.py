"""At a worker's start: warn when some tenant's webhooks would have no secret to sign them.

A tenant signs with its own secrets (``genqueue tenant set --webhook-secret``), else with
``GENQUEUE_WEBHOOK_SECRET``; a delivery with neither fails (``worker/side_effects.py``). Any
tenant may send webhooks (the URL is per request), ``default`` included, configured or not.
"""

from __future__ import annotations

import redis.asyncio
import structlog

from genqueue.producer.keys import Keys
from genqueue.producer.tenants import list_tenants_async

log = structlog.get_logger(__name__)

#: Tenants named in the warning at most (the rest are counted): one log line stays short.
NAMED_AT_MOST = 10


async def tenants_without_secret(client: redis.asyncio.Redis, keys: Keys) -> list[str]:
    """Tenants with no webhook secret of their own, ``default`` first, then by name."""
    return [t.name for t in await list_tenants_async(client, keys) if not t.webhook_secrets]


async def warn_unsigned_webhooks(client: redis.asyncio.Redis, keys: Keys, fallback: str) -> None:
    """Log ``webhook_secret_missing`` if ``fallback`` (``GENQUEUE_WEBHOOK_SECRET``) is empty
    and some tenant has no secret of its own (its webhooks would not be sent)."""
    if fallback:
        return
    unsigned = await tenants_without_secret(client, keys)
    if unsigned:
        log.warning(
            "webhook_secret_missing",
            tenants=unsigned[:NAMED_AT_MOST],
            tenants_count=len(unsigned),
            hint="set GENQUEUE_WEBHOOK_SECRET or each tenant's own (genqueue tenant set "
            "NAME --generate-webhook-secret) to sign webhooks",
        )
