"""What a submit writes, built once for the async and the sync client."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

from genqueue.producer.keys import SCHEMA_VERSION, SUBMIT_TASK, Field
from genqueue.producer.models import GenerationRequest, parse_request, validate_options
from genqueue.producer.record import encode_spec
from genqueue.producer.scripts import ScriptCall, call, ms
from genqueue.producer.settings import Settings
from genqueue.producer.timers import Timer


@dataclass(frozen=True, slots=True)
class Submission:
    """A validated request ready to be written: its new id and the create script call (which
    also enqueues the first timer step when it creates the record)."""

    request_id: str
    create: ScriptCall


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
    create = call(
        settings,
        "create",
        request_id,
        json.dumps(fields),
        ms(deadline),
        "1" if idempotency_key else "0",
        encode_spec(req.upstream_body(), req.metadata, webhook_url),
        idempotency_key=idempotency_key,
        arm=Timer(SUBMIT_TASK, request_id, 0),
    )
    return Submission(request_id, create)


def created_id(reply: list[str]) -> tuple[str, bool]:
    """The request id a create reply names, and whether it is new."""
    return reply[1], reply[0] == "CREATED"
