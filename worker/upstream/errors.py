"""The upstream client's exception tree, and the pure helpers that build its fields.

Every lower-level error (httpx, aiohttp, JSON) is translated into one of these in one place:
``genqueue.worker.upstream.client``. What to *do* about an error is decided in one place too:
``genqueue.worker.upstream.classify``.
"""

from __future__ import annotations

import email.utils
import math
import re
from collections.abc import Mapping
from datetime import UTC
from typing import Literal

Operation = Literal["create", "retrieve"]

MAX_MESSAGE_CHARS = 500
"""Upstream-provided text (error messages, bodies) is truncated to about this many characters."""

RETRY_AFTER_MAX_S = 60.0
"""Retry hints are clamped to [0, 60] seconds, like the official SDKs' window."""

_WHITESPACE = re.compile(r"\s+")


def truncate(text: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    """Collapse whitespace and cut ``text`` to at most ``limit`` characters (with an ellipsis)."""
    text = _WHITESPACE.sub(" ", text).strip()
    if len(text) <= limit:
        return text
    return text[: limit - 1] + "…"


class UpstreamError(Exception):
    """Base of every error the upstream client raises; ``operation`` is "create" or "retrieve"."""

    def __init__(self, detail: str, *, operation: Operation) -> None:
        super().__init__(detail)
        self.operation: Operation = operation
        self.detail = detail

    def __str__(self) -> str:
        return f"upstream {self.operation}: {self.detail}"


class UpstreamTimeout(UpstreamError):
    """No answer in time; ``request_sent`` is True when the upstream may have acted on it."""

    def __init__(self, detail: str, *, operation: Operation, request_sent: bool) -> None:
        super().__init__(detail, operation=operation)
        self.request_sent = request_sent

    def __str__(self) -> str:
        sent = "after the request was sent" if self.request_sent else "before the request was sent"
        return f"upstream {self.operation}: timeout {sent}: {self.detail}"


class UpstreamConnectionError(UpstreamError):
    """A network failure; ``request_sent`` is True when it happened after the request went out."""

    def __init__(self, detail: str, *, operation: Operation, request_sent: bool) -> None:
        super().__init__(detail, operation=operation)
        self.request_sent = request_sent

    def __str__(self) -> str:
        sent = "after the request was sent" if self.request_sent else "before the request was sent"
        return f"upstream {self.operation}: connection error {sent}: {self.detail}"


class UpstreamHTTPError(UpstreamError):
    """The upstream answered with a non-2xx status."""

    def __init__(
        self,
        *,
        operation: Operation,
        status_code: int,
        message: str,
        error_type: str | None = None,
        error_code: str | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(message, operation=operation)
        self.status_code = status_code
        self.message = message
        self.error_type = error_type
        self.error_code = error_code
        self.retry_after_s = retry_after_s

    def __str__(self) -> str:
        parts = [f"upstream {self.operation}: HTTP {self.status_code}"]
        if self.error_type:
            parts.append(f"[{self.error_type}]")
        if self.error_code and self.error_code != self.error_type:
            parts.append(f"[{self.error_code}]")
        if self.message:
            parts.append(self.message)
        return " ".join(parts)


class UpstreamProtocolError(UpstreamError):
    """A 2xx answer whose body is not valid JSON or not a job object."""

    def __init__(
        self, detail: str, *, operation: Operation, status_code: int | None = None
    ) -> None:
        super().__init__(detail, operation=operation)
        self.status_code = status_code

    def __str__(self) -> str:
        status = f" (HTTP {self.status_code})" if self.status_code is not None else ""
        return f"upstream {self.operation}: unexpected answer{status}: {self.detail}"


def _seconds(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _http_date_delay(text: str, now: float) -> float | None:
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:  # "-0000" parses as naive: it means UTC
        when = when.replace(tzinfo=UTC)
    try:
        return when.timestamp() - now
    except (OverflowError, ValueError):
        return None


def parse_retry_after(headers: Mapping[str, str], now: float) -> float | None:
    """The upstream's suggested wait in seconds, clamped to [0, 60], or None.

    Together documents only ``x-ratelimit-reset`` (seconds; a value that looks like an absolute
    unix time is taken relative to ``now``); the SDKs honour ``retry-after-ms``, then
    ``Retry-After`` (seconds or an HTTP date) when present. A retry comes no earlier than any
    of them says: the longest present wait wins. An absent or invalid header is ignored;
    names are matched case-insensitively.
    """
    lowered = {str(key).lower(): str(value).strip() for key, value in headers.items()}

    hint: float | None = None
    if (ms := lowered.get("retry-after-ms")) and (value := _seconds(ms)) is not None:
        hint = value / 1000.0
    if hint is None and (retry_after := lowered.get("retry-after")):
        hint = _seconds(retry_after)
        if hint is None:
            hint = _http_date_delay(retry_after, now)
    reset: float | None = None
    if reset_text := lowered.get("x-ratelimit-reset"):
        reset = _seconds(reset_text)
        if reset is not None and reset > 1_000_000_000:  # an absolute unix time, not a delay
            reset -= now
    waits = [w for w in (hint, reset) if w is not None]
    if not waits:
        return None
    return min(max(max(waits), 0.0), RETRY_AFTER_MAX_S)
