"""The gateway's wire models: what a client sends and what it gets back (the OpenAPI schemas).

The response models mirror ``RequestView.to_json_dict()`` and ``Stats.to_json_dict()``; a test
checks that their field names stay equal, so a field added to the producer shows up here too.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from genqueue.producer.keys import Status
from genqueue.producer.models import MAX_WEBHOOK_URL_CHARS, GenerationRequest, Priority

#: Deepest nesting accepted inside ``media`` (deeper JSON could exhaust the stack later on).
MAX_MEDIA_DEPTH = 32

ErrorType = Literal[
    "malformed_body",
    "invalid_request",
    "unauthorized",
    "forbidden",
    "not_found",
    "method_not_allowed",
    "payload_too_large",
    "rate_limited",
    "unavailable",
    "internal",
    "http_error",
]

CancelOutcome = Literal["cancelled", "requested", "already_finished"]


def json_problem(value: object, max_depth: int) -> str | None:
    """What makes ``value`` unfit to store and echo back as JSON, or None.

    Too deep nesting (a later ``json.dumps`` could exhaust the stack) or a string that is not
    valid Unicode (a lone surrogate cannot be encoded as UTF-8). Iterative: no recursion.
    """
    stack: list[tuple[object, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return "must contain only valid Unicode strings"
        elif isinstance(item, dict | list):
            if depth > max_depth:
                return f"must nest at most {max_depth} levels deep"
            if isinstance(item, dict):
                stack.extend((key, depth) for key in item)
                stack.extend((child, depth + 1) for child in item.values())
            else:
                stack.extend((child, depth + 1) for child in item)
    return None


class CreateGeneration(GenerationRequest):
    """A generation request (the upstream's create fields and ``metadata`` tags) plus the
    options genqueue keeps beside it. Unknown fields are refused."""

    webhook_url: Annotated[str, Field(max_length=MAX_WEBHOOK_URL_CHARS)] | None = Field(
        default=None,
        description="An http(s) URL notified (Standard Webhooks) when the generation finishes.",
    )
    deadline_s: Annotated[float, Field(gt=0, allow_inf_nan=False)] | None = Field(
        default=None,
        description="Seconds from now after which the request expires "
        "(server default when absent; the server's maximum applies).",
    )
    priority: Priority = Field(
        default="normal",
        description="Orders admission among the tenant's requests waiting for an upstream "
        "slot (then the earliest deadline first).",
    )

    @field_validator("media", mode="before")
    @classmethod
    def _media_storable(cls, v: object) -> object:
        problem = json_problem(v, MAX_MEDIA_DEPTH)
        if problem:
            raise ValueError(problem)
        return v

    def request_fields(self) -> dict[str, Any]:
        """The fields of the generation request itself (the options left out)."""
        return self.model_dump(exclude={"webhook_url", "deadline_s", "priority"}, exclude_none=True)


class GenerationRecord(BaseModel):
    """One generation's record. Times are unix seconds; cost is a decimal string in US dollars."""

    model_config = ConfigDict(extra="ignore")

    id: str
    status: Status
    model: str
    tenant: str = Field(description="The tenant that owns the generation.")
    upstream_id: str | None
    upstream_ids: list[str]
    upstream_status: str | None
    video_url: str | None
    cost_micro_usd: int | None
    cost_usd: str | None
    error: str | None
    polls: int
    attempts: int
    ambiguous_submits: int
    cancel_requested: bool
    tracking: bool = Field(
        description="A cancelled/expired request whose billed upstream job is still followed "
        "for its cost."
    )
    enqueued_at: float | None
    submitted_at: float | None
    finished_at: float | None
    deadline_at: float | None
    upstream_created_at: float | None
    upstream_started_at: float | None
    upstream_done_at: float | None
    queue_wait_s: float | None
    upstream_duration_s: float | None
    total_duration_s: float | None
    detection_lag_s: float | None
    metadata: dict[str, str]
    webhook_url: str | None
    idempotency_key: str | None
    request: dict[str, Any]
    schema_version: int
    superseded_cost_micro_usd: int | None = Field(
        default=None,
        description="Cost of upstream jobs created by attempts whose answer came after "
        "another attempt went out (superseded), once each ended.",
    )
    superseded_pending: list[str] = Field(
        default_factory=list, description="Superseded upstream ids still followed to their end."
    )
    possibly_billed: int = Field(
        default=0,
        description="Create attempts that may have created an upstream job nothing can find "
        "(the upstream cannot list jobs).",
    )
    cost_unknown: bool = Field(
        default=False,
        description="The job completed but its cost was missing or unusable: unknown, not zero.",
    )
    priority: Priority = Field(
        default="normal", description="Orders admission among the tenant's waiting requests."
    )
    waiting: Literal["cap", "tenant_cap", "paused"] | None = Field(
        default=None,
        description="While the generation waits for an upstream slot: why (the in-flight cap "
        "is full, the tenant's own cap is, creates are paused).",
    )


class CancelResult(BaseModel):
    """What a cancel did, and the record afterwards."""

    outcome: CancelOutcome = Field(
        description="`cancelled`: the request is cancelled now; `requested`: it is being "
        "submitted upstream and the cancel is honoured at its next step; `already_finished`: "
        "it had reached a terminal status, nothing changed."
    )
    generation: GenerationRecord


class QueueDepth(BaseModel):
    ready: int
    deferred: int
    lag_s: float = Field(description="Age of the oldest due timer (0 when none is due).")


class FinishedCount(BaseModel):
    model: str
    outcome: str
    count: int


class SupersededJobs(BaseModel):
    running: int = Field(description="Superseded upstream jobs still followed (slots held).")
    learned: dict[str, int] = Field(description="Superseded upstream jobs ever learned, by model.")


class PossiblyBilled(BaseModel):
    count: dict[str, int] = Field(description="Attempts possibly billed, by model.")
    estimate_usd: dict[str, str] = Field(
        description="Possible unrecorded spend: those attempts at the model's mean recorded cost."
    )


class StatsSnapshot(BaseModel):
    """Figures read from Redis (costs are decimal strings in US dollars): a tenant's key sees
    its tenant's own counts and totals (queue depth and pause are the cluster's); an admin
    key sees the cluster's, or a tenant's with `X-Genqueue-Tenant`."""

    model_config = ConfigDict(extra="ignore")

    tenant: str | None = Field(description="Whose figures (null: the whole cluster).")

    requests_by_status: dict[str, int]
    tracking: int
    active_upstream: int
    inflight: int
    queue: QueueDepth
    finished: list[FinishedCount]
    finished_by_outcome: dict[str, int]
    cost_usd: dict[str, str]
    total_cost_usd: str
    paused: dict[str, str]
    superseded: SupersededJobs
    possibly_billed: PossiblyBilled
    cost_unknown: dict[str, int] = Field(
        description="Completed jobs whose cost was missing or unusable, by model."
    )
    admitted: int = Field(
        default=0,
        description="Upstream slots reserved for admitted generations whose create has not "
        "started (counted against the in-flight cap with active_upstream).",
    )
    waiting: dict[str, int] = Field(
        default_factory=dict,
        description="Generations waiting for an upstream slot, by why: cap, tenant_cap, paused.",
    )


class Health(BaseModel):
    status: Literal["ok", "ready"]


class FieldProblem(BaseModel):
    field: str = Field(
        description="Dotted path of a body field (`metadata.k`), or the name of a query "
        "parameter or header (`wait`, `Idempotency-Key`)."
    )
    message: str


class ErrorDetail(BaseModel):
    type: ErrorType
    message: str
    fields: list[FieldProblem] = Field(default_factory=list)


class ErrorResponse(BaseModel):
    """Every error the gateway answers has this shape."""

    error: ErrorDetail
