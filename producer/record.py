"""A typed, read-only view of one request's record (the Redis hash and its spec)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from decimal import Decimal
from typing import Any, Final

import redis
import redis.asyncio

from genqueue.producer.keys import (
    DEFAULT_PRIORITY,
    NON_TERMINAL,
    SCHEMA_VERSION,
    Field,
    Keys,
    tenant_of,
)


def encode_spec(request: dict[str, Any], metadata: dict[str, str], webhook_url: str | None) -> str:
    """The spec string written once at submit (empty parts left out)."""
    spec: dict[str, Any] = {Field.REQUEST: request}
    if metadata:
        spec[Field.METADATA] = metadata
    if webhook_url:
        spec[Field.WEBHOOK_URL] = webhook_url
    # UTF-8 as it is: escaped, an emoji would take 12 bytes of Redis instead of 4.
    return json.dumps(spec, separators=(",", ":"), ensure_ascii=False)


#: The totals' and metrics' name for every model the upstream has not accepted (a bound on
#: their labels: any string matching the model pattern could otherwise become one).
OTHER_MODEL: Final = "other"


def model_label(raw: dict[str, str]) -> str:
    """The model a record is counted under: its own once the upstream accepted the model
    (as ``model_label`` in ``lua/_transition.lua``), else ``other``."""
    if raw.get(Field.MODEL_UNVERIFIED) == "1":
        return OTHER_MODEL
    return raw.get(Field.MODEL) or OTHER_MODEL


def with_id(request_id: str, raw: dict[str, str]) -> dict[str, str]:
    """The record's fields with its id (the key holds it; schema 2 does not repeat it in the
    hash). Empty if there is no record."""
    if raw:
        raw[Field.ID] = request_id
    return raw


def with_spec(raw: dict[str, str], spec: str | None) -> dict[str, str]:
    """The record's fields with its spec's merged in, in the record's string form (a schema 1
    record, which has no spec key, already holds them). Empty if there is no record."""
    if not raw or not spec:
        return raw
    parsed: dict[str, Any] = json.loads(spec)
    merged = dict(raw)
    merged[Field.REQUEST] = json.dumps(parsed.get(Field.REQUEST, {}), separators=(",", ":"))
    merged[Field.METADATA] = json.dumps(parsed.get(Field.METADATA, {}), separators=(",", ":"))
    merged[Field.WEBHOOK_URL] = parsed.get(Field.WEBHOOK_URL) or ""
    return merged


async def read_full(client: redis.asyncio.Redis, keys: Keys, request_id: str) -> dict[str, str]:
    """Record and spec in one round trip (``with_spec``); empty if there is no record."""
    async with client.pipeline(transaction=False) as pipe:
        pipe.hgetall(keys.record(request_id))
        pipe.get(keys.spec(request_id))
        raw, spec = await pipe.execute()
    return with_spec(with_id(request_id, raw), spec)


def read_full_sync(client: redis.Redis, keys: Keys, request_id: str) -> dict[str, str]:
    """``read_full`` through a blocking client."""
    with client.pipeline(transaction=False) as pipe:
        pipe.hgetall(keys.record(request_id))
        pipe.get(keys.spec(request_id))
        raw, spec = pipe.execute()
    return with_spec(with_id(request_id, raw), spec)


MICRO = Decimal("0.000001")


def micro_to_usd(micro: int) -> Decimal:
    """Integer micro-dollars as a Decimal number of US dollars."""
    return (Decimal(micro) * MICRO).quantize(MICRO)


def _int(raw: dict[str, str], name: str) -> int | None:
    v = raw.get(name)
    if v is None or v == "":
        return None
    return int(v)


def _upstream_ids(raw: dict[str, str]) -> list[str]:
    listed = raw.get(Field.UPSTREAM_IDS)
    if listed:
        ids: list[str] = json.loads(listed)
        return ids
    held = raw.get(Field.UPSTREAM_ID)
    return [held] if held else []  # a lone id is kept in upstream_id only


def _float(raw: dict[str, str], name: str) -> float | None:
    v = raw.get(name)
    if v is None or v == "":
        return None
    return float(v)


def _ms_to_s(ms: int | None) -> float | None:
    return None if ms is None else ms / 1000.0


@dataclass(frozen=True, slots=True)
class RequestView:
    """What ``get()`` returns. Times are unix seconds (Redis clock for genqueue's own)."""

    id: str
    status: str
    model: str
    #: The owner (``default`` for records that name none, e.g. written before tenants).
    tenant: str
    upstream_id: str | None
    upstream_ids: list[str]
    upstream_status: str | None
    video_url: str | None
    cost_micro_usd: int | None
    error: str | None
    polls: int
    attempts: int
    ambiguous_submits: int
    cancel_requested: bool
    tracking: bool
    enqueued_at: float | None
    submitted_at: float | None
    finished_at: float | None
    deadline_at: float | None
    upstream_created_at: float | None
    upstream_started_at: float | None
    upstream_done_at: float | None
    metadata: dict[str, str]
    webhook_url: str | None
    idempotency_key: str | None
    request: dict[str, Any]
    schema_version: int
    #: Cost of superseded upstream jobs of this request that ended (micro-USD), if any.
    superseded_cost_micro_usd: int | None = None
    #: Superseded upstream ids not yet seen to end (still checked).
    superseded_pending: tuple[str, ...] = ()
    #: Attempts that may have created an upstream job nothing can find (possibly billed).
    possibly_billed: int = 0
    #: The job completed but its cost was missing or unusable: unknown, not zero.
    cost_unknown: bool = False
    #: ``high`` | ``normal`` | ``low``: orders admission within the tenant.
    priority: str = DEFAULT_PRIORITY
    #: While the request waits in its tenant's admission queue: why (``cap``,
    #: ``tenant_cap``, ``paused``); None otherwise.
    waiting: str | None = None

    @property
    def is_terminal(self) -> bool:
        """True once the user-visible status is final (a billed job may still be tracked)."""
        return self.status not in NON_TERMINAL

    @property
    def cost_usd(self) -> Decimal | None:
        return None if self.cost_micro_usd is None else micro_to_usd(self.cost_micro_usd)

    @property
    def queue_wait_s(self) -> float | None:
        """From enqueue to the upstream accepting the create."""
        if self.enqueued_at is None or self.submitted_at is None:
            return None
        return max(0.0, self.submitted_at - self.enqueued_at)

    @property
    def upstream_duration_s(self) -> float | None:
        """Upstream generation time, by the upstream's own timestamps."""
        if self.upstream_created_at is None or self.upstream_done_at is None:
            return None
        return max(0.0, self.upstream_done_at - self.upstream_created_at)

    @property
    def total_duration_s(self) -> float | None:
        """End to end: enqueue to genqueue seeing the terminal state."""
        if self.enqueued_at is None or self.finished_at is None:
            return None
        return max(0.0, self.finished_at - self.enqueued_at)

    @property
    def detection_lag_s(self) -> float | None:
        """Our completion time minus the upstream's ``done_at``, clamped at 0 (clocks differ)."""
        if self.finished_at is None or self.upstream_done_at is None:
            return None
        return max(0.0, self.finished_at - self.upstream_done_at)

    @classmethod
    def from_hash(cls, raw: dict[str, str]) -> RequestView:
        """Build the view from ``HGETALL`` output (decoded strings)."""
        return cls(
            id=raw[Field.ID],
            status=raw[Field.STATUS],
            model=raw.get(Field.MODEL, ""),
            tenant=tenant_of(raw),
            upstream_id=raw.get(Field.UPSTREAM_ID) or None,
            upstream_ids=_upstream_ids(raw),
            upstream_status=raw.get(Field.UPSTREAM_STATUS) or None,
            video_url=raw.get(Field.VIDEO_URL) or None,
            cost_micro_usd=_int(raw, Field.COST_MICRO_USD),
            error=raw.get(Field.ERROR) or None,
            polls=_int(raw, Field.POLLS) or 0,
            attempts=_int(raw, Field.SUBMIT_SEQ) or 0,
            ambiguous_submits=_int(raw, Field.AMBIGUOUS_SUBMITS) or 0,
            cancel_requested=raw.get(Field.CANCEL_REQUESTED) == "1",
            tracking=raw.get(Field.TRACKING) in ("1", "extra"),
            enqueued_at=_ms_to_s(_int(raw, Field.ENQUEUED_AT_MS)),
            submitted_at=_ms_to_s(_int(raw, Field.SUBMITTED_AT_MS)),
            finished_at=_ms_to_s(_int(raw, Field.FINISHED_AT_MS)),
            deadline_at=_ms_to_s(_int(raw, Field.DEADLINE_AT_MS)),
            upstream_created_at=_float(raw, Field.UPSTREAM_CREATED_AT),
            upstream_started_at=_float(raw, Field.UPSTREAM_STARTED_AT),
            upstream_done_at=_float(raw, Field.UPSTREAM_DONE_AT),
            metadata=json.loads(raw.get(Field.METADATA) or "{}"),
            webhook_url=raw.get(Field.WEBHOOK_URL) or None,
            idempotency_key=raw.get(Field.IDEMPOTENCY_KEY) or None,
            request=json.loads(raw.get(Field.REQUEST) or "{}"),
            schema_version=_int(raw, Field.VERSION) or SCHEMA_VERSION,
            superseded_cost_micro_usd=_int(raw, Field.SUPERSEDED_COST_MICRO_USD),
            superseded_pending=tuple(json.loads(raw.get(Field.EXTRA_IDS) or "[]")),
            possibly_billed=_int(raw, Field.POSSIBLY_BILLED) or 0,
            cost_unknown=raw.get(Field.COST_UNKNOWN) == "1",
            priority=raw.get(Field.PRIORITY) or DEFAULT_PRIORITY,
            waiting=raw.get(Field.WAITING) or None,
        )

    def to_json_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (cost as a decimal string in dollars, timings included)."""
        d = asdict(self)
        d["cost_usd"] = None if self.cost_usd is None else str(self.cost_usd)
        d["queue_wait_s"] = self.queue_wait_s
        d["upstream_duration_s"] = self.upstream_duration_s
        d["total_duration_s"] = self.total_duration_s
        d["detection_lag_s"] = self.detection_lag_s
        return d
