"""The HTTP operations: thin translations onto the producer's ``AsyncClient``."""

import asyncio
import re
from typing import Annotated, Any

import structlog
from fastapi import APIRouter, Depends, Header, Query, Request, Response, Security
from fastapi.security import HTTPBearer
from starlette.responses import JSONResponse

from genqueue.gateway.errors import unavailable
from genqueue.gateway.limits import WaiterCap
from genqueue.gateway.principals import acting_tenant
from genqueue.gateway.resources import Resources
from genqueue.gateway.schemas import (
    CancelResult,
    CreateGeneration,
    ErrorResponse,
    GenerationRecord,
    Health,
    StatsSnapshot,
)
from genqueue.producer import AsyncClient, RequestNotFound, WaitTimeout
from genqueue.producer.keys import DEFAULT_TENANT
from genqueue.producer.models import MAX_IDEMPOTENCY_KEY_CHARS

log = structlog.get_logger(__name__)

#: Ids the queue hands out are UUIDs; anything outside this alphabet cannot name a record.
_ID_SHAPE = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
#: How long /readyz waits for Redis to answer PING.
READY_TIMEOUT_S = 2.0

_bearer = HTTPBearer(
    auto_error=False,
    description="An API key (`genqueue key create`, or one from GENQUEUE_API_KEYS): "
    "`Authorization: Bearer <key>`.",
)


def _err(description: str) -> dict[str, Any]:
    return {"model": ErrorResponse, "description": description}


AUTH_ERRORS: dict[int | str, dict[str, Any]] = {
    401: _err("No or malformed `Authorization: Bearer` header (answer has `WWW-Authenticate`)."),
    403: _err("The API key is not accepted."),
    429: _err("Over this API key's request rate; retry after `Retry-After` seconds."),
}
WAITERS_FULL: dict[int | str, dict[str, Any]] = {
    429: _err(
        "Over this key's request rate, or the gateway holds as many long-polls as it may; "
        "retry after `Retry-After` seconds."
    ),
}
UNAVAILABLE: dict[int | str, dict[str, Any]] = {
    503: _err("The queue's Redis is unreachable; retry after `Retry-After` seconds."),
}
NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: _err("No generation has this id (never existed, or expired after its retention)."),
}


def client_of(request: Request) -> AsyncClient:
    """The app's one producer client, opened on first use (so a mounted gateway whose lifespan
    never ran works too). ``request.app`` is the gateway itself, mounted or not."""
    resources: Resources = request.app.state.resources
    return resources.client


Client = Annotated[AsyncClient, Depends(client_of)]


def _record(view: Any) -> GenerationRecord:
    return GenerationRecord.model_validate(view.to_json_dict())


def _location(request: Request, request_id: str) -> str:
    return f"{request.scope.get('root_path', '')}/v1/generations/{request_id}"


async def _get(client: AsyncClient, request_id: str, tenant: str | None) -> GenerationRecord:
    if not _ID_SHAPE.match(request_id):
        raise RequestNotFound(request_id)
    return _record(await client.get(request_id, tenant=tenant))


#: What a route needs to know about its caller: the tenant it acts for (None: an admin key
#: acting for every tenant). A tenant's key is scoped to its own, whatever it sends.
Tenant = Annotated[str | None, Depends(acting_tenant)]


def build_v1_router(max_wait_s: float, waiters: WaiterCap) -> APIRouter:
    """The authenticated API under ``/v1`` (``max_wait_s`` bounds the ``wait`` long-poll;
    ``waiters`` caps how many are held at once)."""
    router = APIRouter(prefix="/v1", dependencies=[Security(_bearer)], responses=AUTH_ERRORS)

    @router.post(
        "/generations",
        status_code=201,
        response_model=GenerationRecord,
        summary="Enqueue a generation",
        responses={
            201: {
                "description": "Enqueued (or, for a repeated `Idempotency-Key`, the request "
                "that key already made).",
                "headers": {
                    "Location": {
                        "description": "`/v1/generations/{id}`",
                        "schema": {"type": "string"},
                        "required": True,
                    }
                },
            },
            400: _err("The body is not JSON (wrong `Content-Type`, malformed or empty)."),
            413: _err("The body is larger than the gateway's limit."),
            422: _err("The JSON is not a valid request; `fields` names each bad field."),
            503: _err(
                "The queue's Redis is unreachable, or (with replicas) the generation was "
                "written but no replica confirmed it in time (the message names its id): "
                "retry with the same `Idempotency-Key` after `Retry-After` seconds."
            ),
        },
    )
    async def create_generation(
        body: CreateGeneration,
        request: Request,
        response: Response,
        client: Client,
        tenant: Tenant,
        idempotency_key: Annotated[
            str | None,
            Header(
                alias="Idempotency-Key",
                max_length=MAX_IDEMPOTENCY_KEY_CHARS,
                description="Same key -> same generation: a retry with a key already used "
                "creates nothing and answers 201 with that generation's id, `Location` and "
                "current record (the first request's body wins; a retry's body is not "
                "compared). A key is remembered as long as its record.",
            ),
        ] = None,
    ) -> GenerationRecord:
        """Validate and enqueue a generation; nothing is written when the input is refused.

        Answers **201** with the record and `Location: /v1/generations/{id}`. Replays of an
        `Idempotency-Key` also answer 201, with the same id and `Location` (as Stripe replays
        the original response); the record shows the generation's current state.
        """
        request_id = await client.submit(
            body.request_fields(),
            idempotency_key=idempotency_key,
            webhook_url=body.webhook_url,
            deadline_s=body.deadline_s,
            tenant=tenant or DEFAULT_TENANT,
            priority=body.priority,
        )
        structlog.contextvars.bind_contextvars(request_id=request_id)
        log.info("generation_submitted", model=body.model)
        response.headers["Location"] = _location(request, request_id)
        return _record(await client.get(request_id, tenant=tenant))

    @router.get(
        "/generations/{request_id}",
        response_model=GenerationRecord,
        summary="Read a generation (optionally long-polling until it finishes)",
        responses={
            200: {"description": "The record: terminal, or still running when `wait` ran out."},
            **NOT_FOUND,
            **WAITERS_FULL,
            422: _err("`wait` is out of range."),
            **UNAVAILABLE,
        },
    )
    async def get_generation(
        request_id: str,
        client: Client,
        tenant: Tenant,
        wait: Annotated[
            float | None,
            Query(
                gt=0,
                le=max_wait_s,
                allow_inf_nan=False,
                description=f"Long-poll: wait up to this many seconds (at most {max_wait_s:g}) "
                "for the generation to reach a terminal status. The answer is 200 either way: "
                "as soon as it is terminal, or with its current (still running) record when "
                "the wait runs out.",
            ),
        ] = None,
    ) -> GenerationRecord:
        """The generation's current record; with `?wait=SECONDS`, held until it is terminal."""
        if wait is None or not _ID_SHAPE.match(request_id):
            return await _get(client, request_id, tenant)
        with waiters.hold():
            try:
                return _record(await client.wait(request_id, timeout_s=wait, tenant=tenant))
            except WaitTimeout:
                return await _get(client, request_id, tenant)

    @router.delete(
        "/generations/{request_id}",
        response_model=CancelResult,
        summary="Cancel a generation",
        responses={
            200: {"description": "`cancelled` now, or `already_finished` (nothing changed)."},
            202: {
                "model": CancelResult,
                "description": "`requested`: the generation is being submitted upstream; the "
                "cancel is honoured at its next step.",
            },
            **NOT_FOUND,
            422: _err("Invalid parameters."),
            **UNAVAILABLE,
        },
    )
    async def cancel_generation(
        request_id: str, response: Response, client: Client, tenant: Tenant
    ) -> CancelResult:
        """Cancel. A job already created upstream shows `cancelled` at once and is still
        followed (`tracking`) until the upstream finishes, so its cost is recorded."""
        if not _ID_SHAPE.match(request_id):
            raise RequestNotFound(request_id)
        outcome = await client.cancel(request_id, tenant=tenant)
        structlog.contextvars.bind_contextvars(request_id=request_id)
        log.info("generation_cancel", outcome=outcome)
        if outcome == "requested":
            response.status_code = 202
        return CancelResult(outcome=outcome, generation=await _get(client, request_id, tenant))

    @router.get(
        "/stats",
        response_model=StatsSnapshot,
        summary="Queue depth, in-flight counts and totals (the caller's tenant's own)",
        responses={
            422: _err("An admin key's `X-Genqueue-Tenant` is not a tenant name."),
            **UNAVAILABLE,
        },
    )
    async def stats(client: Client, tenant: Tenant) -> StatsSnapshot:
        """A snapshot read from Redis: the caller's tenant's own counts and totals (an admin
        key: the cluster's, or a tenant's with `X-Genqueue-Tenant`)."""
        snapshot = await client.stats(tenant=tenant)
        return StatsSnapshot.model_validate(snapshot.to_json_dict())

    return router


def build_health_router() -> APIRouter:
    """Liveness and readiness probes (no key needed)."""
    router = APIRouter(tags=["health"])

    @router.get("/healthz", response_model=Health, summary="The process is alive")
    async def healthz() -> Health:
        """Always 200 while the process serves requests (does not touch Redis)."""
        return Health(status="ok")

    @router.get(
        "/readyz",
        response_model=Health,
        summary="Redis is reachable",
        responses={503: _err("Redis did not answer PING.")},
    )
    async def readyz(client: Client) -> Health | JSONResponse:
        """200 when Redis answers PING within a couple of seconds, else 503."""
        try:
            await asyncio.wait_for(client.redis.ping(), READY_TIMEOUT_S)
        except Exception as exc:  # any failure to reach Redis means "not ready"
            log.warning("not_ready", error=type(exc).__name__)
            return unavailable("Redis did not answer PING")
        return Health(status="ready")

    return router
