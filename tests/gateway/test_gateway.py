"""The HTTP gateway, driven in-process through httpx's ASGI transport (lifespan included)."""

from __future__ import annotations

import asyncio
import dataclasses
import hmac
import json
import socket
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
import redis.asyncio
import structlog
from asgi_lifespan import LifespanManager
from structlog.testing import capture_logs

from genqueue.gateway import GatewayConfigError, create_app
from genqueue.gateway import auth as gateway_auth
from genqueue.gateway.auth import ApiKeys, bearer_token, check, parse_api_keys
from genqueue.gateway.schemas import GenerationRecord, StatsSnapshot
from genqueue.producer import AsyncClient, RequestView, Settings
from genqueue.producer.keys import Tag
from genqueue.producer.record import RequestView as _RequestView
from genqueue.producer.scripts import AsyncScripts
from genqueue.producer.stats import Stats
from tests.conftest import begin_submit_call

KEY = "gq-test-key-0123456789abcdef"
OTHER_KEY = "gq-second-key-fedcba9876543210"
MODEL = "minimax/video-01-director"
REQ: dict[str, Any] = {"model": MODEL, "prompt": "a paper boat on a canal"}
AUTH = {"Authorization": f"Bearer {KEY}"}
SMALL_LIMIT = 4096


@dataclasses.dataclass
class Gateway:
    http: httpx.AsyncClient
    app: Any


async def _open(app: Any, headers: dict[str, str] | None = None) -> AsyncIterator[Gateway]:
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://gateway", headers=headers or {}
        ) as http:
            yield Gateway(http, app)


@pytest.fixture
async def gw(settings: Settings) -> AsyncIterator[Gateway]:
    """A gateway on the test Redis with two keys; requests carry the first one."""
    app = create_app(settings, api_keys=[KEY, OTHER_KEY], max_body_bytes=SMALL_LIMIT)
    async for g in _open(app, AUTH):
        yield g


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A local TCP port with nothing listening on it."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    yield port


async def _keys(aredis: redis.asyncio.Redis, settings: Settings) -> list[str]:
    """The test's keys but the gateway's limit counters (``{prefix}:gw:*``)."""
    limits = f"{settings.key_prefix}:gw:"
    return [k for k in await aredis.keys(f"{settings.key_prefix}:*") if not k.startswith(limits)]


def _fields(resp: httpx.Response) -> set[str]:
    return {f["field"] for f in resp.json()["error"]["fields"]}


# --- create, idempotency, read -----------------------------------------------------------


async def test_create_answers_201_with_location_and_record(
    gw: Gateway, client: AsyncClient
) -> None:
    """POST /v1/generations answers 201, a Location naming the new id, and the pending record."""
    body = {**REQ, "metadata": {"customer": "c-42"}, "deadline_s": 600}
    resp = await gw.http.post("/v1/generations", json=body)
    assert resp.status_code == 201, resp.text
    rec = resp.json()
    assert resp.headers["location"] == f"/v1/generations/{rec['id']}"
    assert rec["status"] == "pending" and rec["model"] == MODEL
    assert rec["metadata"] == {"customer": "c-42"}
    assert rec["request"]["prompt"] == REQ["prompt"]
    assert (await client.get(rec["id"])).status == "pending"
    assert resp.headers["x-request-id"]


async def test_idempotency_key_replays_the_same_generation(
    gw: Gateway, client: AsyncClient
) -> None:
    """A repeated Idempotency-Key answers 201 again with the same id and Location, creating
    nothing new."""
    headers = {"Idempotency-Key": "order-1234"}
    first = await gw.http.post("/v1/generations", json=REQ, headers=headers)
    again = await gw.http.post(
        "/v1/generations", json={**REQ, "prompt": "something else"}, headers=headers
    )
    assert first.status_code == again.status_code == 201
    assert first.json()["id"] == again.json()["id"]
    assert first.headers["location"] == again.headers["location"]
    assert again.json()["request"]["prompt"] == REQ["prompt"]
    assert (await client.stats()).requests_by_status["pending"] == 1


async def test_get_returns_the_record(gw: Gateway) -> None:
    """GET /v1/generations/{id} answers 200 with the same record the create returned."""
    created = (await gw.http.post("/v1/generations", json=REQ)).json()
    resp = await gw.http.get(f"/v1/generations/{created['id']}")
    assert resp.status_code == 200
    assert resp.json()["id"] == created["id"] and resp.json()["status"] == "pending"


@pytest.mark.parametrize(
    "rid", ["7b0c3f9e-0000-4000-8000-000000000000", "a:b", "x" * 300, "..", "%00"]
)
async def test_unknown_ids_are_404(gw: Gateway, rid: str) -> None:
    """Unknown or impossible ids answer 404 in the error shape, for reads, waits and cancels."""
    for resp in (
        await gw.http.get(f"/v1/generations/{rid}"),
        await gw.http.get(f"/v1/generations/{rid}", params={"wait": "0.1"}),
        await gw.http.delete(f"/v1/generations/{rid}"),
    ):
        assert resp.status_code == 404, resp.text
        assert resp.json()["error"]["type"] == "not_found"


# --- long-poll ---------------------------------------------------------------------------


async def test_wait_returns_as_soon_as_the_generation_is_terminal(
    gw: Gateway, client: AsyncClient
) -> None:
    """GET ?wait= is held until the record turns terminal (a cancel here), then answers 200."""
    rid = (await gw.http.post("/v1/generations", json=REQ)).json()["id"]
    started = time.monotonic()
    poll = asyncio.create_task(gw.http.get(f"/v1/generations/{rid}", params={"wait": 30}))
    await asyncio.sleep(0.3)
    assert not poll.done()
    assert await client.cancel(rid) == "cancelled"
    resp = await asyncio.wait_for(poll, 10)
    assert resp.status_code == 200 and resp.json()["status"] == "cancelled"
    assert time.monotonic() - started < 5


async def test_wait_that_runs_out_returns_the_pending_record(gw: Gateway) -> None:
    """GET ?wait= that expires answers 200 with the still-pending record."""
    rid = (await gw.http.post("/v1/generations", json=REQ)).json()["id"]
    started = time.monotonic()
    resp = await gw.http.get(f"/v1/generations/{rid}", params={"wait": 0.4})
    assert resp.status_code == 200 and resp.json()["status"] == "pending"
    assert time.monotonic() - started >= 0.4


@pytest.mark.parametrize("wait", ["0", "-1", "61", "nan", "inf", "soon"])
async def test_wait_out_of_range_is_422(gw: Gateway, wait: str) -> None:
    """A wait outside (0, 60] answers 422 naming the `wait` parameter."""
    resp = await gw.http.get("/v1/generations/some-id", params={"wait": wait})
    assert resp.status_code == 422 and _fields(resp) == {"wait"}


# --- cancel ------------------------------------------------------------------------------


async def test_cancel_answers_200_then_already_finished(gw: Gateway) -> None:
    """DELETE cancels a pending generation (200, cancelled); a second DELETE says
    already_finished."""
    rid = (await gw.http.post("/v1/generations", json=REQ)).json()["id"]
    first = await gw.http.delete(f"/v1/generations/{rid}")
    assert first.status_code == 200
    assert first.json()["outcome"] == "cancelled"
    assert first.json()["generation"]["status"] == "cancelled"
    second = await gw.http.delete(f"/v1/generations/{rid}")
    assert second.status_code == 200 and second.json()["outcome"] == "already_finished"


async def test_cancel_while_submitting_is_202_requested(
    gw: Gateway, settings: Settings, aredis: redis.asyncio.Redis
) -> None:
    """DELETE of a generation being submitted upstream answers 202 with outcome requested."""
    rid = (await gw.http.post("/v1/generations", json=REQ)).json()["id"]
    scripts = AsyncScripts(aredis)
    assert (await scripts.run(begin_submit_call(settings, rid))).tag is Tag.OK
    resp = await gw.http.delete(f"/v1/generations/{rid}")
    assert resp.status_code == 202
    assert resp.json()["outcome"] == "requested"
    assert resp.json()["generation"]["cancel_requested"] is True


# --- stats, health ----------------------------------------------------------------------


async def test_stats(gw: Gateway) -> None:
    """GET /v1/stats answers 200 with the queue snapshot."""
    await gw.http.post("/v1/generations", json=REQ)
    resp = await gw.http.get("/v1/stats")
    assert resp.status_code == 200
    body = resp.json()
    assert body["requests_by_status"]["pending"] == 1
    assert body["queue"]["ready"] + body["queue"]["deferred"] >= 1
    assert body["total_cost_usd"] == "0.000000"
    # The key's tenant's own budget line (no budget; the admitted one reserved), not the others'.
    budget = body["budget"]
    assert budget["tenant"]["tenant"] == "default" and budget["tenant"]["budget"] is None
    assert budget["tenant"]["day"]["reserved_usd"] == "1.000000"  # the default estimate
    assert budget["tenants"] is None and budget["deployment"] is None


async def test_health_and_readiness_need_no_key(settings: Settings) -> None:
    """/healthz, /readyz and /openapi.json answer 200 without an API key."""
    async for g in _open(create_app(settings, api_keys=[KEY])):
        assert (await g.http.get("/healthz")).json() == {"status": "ok"}
        assert (await g.http.get("/readyz")).json() == {"status": "ready"}
        assert (await g.http.get("/openapi.json")).status_code == 200


async def test_openapi_describes_requests_as_togethers_spec(settings: Settings) -> None:
    """The gateway's OpenAPI document says what the request model does: only model required,
    steps 10-50, deprecated top-level frame_images, extra_body for new upstream fields."""
    async for g in _open(create_app(settings, api_keys=[KEY])):
        doc = (await g.http.get("/openapi.json")).json()
    (name,) = [n for n in doc["components"]["schemas"] if n.startswith("CreateGeneration")]
    schema = doc["components"]["schemas"][name]
    assert schema["required"] == ["model"]
    props = schema["properties"]
    steps = next(o for o in props["steps"]["anyOf"] if o.get("type") == "integer")
    assert (steps["minimum"], steps["maximum"]) == (10, 50)
    assert props["frame_images"]["deprecated"] is True
    assert "extra_body" in props and "unchanged" in props["extra_body"]["description"]
    assert props["prompt"]["anyOf"][0]["maxLength"] == 32_000


async def test_redis_down_is_503_never_500(settings: Settings, closed_port: int) -> None:
    """With Redis unreachable, /readyz and every /v1 operation answer 503 (healthz stays 200)."""
    down = dataclasses.replace(settings, redis_url=f"redis://127.0.0.1:{closed_port}/0")
    async for g in _open(create_app(down, api_keys=[KEY]), AUTH):
        assert (await g.http.get("/healthz")).status_code == 200
        ready = await g.http.get("/readyz")
        assert ready.status_code == 503 and ready.json()["error"]["type"] == "unavailable"
        for resp in (
            await g.http.post("/v1/generations", json=REQ),
            await g.http.get("/v1/generations/abc"),
            await g.http.get("/v1/generations/abc", params={"wait": 1}),
            await g.http.delete("/v1/generations/abc"),
            await g.http.get("/v1/stats"),
        ):
            assert resp.status_code == 503, resp.text
            assert resp.headers["retry-after"] == "1"


# --- auth --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "header", [None, "", "Basic Zm9vOmJhcg==", "Bearer", "Bearer ", f"Token {KEY}", "Bearer a b"]
)
async def test_missing_or_malformed_authorization_is_401(
    settings: Settings, header: str | None
) -> None:
    """No or a malformed Authorization header answers 401 with WWW-Authenticate: Bearer."""
    headers = {} if header is None else {"Authorization": header}
    async for g in _open(create_app(settings, api_keys=[KEY]), headers):
        for resp in (
            await g.http.get("/v1/stats"),
            await g.http.post("/v1/generations", json=REQ),
        ):
            assert resp.status_code == 401
            assert resp.headers["www-authenticate"].startswith("Bearer")
            assert resp.json()["error"]["type"] == "unauthorized"


async def test_wrong_key_is_403_and_every_configured_key_works(
    settings: Settings, aredis: redis.asyncio.Redis
) -> None:
    """A key that is not configured answers 403 (nothing written but its address's failed
    authentications); each configured key is accepted."""
    app = create_app(settings, api_keys=[KEY, OTHER_KEY])
    async for g in _open(app):
        wrong = await g.http.post(
            "/v1/generations", json=REQ, headers={"Authorization": f"Bearer {KEY}x"}
        )
        assert wrong.status_code == 403 and wrong.json()["error"]["type"] == "forbidden"
        assert await _keys(aredis, settings) == []
        assert await aredis.exists(settings.keys.gateway_auth_failures("127.0.0.1"))
        for key in (KEY, OTHER_KEY):
            ok = await g.http.get("/v1/stats", headers={"Authorization": f"bearer {key}"})
            assert ok.status_code == 200


def test_key_check_compares_against_every_key_in_constant_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """ApiKeys.matches runs hmac.compare_digest over every key, matched first, last or not."""
    calls: list[tuple[int, int]] = []
    real = hmac.compare_digest

    def counting(a: bytes, b: bytes) -> bool:
        calls.append((len(a), len(b)))
        return real(a, b)

    monkeypatch.setattr(gateway_auth.hmac, "compare_digest", counting)
    keys = ApiKeys(["first-key", "second", "k3" * 40])
    for presented, expected in (("first-key", True), ("k3" * 40, True), ("nope", False)):
        calls.clear()
        assert keys.matches(presented) is expected
        assert len(calls) == 3
        assert all(a == b == 32 for a, b in calls)  # equal-length digests: no length leak


def test_bearer_parsing_and_verdicts() -> None:
    """Only `Bearer <token>` counts as a presented key; the verdict is ok, missing or invalid."""
    keys = ApiKeys([KEY])
    assert bearer_token(f"Bearer {KEY}".encode()) == KEY.encode()
    assert bearer_token(b"Basic abc") is None and bearer_token(None) is None
    assert check(keys, f"Bearer {KEY}".encode()) == "ok"
    assert check(keys, b"Bearer other") == "invalid"
    assert check(keys, b"") == "missing"


def test_no_keys_refuses_to_start_unless_anonymous(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without keys create_app raises GatewayConfigError; allow_anonymous=True builds it."""
    monkeypatch.delenv("GENQUEUE_API_KEYS", raising=False)
    with pytest.raises(GatewayConfigError, match="GENQUEUE_API_KEYS"):
        create_app(settings)
    with pytest.raises(GatewayConfigError):
        create_app(settings, api_keys=["", " "])
    assert create_app(settings, allow_anonymous=True) is not None
    with pytest.raises(GatewayConfigError):
        parse_api_keys("good,has space")


async def test_keys_from_the_environment(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """GENQUEUE_API_KEYS (comma-separated) configures the keys when none are passed."""
    monkeypatch.setenv("GENQUEUE_API_KEYS", f" {KEY} , {OTHER_KEY},")
    async for g in _open(create_app(settings)):
        for key in (KEY, OTHER_KEY):
            resp = await g.http.get("/v1/stats", headers={"Authorization": f"Bearer {key}"})
            assert resp.status_code == 200
        assert (await g.http.get("/v1/stats")).status_code == 401


async def test_anonymous_mode_accepts_requests_without_a_key(settings: Settings) -> None:
    """With allow_anonymous=True and no keys, /v1 answers without Authorization (dev only)."""
    async for g in _open(create_app(settings, api_keys=[], allow_anonymous=True)):
        assert (await g.http.post("/v1/generations", json=REQ)).status_code == 201


async def test_logs_carry_a_request_id_and_never_the_key(gw: Gateway) -> None:
    """Log lines carry the request id (and the generation id), never the key or Authorization
    header; the log context is restored after each request."""
    structlog.contextvars.bind_contextvars(outer="kept")
    try:
        with capture_logs(processors=[structlog.contextvars.merge_contextvars]) as logs:
            created = await gw.http.post("/v1/generations", json=REQ)
            await gw.http.get("/v1/stats", headers={"Authorization": f"Bearer {KEY}-wrong"})
        assert structlog.contextvars.get_contextvars() == {"outer": "kept"}
    finally:
        structlog.contextvars.clear_contextvars()
    assert KEY not in repr(logs) and "authorization" not in repr(logs).lower()
    access = [e for e in logs if e["event"] == "http_request"]
    assert [(e["method"], e["status"]) for e in access] == [("POST", 201), ("GET", 403)]
    assert access[0]["http_request_id"] == created.headers["x-request-id"]
    assert access[0]["request_id"] == created.json()["id"]
    assert "request_id" not in access[1]


async def test_request_id_is_echoed(gw: Gateway) -> None:
    """A sane X-Request-ID from the client is echoed back; a wild one is replaced."""
    mine = await gw.http.get("/healthz", headers={"X-Request-ID": "abc-123"})
    assert mine.headers["x-request-id"] == "abc-123"
    wild = await gw.http.get("/healthz", headers={"X-Request-ID": "a <b>"})
    assert wild.headers["x-request-id"] != "a <b>" and len(wild.headers["x-request-id"]) == 32


# --- rejected input ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "headers", "fields"),
    [
        ({**REQ, "colour": "red"}, {}, {"colour"}),
        ({**REQ, "width": 0, "prompt": "   "}, {}, {"width", "prompt"}),
        ({**REQ, "steps": 5}, {}, {"steps"}),
        ({**REQ, "extra_body": {"deadline_s": 5}}, {}, {"extra_body"}),
        ({"prompt": "x"}, {}, {"model"}),
        ({**REQ, "metadata": {"bad key": "v"}}, {}, {"metadata.bad key.[key]"}),
        ({**REQ, "deadline_s": -5}, {}, {"deadline_s"}),
        ({**REQ, "deadline_s": 10**9}, {}, {"deadline_s"}),
        ({**REQ, "webhook_url": "ftp://example.com/x"}, {}, {"webhook_url"}),
        ({**REQ, "seconds": "soon"}, {}, {"seconds"}),
        (REQ, {"Idempotency-Key": "has space"}, {"Idempotency-Key"}),
        (REQ, {"Idempotency-Key": "k" * 300}, {"Idempotency-Key"}),
        ([REQ], {}, {"body"}),
        ("just a string", {}, {"body"}),
    ],
)
async def test_invalid_requests_are_422_with_field_names_and_write_nothing(
    gw: Gateway,
    settings: Settings,
    aredis: redis.asyncio.Redis,
    body: Any,
    headers: dict[str, str],
    fields: set[str],
) -> None:
    """Invalid input answers 422 naming each bad field, and nothing is written to Redis."""
    resp = await gw.http.post("/v1/generations", json=body, headers=headers)
    assert resp.status_code == 422, resp.text
    assert resp.json()["error"]["type"] == "invalid_request"
    assert _fields(resp) == fields
    assert await _keys(aredis, settings) == []


@pytest.mark.parametrize(
    ("content", "content_type"),
    [
        (b'{"model": ', "application/json"),
        (b"", "application/json"),
        (b'{"model": "m", "prompt": "p"}', "text/plain"),
        (b'{"model": "m", "prompt": "p"}', None),
        (b'{"model": "\xff\xfe"}', "application/json"),
        (b"[" * 2000 + b"]" * 2000, "application/json"),
    ],
)
async def test_non_json_bodies_are_400(
    gw: Gateway,
    settings: Settings,
    aredis: redis.asyncio.Redis,
    content: bytes,
    content_type: str | None,
) -> None:
    """A body that is not JSON (malformed, empty, wrong Content-Type, bad UTF-8) answers 400."""
    headers = {} if content_type is None else {"Content-Type": content_type}
    resp = await gw.http.post("/v1/generations", content=content, headers=headers)
    assert resp.status_code == 400, resp.text
    assert resp.json()["error"]["type"] == "malformed_body"
    assert await _keys(aredis, settings) == []


@pytest.mark.parametrize("depth", [40, 900])
async def test_deeply_nested_json_is_422_not_500(settings: Settings, depth: int) -> None:
    """JSON nested almost to the parser's limit answers 422, in media or any other field."""
    media: Any = {}
    for _ in range(depth):
        media = {"a": media}
    nested = "[" * depth + "]" * depth
    async for g in _open(create_app(settings, api_keys=[KEY]), AUTH):
        resp = await g.http.post("/v1/generations", json={**REQ, "media": media})
        assert resp.status_code == 422 and _fields(resp) == {"media"}
        for raw in (f'{{"model": {nested}, "prompt": "p"}}', nested, f'{{"x": {nested}}}'):
            resp = await g.http.post(
                "/v1/generations", content=raw, headers={"Content-Type": "application/json"}
            )
            assert resp.status_code == 422, resp.text


async def test_lone_surrogates_are_422_and_write_nothing(
    gw: Gateway, settings: Settings, aredis: redis.asyncio.Redis
) -> None:
    """Strings that are not valid Unicode (lone surrogates, in any field) answer 422."""
    for extra in ({"media": {"\ud800": "x"}}, {"media": {"a": ["\udfff"]}}, {"prompt": "\ud800"}):
        raw = json.dumps({**REQ, **extra})  # ASCII escapes: valid JSON, invalid Unicode
        resp = await gw.http.post(
            "/v1/generations", content=raw, headers={"Content-Type": "application/json"}
        )
        assert resp.status_code == 422 and _fields(resp) == set(extra), resp.text
    assert await _keys(aredis, settings) == []


async def test_oversized_bodies_are_413(
    gw: Gateway, settings: Settings, aredis: redis.asyncio.Redis
) -> None:
    """A body over the limit answers 413, whether declared by Content-Length or streamed."""
    big = {**REQ, "negative_prompt": "x" * (SMALL_LIMIT + 10)}
    declared = await gw.http.post("/v1/generations", json=big)
    assert declared.status_code == 413
    assert declared.json()["error"]["type"] == "payload_too_large"

    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"model": "m", "prompt": "'
        for _ in range(10):
            yield b"y" * 1024
        yield b'"}'

    streamed = await gw.http.post(
        "/v1/generations", content=chunks(), headers={"Content-Type": "application/json"}
    )
    assert "content-length" not in streamed.request.headers
    assert streamed.status_code == 413
    assert await _keys(aredis, settings) == []


async def test_unknown_routes_and_methods_use_the_error_shape(gw: Gateway) -> None:
    """Unknown paths answer 404 and wrong methods 405, in the same error shape."""
    missing = await gw.http.get("/v1/nothing-here")
    assert missing.status_code == 404 and missing.json()["error"]["type"] == "not_found"
    wrong = await gw.http.put("/v1/stats")
    assert wrong.status_code == 405
    assert wrong.json()["error"]["type"] == "method_not_allowed"


# --- the wire models follow the producer -------------------------------------------------


def test_response_models_match_the_producer_views() -> None:
    """GenerationRecord and StatsSnapshot name exactly the fields the producer serialises."""
    view_fields = {f.name for f in dataclasses.fields(_RequestView)}
    derived = {"cost_usd", "queue_wait_s", "upstream_duration_s", "total_duration_s"}
    derived |= {"detection_lag_s"}
    assert set(GenerationRecord.model_fields) == view_fields | derived
    stats = Stats(
        requests_by_status={},
        tracking=0,
        active_upstream=0,
        inflight=0,
        queue_ready=0,
        queue_deferred=0,
        finished={},
        cost_micro_usd={},
    )
    assert set(StatsSnapshot.model_fields) == set(stats.to_json_dict())
    assert RequestView is _RequestView
