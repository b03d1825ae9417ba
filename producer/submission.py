"""What a submit writes, built once for the async and the sync client."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from genqueue.producer.contracts import Create
from genqueue.producer.keys import SCHEMA_VERSION, SUBMIT_TASK, Field
from genqueue.producer.models import GenerationRequest, parse_request, validate_options
from genqueue.producer.record import encode_spec
from genqueue.producer.replies import CreateReply
from genqueue.producer.scripts import ScriptCall, ms
from genqueue.producer.settings import Settings
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
) -> Submission:
    """Validate everything (raising ``InvalidRequest`` before any write) and build the writes."""
    req = parse_request(request)
    validate_options(
        idempotency_key=idempotency_key,
        webhook_url=webhook_url,
        deadline_s=deadline_s,
        max_deadline_s=settings.max_deadline_s,
        allow_nets=settings.allow_nets,
    )
    request_id = str(uuid.uuid4())
    fields = {
        Field.VERSION: str(SCHEMA_VERSION),
        Field.MODEL: req.model,
        Field.IDEMPOTENCY_KEY: idempotency_key or "",
        Field.HAS_WEBHOOK: "1" if webhook_url else "",
    }
    deadline = settings.default_deadline_s if deadline_s is None else deadline_s
    create = Create(
        request_id=request_id,
        idempotency_key=idempotency_key,
        fields=fields,
        deadline_ms=ms(deadline),
        spec=encode_spec(req.upstream_body(), req.metadata, webhook_url),
        arm=Timer(SUBMIT_TASK, request_id, 0),
    ).call(settings)
    return Submission(request_id, create)
