"""One JSON error shape for every failure, and the exception handlers that produce it.

``{"error": {"type": ..., "message": ..., "fields": [{"field": ..., "message": ...}]}}``
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import redis
import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from genqueue.gateway.schemas import ErrorDetail, ErrorResponse, ErrorType, FieldProblem
from genqueue.producer import InvalidRequest, QueueFull, RequestNotFound, WriteNotDurable
from genqueue.producer.tenants import TenantError

#: The header with which an admin key acts for one tenant.
TENANT_HEADER = "X-Genqueue-Tenant"

log = structlog.get_logger(__name__)

#: Seconds a client is asked to wait before retrying after a 503.
RETRY_AFTER_S = 1

_TYPE_BY_STATUS: dict[int, ErrorType] = {
    400: "malformed_body",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    422: "invalid_request",
    429: "rate_limited",
    503: "unavailable",
}


class TooManyWaiters(Exception):
    """The long-poll cap is reached; answered 429 with ``Retry-After``."""

    retry_after_s = 1


#: Names under which the producer reports options that travel as HTTP headers.
_PRODUCER_FIELD_NAMES = {"idempotency_key": "Idempotency-Key"}


def error_payload(
    type_: ErrorType, message: str, fields: Iterable[tuple[str, str]] = ()
) -> dict[str, Any]:
    """The JSON body of an error response."""
    detail = ErrorDetail(
        type=type_,
        message=message,
        fields=[FieldProblem(field=f, message=m) for f, m in fields],
    )
    return ErrorResponse(error=detail).model_dump(mode="json")


def error_response(
    status: int,
    message: str,
    *,
    type_: ErrorType | None = None,
    fields: Iterable[tuple[str, str]] = (),
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    """An error answer in the gateway's shape."""
    kind = type_ or _TYPE_BY_STATUS.get(status, "http_error")
    return JSONResponse(
        error_payload(kind, message, fields), status_code=status, headers=dict(headers or {})
    )


def _field_name(loc: Sequence[Any]) -> str:
    """``("body", "metadata", "k")`` -> ``metadata.k``; ``("header", "idempotency-key")`` ->
    ``Idempotency-Key``; ``("query", "wait")`` -> ``wait``."""
    if not loc:
        return "body"
    where, *rest = loc
    if where == "header" and rest:
        return "-".join(part.capitalize() for part in str(rest[0]).split("-"))
    if where in ("body", "query", "path", "header"):
        return ".".join(str(p) for p in rest) or str(where)
    return ".".join(str(p) for p in loc)


def _is_json(content_type: str | None) -> bool:
    media = (content_type or "").split(";", 1)[0].strip().lower()
    return media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )


def validation_problem(request: Request, exc: RequestValidationError) -> JSONResponse:
    """FastAPI's own validation errors: 400 when the body is not JSON at all, else 422."""
    errors = list(exc.errors())
    body_errors = [e for e in errors if tuple(e.get("loc", ()))[:1] == ("body",)]
    if any(e.get("type") == "json_invalid" for e in errors):
        return error_response(400, "the body is not valid JSON")
    if body_errors and not _is_json(request.headers.get("content-type")):
        return error_response(400, "the body must be JSON sent as Content-Type: application/json")
    if any(tuple(e.get("loc", ())) == ("body",) and e.get("type") == "missing" for e in errors):
        return error_response(400, "the body must be a JSON object")
    fields = []
    for e in errors:
        message = "unknown field" if e.get("type") == "extra_forbidden" else str(e.get("msg", ""))
        fields.append((_field_name(tuple(e.get("loc", ()))), message))
    return error_response(422, "invalid request", fields=fields)


def _invalid_request(exc: InvalidRequest) -> JSONResponse:
    fields = [(_PRODUCER_FIELD_NAMES.get(e.field, e.field), e.message) for e in exc.errors]
    return error_response(422, "invalid request", fields=fields)


def _http_problem(exc: StarletteHTTPException) -> JSONResponse:
    message = exc.detail if isinstance(exc.detail, str) else "error"
    if exc.status_code == 400:
        message = "the body could not be read as JSON"
    return error_response(exc.status_code, message, headers=exc.headers)


def unavailable(message: str = "the queue's Redis is unreachable") -> JSONResponse:
    """503 with a Retry-After hint."""
    return error_response(503, message, headers={"Retry-After": str(RETRY_AFTER_S)})


async def handle(request: Request, exc: Exception) -> JSONResponse:
    """Every exception the routes may raise, mapped onto the error shape."""
    if isinstance(exc, RequestValidationError):
        return validation_problem(request, exc)
    if isinstance(exc, InvalidRequest):
        return _invalid_request(exc)
    if isinstance(exc, RequestNotFound):
        return error_response(404, "no generation with this id")
    if isinstance(exc, TenantError):  # only an admin key names a tenant (its header)
        return error_response(422, str(exc), fields=[(TENANT_HEADER, str(exc))])
    if isinstance(exc, StarletteHTTPException):
        return _http_problem(exc)
    if isinstance(exc, WriteNotDurable):
        # Written on the primary, unconfirmed by any replica: the caller must not take the
        # id as safe; a retry with the same Idempotency-Key returns it if it survived.
        log.warning("create_not_durable", request_id=exc.request_id, wait=exc.wait)
        return unavailable(
            f"generation {exc.request_id} was written but no replica confirmed it in time; "
            "retry with the same Idempotency-Key"
        )
    if isinstance(exc, QueueFull):
        # The tenant's bounded backlog is full: nothing was written; it drains as slots free.
        return error_response(
            429,
            f"too many generations waiting for an upstream slot for tenant {exc.tenant!r} "
            "(its max_waiting): retry later",
            headers={"Retry-After": str(RETRY_AFTER_S)},
        )
    if isinstance(exc, TooManyWaiters):
        return error_response(
            429,
            "the gateway holds as many long-polls as it may; retry, or poll without wait",
            headers={"Retry-After": str(exc.retry_after_s)},
        )
    if isinstance(exc, redis.RedisError | OSError | TimeoutError):
        log.warning("redis_unavailable", error=type(exc).__name__)
        return unavailable()
    log.error("unhandled_error", error=type(exc).__name__, exc_info=exc)
    return error_response(500, "internal error", type_="internal")


def install(app: FastAPI) -> None:
    """Register :func:`handle` for every exception type the gateway answers itself."""
    for kind in (
        RequestValidationError,
        InvalidRequest,
        RequestNotFound,
        TenantError,
        WriteNotDurable,
        QueueFull,
        StarletteHTTPException,
        TooManyWaiters,
        redis.RedisError,
        OSError,
        TimeoutError,
        Exception,
    ):
        app.add_exception_handler(kind, handle)
