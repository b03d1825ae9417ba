"""The upstream job object, parsed from either of the two shapes Together's API returns.

Shapes (see docs/shared upstream-together.md):
- SDK v3.1 ``VideoJob``: float unix timestamps (``created_at``, ``completed_at``), ``error``
  ``{message, code}`` or null, ``outputs {cost, video_url}`` once completed.
- Legacy documented example: RFC 3339 strings (``created_at``, ``claimed_at``, ``done_at``; the
  zero time ``0001-01-01T00:00:00Z`` means "not set"), failures in ``info.errors``.

Rules: fields genqueue uses must have the right type when present (otherwise the answer is not
understood: ``UpstreamProtocolError``); missing optional fields are None; extra fields are ignored.
An error description is rendered readably from whatever shape it has.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal, DecimalException, localcontext
from typing import Any, Final

from genqueue.worker.upstream.errors import Operation, UpstreamProtocolError, truncate

STATUSES: Final = frozenset(
    {"queued", "in_progress", "completed", "failed", "cancelled", "unknown"}
)
TERMINAL_STATUSES: Final = frozenset({"completed", "failed", "cancelled"})

MAX_COST_USD: Final = Decimal(1_000_000)
"""A cost above this is absurd for one video: treated as a malformed answer, not as money."""

MAX_ID_CHARS: Final = 512

_ZERO_TIME: Final = datetime(1, 1, 1, tzinfo=UTC)
_SPELLINGS: Final = {"canceled": "cancelled"}  # US spelling of a terminal state


@dataclass(frozen=True, slots=True)
class UpstreamJob:
    """One upstream video job as genqueue needs it; times are unix seconds, money micro-USD."""

    id: str
    status: str  # one of STATUSES
    raw_status: str
    model: str | None = None
    created_at: float | None = None
    started_at: float | None = None
    done_at: float | None = None
    cost_micro_usd: int | None = None
    video_url: str | None = None
    error: str | None = None
    #: Why a cost that was sent could not be used (not a number, negative, absurd); the job
    #: is kept (a completed video is never lost to its cost), the cost is None.
    cost_problem: str | None = None

    @property
    def is_terminal(self) -> bool:
        """True once the upstream will not change this job any more."""
        return self.status in TERMINAL_STATUSES

    @property
    def cost_unknown(self) -> bool:
        """A completed job without a usable cost: recorded as unknown, never as zero."""
        return self.status == "completed" and self.cost_micro_usd is None


class _Invalid(Exception):
    """Internal: the payload is not a job object (turned into UpstreamProtocolError)."""


def normalize_status(raw: str) -> str:
    """Map an upstream status string to one of STATUSES ("unknown" when not recognised)."""
    status = raw.strip().lower().replace("-", "_").replace(" ", "_")
    status = _SPELLINGS.get(status, status)
    return status if status in STATUSES and status != "unknown" else "unknown"


def _is_number(value: object) -> bool:
    return isinstance(value, int | float | Decimal) and not isinstance(value, bool)


def _timestamp(payload: dict[str, Any], key: str) -> float | None:
    """Unix seconds from a number or an RFC 3339 string; None when absent, null or zero time."""
    value = payload.get(key)
    if value is None:
        return None
    if _is_number(value):
        try:
            seconds = float(value)
        except (OverflowError, ValueError):
            raise _Invalid(f"{key} is not a usable number") from None
        if not math.isfinite(seconds):
            raise _Invalid(f"{key} is not finite")
        return None if seconds == 0 else seconds  # 0, like the zero time, means "not set"
    if isinstance(value, str):
        try:
            when = datetime.fromisoformat(value.strip())
        except ValueError:
            raise _Invalid(f"{key} is not an RFC 3339 time: {truncate(value, 60)!r}") from None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        if when == _ZERO_TIME:
            return None
        try:
            return when.timestamp()
        except (OverflowError, ValueError):
            raise _Invalid(f"{key} is out of range") from None
    raise _Invalid(f"{key} has type {type(value).__name__}")


def _first_timestamp(payload: dict[str, Any], *keys: str) -> float | None:
    """The first present, set timestamp among ``keys`` (every present one must be valid)."""
    found: float | None = None
    for key in keys:
        value = _timestamp(payload, key)
        if found is None:
            found = value
    return found


def cost_to_micro_usd(value: object) -> int | None:
    """Integer micro-dollars (ROUND_HALF_UP) from a JSON cost in US dollars; None when null.

    Floats are converted through their shortest repr (0.28 → "0.28"), never their binary value.
    """
    if value is None:
        return None
    if isinstance(value, Decimal):
        amount = value
    elif isinstance(value, int) and not isinstance(value, bool):
        amount = Decimal(value)
    elif isinstance(value, float):
        amount = Decimal(repr(value))
    elif isinstance(value, str):
        try:
            amount = Decimal(value.strip())
        except DecimalException:
            raise _Invalid("cost is not a number") from None
    else:
        raise _Invalid(f"cost has type {type(value).__name__}")
    if not amount.is_finite():
        raise _Invalid("cost is not finite")
    if amount < 0:
        raise _Invalid("cost is negative")
    if amount > MAX_COST_USD:
        raise _Invalid("cost is absurdly large")
    try:
        with localcontext() as ctx:
            ctx.prec = 60
            micro = amount.scaleb(6).quantize(Decimal(1), rounding=ROUND_HALF_UP)
    except DecimalException:
        raise _Invalid("cost cannot be converted") from None
    return int(micro)


def _cost(value: object) -> tuple[int | None, str | None]:
    """The cost in micro-USD, or None and why it can't be used: an odd cost never turns a
    job into a protocol error (a completed video would be lost with it)."""
    try:
        return cost_to_micro_usd(value), None
    except _Invalid as exc:
        return None, str(exc)


def _render(value: object, depth: int = 0) -> str:
    """A readable one-line text for an error description of any JSON shape ("" when empty)."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        for key in ("message", "msg", "detail", "error", "code"):
            inner = value.get(key)
            if inner is not None and depth < 4:
                text = _render(inner, depth + 1)
                if text:
                    return text
        if not value:
            return ""
    if isinstance(value, list):
        if depth >= 4:
            return f"[{len(value)} items]"
        return "; ".join(text for item in value if (text := _render(item, depth + 1)))
    try:
        return json.dumps(value, sort_keys=True, default=str, ensure_ascii=False)[:2000]
    except (TypeError, ValueError, RecursionError):
        return type(value).__name__


def describe_error(value: object) -> str | None:
    """A readable, truncated one-line text for an error description of any JSON shape.

    Strings as they are; objects by their ``message`` (or ``detail``, ``error``, ``code``), else
    as compact JSON; lists joined with "; ". None when it says nothing (null, "", [], {}).
    """
    return truncate(_render(value)) or None


def _error_text(payload: dict[str, Any]) -> str | None:
    """SDK shape ``error`` first, then legacy ``info.errors``; None when neither says anything."""
    info = payload.get("info")
    if info is not None and not isinstance(info, dict):
        raise _Invalid(f"info has type {type(info).__name__}")
    return describe_error(payload.get("error")) or describe_error((info or {}).get("errors"))


def _optional_str(container: dict[str, Any], key: str) -> str | None:
    value = container.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise _Invalid(f"{key} has type {type(value).__name__}")
    return value or None


def _parse(payload: object) -> UpstreamJob:
    if not isinstance(payload, dict):
        raise _Invalid(f"expected a JSON object, got {type(payload).__name__}")
    job_id = payload.get("id")
    if not isinstance(job_id, str) or not job_id.strip():
        raise _Invalid("no job id")
    if len(job_id) > MAX_ID_CHARS or not job_id.isprintable():
        raise _Invalid("job id is not a plausible id")
    raw_status = payload.get("status")
    if not isinstance(raw_status, str):
        raise _Invalid("no status string")
    outputs = payload.get("outputs")
    if outputs is None:
        outputs = {}
    elif not isinstance(outputs, dict):
        raise _Invalid(f"outputs has type {type(outputs).__name__}")
    cost, cost_problem = _cost(outputs.get("cost"))
    return UpstreamJob(
        id=job_id,
        status=normalize_status(raw_status),
        raw_status=raw_status,
        model=_optional_str(payload, "model"),
        created_at=_timestamp(payload, "created_at"),
        started_at=_first_timestamp(payload, "started_at", "claimed_at"),
        done_at=_first_timestamp(payload, "completed_at", "done_at"),
        cost_micro_usd=cost,
        cost_problem=cost_problem,
        video_url=_optional_str(outputs, "video_url"),
        error=_error_text(payload),
    )


def parse_job(payload: object, *, operation: Operation = "retrieve") -> UpstreamJob:
    """Parse a decoded JSON job object of either shape; anything else → UpstreamProtocolError.

    Decode the JSON with ``parse_float=Decimal`` to keep costs exact (floats are accepted too).
    ``operation`` only labels the error.
    """
    try:
        return _parse(payload)
    except _Invalid as exc:
        raise UpstreamProtocolError(f"not a job object: {exc}", operation=operation) from None
    except RecursionError:
        raise UpstreamProtocolError("job object nested too deeply", operation=operation) from None
