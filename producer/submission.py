"""What a submit writes, built once for the async and the sync client."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from genqueue.producer.admission import QueueFull
from genqueue.producer.contracts import Create
from genqueue.producer.errors import FieldError, InvalidRequest
from genqueue.producer.keys import (
    DEFAULT_PRIORITY,
    DEFAULT_TENANT,
    SCHEMA_VERSION,
    SUBMIT_TASK,
    Field,
    Tag,
)
from genqueue.producer.models import GenerationRequest, parse_request, validate_options
from genqueue.producer.record import RequestView, encode_spec
from genqueue.producer.replies import CreateReply
from genqueue.producer.scripts import ScriptCall, ms
from genqueue.producer.settings import Settings
from genqueue.producer.tenants import UnknownTenant, check_tenant_name
from genqueue.producer.timers import Timer


@dataclass(frozen=True, slots=True)
class Submission:
    """A validated request ready to be written: its new id and the create script call (which
    also enqueues the first timer step when it creates the record)."""

    request_id: str
    create: ScriptCall[CreateReply]


def prepare(
    settings: Settings,
    request: GenerationRequest | dict[str, Any],
    *,
    idempotency_key: str | None,
    webhook_url: str | None,
    deadline_s: float | None,
    tenant: str = DEFAULT_TENANT,
    priority: str = DEFAULT_PRIORITY,
) -> Submission:
    """Validate everything (raising ``InvalidRequest`` or ``TenantError`` before any write)
    and build the writes (the create script refuses a tenant that is not configured)."""
    check_tenant_name(tenant)
    req = parse_request(request)
    validate_options(
        idempotency_key=idempotency_key,
        webhook_url=webhook_url,
        deadline_s=deadline_s,
        max_deadline_s=settings.max_deadline_s,
        allow_nets=settings.allow_nets,
        priority=priority,
    )
    request_id = str(uuid.uuid4())
    fields = {
        Field.VERSION: str(SCHEMA_VERSION),
        Field.MODEL: req.model,
        # Absent for default: the record reads as before tenants (and costs no memory).
        Field.TENANT: "" if tenant == DEFAULT_TENANT else tenant,
        Field.IDEMPOTENCY_KEY: idempotency_key or "",
        Field.HAS_WEBHOOK: "1" if webhook_url else "",
        # Absent for normal: the common case costs no memory.
        Field.PRIORITY: "" if priority == DEFAULT_PRIORITY else priority,
    }
    deadline = settings.default_deadline_s if deadline_s is None else deadline_s
    spec = encode_spec(req.upstream_body(), req.metadata, webhook_url)
    size = len(spec.encode("utf-8"))
    if size > settings.max_request_bytes:
        raise InvalidRequest(
            [
                FieldError(
                    "request",
                    f"is {size} bytes as stored (UTF-8 JSON); at most "
                    f"{settings.max_request_bytes} are accepted",
                )
            ]
        )
    create = Create(
        request_id=request_id,
        idempotency_key=idempotency_key,
        tenant=tenant,
        fields=fields,
        deadline_ms=ms(deadline),
        spec=spec,
        arm=Timer(SUBMIT_TASK, request_id, 0),
    ).call(settings)
    return Submission(request_id, create)


def created_id(reply: CreateReply) -> str:
    """The request id a create answered (new or the idempotency key's); ``UnknownTenant``
    when the tenant is not configured, ``QueueFull`` when its admission queue is."""
    if reply.tag is Tag.NO_TENANT:
        raise UnknownTenant(reply.request_id)
    if reply.tag is Tag.QUEUE_FULL:
        raise QueueFull(reply.request_id)
    return reply.request_id


def visible_to(view: RequestView, tenant: str | None) -> bool:
    """True if a caller scoped to ``tenant`` (None: every tenant) may see the request."""
    return tenant is None or view.tenant == tenant
