"""UpstreamClient: requests on the wire, error translation, hooks, secrecy, and both transports."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import logging
import socket
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator, MutableMapping
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any

import aiohttp
import httpx
import pytest
import structlog
from structlog.testing import capture_logs

from genqueue.worker.upstream import (
    USER_AGENT,
    CallRecord,
    TransportKind,
    UpstreamClient,
    UpstreamConnectionError,
    UpstreamError,
    UpstreamHTTPError,
    UpstreamProtocolError,
    UpstreamTimeout,
    UpstreamTimeouts,
    make_transport,
    parse_retry_after,
)
from genqueue.worker.upstream.client import MAX_BODY_BYTES

API_KEY = "sk-test-0123456789abcdef-SECRET"
BASE = "https://api.example.test"
JOB = {"id": "job-1", "status": "queued", "model": "m", "created_at": 1760943438.5}

Handler = Callable[[httpx.Request], Coroutine[None, None, httpx.Response]]


def _job_response(job: dict[str, Any] | None = None, status: int = 200) -> httpx.Response:
    return httpx.Response(status, json=job or JOB)


@contextlib.asynccontextmanager
async def _client(
    handler: Handler,
    *,
    records: list[CallRecord] | None = None,
    base_url: str = BASE,
    on_call: Callable[[CallRecord], None] | None = None,
) -> AsyncIterator[UpstreamClient]:
    hook = on_call if on_call is not None else (records.append if records is not None else None)
    client = UpstreamClient(
        base_url=base_url, api_key=API_KEY, transport=httpx.MockTransport(handler), on_call=hook
    )
    async with client:
        yield client


@pytest.fixture
def debug_logs() -> Iterator[list[MutableMapping[str, Any]]]:
    """Captured structlog events, with debug level enabled whatever the global config says."""
    old = structlog.get_config()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG))
    try:
        with capture_logs() as logs:
            yield logs
    finally:
        structlog.configure(**old)


# --- requests on the wire ------------------------------------------------------------------


async def test_create_request_shape() -> None:
    """create POSTs the JSON body to /v2/videos with bearer auth, Idempotency-Key and UA."""
    seen: list[httpx.Request] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return _job_response()

    body = {"model": "minimax/video-01-director", "prompt": "a cat", "width": 1366, "seconds": "5"}
    async with _client(handler) as client:
        job = await client.create(body, idempotency_key="req-123:0")
    assert job.id == "job-1" and job.status == "queued"
    (request,) = seen
    assert request.method == "POST"
    assert str(request.url) == "https://api.example.test/v2/videos"
    assert request.headers["authorization"] == f"Bearer {API_KEY}"
    assert request.headers["idempotency-key"] == "req-123:0"
    assert request.headers["content-type"] == "application/json"
    assert request.headers["user-agent"] == USER_AGENT
    assert USER_AGENT.startswith("genqueue/")
    assert json.loads(request.content) == body


async def test_retrieve_request_shape_quotes_the_id() -> None:
    """retrieve GETs /v2/videos/{id} with the id percent-encoded as one path segment."""
    seen: list[httpx.Request] = []
    odd_id = "a/b c?d"

    async def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return _job_response({**JOB, "id": odd_id})

    async with _client(handler, base_url="http://sim.local:8000/prefix/") as client:
        job = await client.retrieve(odd_id)
    assert job.id == odd_id
    (request,) = seen
    assert request.method == "GET"
    assert request.url.raw_path == b"/prefix/v2/videos/a%2Fb%20c%3Fd"
    assert request.headers["authorization"] == f"Bearer {API_KEY}"
    assert "idempotency-key" not in request.headers


async def test_retrieve_of_another_job_is_protocol_error() -> None:
    """An answer about a different job id than the one asked for is a protocol error."""

    async def handler(request: httpx.Request) -> httpx.Response:
        return _job_response({**JOB, "id": "someone-else"})

    async with _client(handler) as client:
        with pytest.raises(UpstreamProtocolError):
            await client.retrieve("job-1")


@pytest.mark.parametrize(
    "base_url",
    ["https://api.together.xyz/v1", "https://api.together.xyz/v2/", "ftp://x", "not a url", ""],
)
def test_bad_base_url_is_refused(base_url: str) -> None:
    """A base URL that is not http(s) or already has /v1 or /v2 is refused at construction."""
    with pytest.raises(ValueError):
        UpstreamClient(base_url=base_url, api_key=API_KEY)


@pytest.mark.parametrize("key", ["", "   ", "sk-\nnewline", "sk-ü"])
def test_bad_api_key_is_refused_without_echoing_it(key: str) -> None:
    """An empty or non-header-safe key is refused, and the error does not contain it."""
    with pytest.raises(ValueError) as info:
        UpstreamClient(base_url=BASE, api_key=key)
    assert not key.strip() or key not in str(info.value)


async def test_bad_arguments_send_nothing() -> None:
    """Invalid idempotency keys, ids and non-JSON bodies raise before any request is sent."""
    seen: list[httpx.Request] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return _job_response()

    async with _client(handler) as client:
        with pytest.raises(ValueError):
            await client.create({"model": "m"}, idempotency_key="")
        with pytest.raises(ValueError):
            await client.create({"model": "m"}, idempotency_key="has space")
        with pytest.raises(TypeError):
            await client.create({"model": object()}, idempotency_key="k")
        with pytest.raises(ValueError):
            await client.create({"model": "m", "guidance_scale": float("nan")}, idempotency_key="k")
        for bad_id in ["", "..", "a\nb"]:
            with pytest.raises(ValueError):
                await client.retrieve(bad_id)
    assert seen == []


async def test_closed_client_refuses_calls() -> None:
    """After aclose (idempotent), a call raises RuntimeError instead of a fake upstream error."""

    async def handler(request: httpx.Request) -> httpx.Response:
        return _job_response()

    async with _client(handler) as client:
        pass
    await client.aclose()
    with pytest.raises(RuntimeError):
        await client.retrieve("job-1")


# --- HTTP errors -----------------------------------------------------------------------------

ERROR_CASES = [
    pytest.param(
        400,
        {
            "error": {
                "message": "width must be a multiple of 8",
                "type": "invalid_request_error",
                "param": "width",
                "code": "invalid_width",
            }
        },
        {},
        "width must be a multiple of 8",
        ("invalid_request_error", "invalid_width", None),
        id="400-openai-style",
    ),
    pytest.param(
        401,
        {"error": {"message": "Invalid API key provided"}},
        {},
        "Invalid API key provided",
        (None, None, None),
        id="401",
    ),
    pytest.param(
        402,
        {"error": "Insufficient credits"},
        {},
        "Insufficient credits",
        (None, None, None),
        id="402-string-error",
    ),
    pytest.param(
        404, {"detail": "Not Found"}, {}, "Not Found", (None, None, None), id="404-detail"
    ),
    pytest.param(
        422,
        {"detail": [{"loc": ["body", "model"], "msg": "field required"}]},
        {},
        "field required",
        (None, None, None),
        id="422-fastapi-list",
    ),
    pytest.param(
        429,
        {"error": {"message": "Rate limit exceeded", "code": 429}},
        {"retry-after-ms": "1500", "retry-after": "9", "x-ratelimit-reset": "20"},
        "Rate limit exceeded",
        (None, "429", 20.0),
        id="429-retry-after-ms-and-reset",
    ),
    pytest.param(
        429,
        b"slow down",
        {"Retry-After": "120"},
        "slow down",
        (None, None, 60.0),
        id="429-text-clamped",
    ),
    pytest.param(
        503,
        b"<html><head><title>503 Service Temporarily Unavailable</title></head></html>",
        {"x-ratelimit-reset": "7"},
        "503 Service Temporarily Unavailable",
        (None, None, 7.0),
        id="503-html",
    ),
    pytest.param(500, b"", {}, "Internal Server Error", (None, None, None), id="500-empty"),
    pytest.param(502, b"\xff\xfe\x00garbage", {}, "garbage", (None, None, None), id="502-binary"),
    pytest.param(
        409,
        b'{"error": {"message": ' + b'"' + b"x" * 5000 + b'"}}',
        {},
        "x" * 499 + "…",
        (None, None, None),
        id="409-long-message",
    ),
]


@pytest.mark.parametrize("operation", ["create", "retrieve"])
@pytest.mark.parametrize(("status", "body", "headers", "message", "extra"), ERROR_CASES)
async def test_error_status_becomes_http_error(
    operation: str,
    status: int,
    body: object,
    headers: dict[str, str],
    message: str,
    extra: tuple[str | None, str | None, float | None],
) -> None:
    """Each non-2xx answer raises UpstreamHTTPError with status, message, type/code, retry-after."""

    async def handler(request: httpx.Request) -> httpx.Response:
        if isinstance(body, bytes):
            return httpx.Response(status, content=body, headers=headers)
        return httpx.Response(status, json=body, headers=headers)

    records: list[CallRecord] = []
    async with _client(handler, records=records) as client:
        with pytest.raises(UpstreamHTTPError) as info:
            if operation == "create":
                await client.create({"model": "m"}, idempotency_key="k")
            else:
                await client.retrieve("job-1")
    exc = info.value
    assert (exc.operation, exc.status_code) == (operation, status)
    assert message in exc.message
    assert (exc.error_type, exc.error_code, exc.retry_after_s) == extra
    assert str(status) in str(exc)
    assert [(r.status_code, r.outcome) for r in records] == [(status, f"http_{status}")]


def _raw(status: int, body: bytes, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.Response(status, stream=httpx.ByteStream(body), headers=headers)


@pytest.mark.parametrize(
    ("status", "body", "headers"),
    [
        pytest.param(200, b"{not json", None, id="malformed-json"),
        pytest.param(200, b"", None, id="empty-body"),
        pytest.param(200, json.dumps([JOB]).encode(), None, id="a-list"),
        pytest.param(200, b'{"id": "job-1"}', None, id="no-status"),
        pytest.param(201, b"\xff\xfe", None, id="not-utf8"),
        pytest.param(200, b"[" * 100_000, None, id="nesting-bomb"),
        pytest.param(200, b" " * (1024 * 1024 + 1), None, id="larger-than-cap"),
        pytest.param(200, b"not gzip", {"content-encoding": "gzip"}, id="undecodable"),
    ],
)
async def test_unusable_2xx_is_protocol_error(
    status: int, body: bytes, headers: dict[str, str] | None
) -> None:
    """A 2xx whose body is not a readable job object raises UpstreamProtocolError with status."""

    async def handler(request: httpx.Request) -> httpx.Response:
        return _raw(status, body, headers)

    records: list[CallRecord] = []
    async with _client(handler, records=records) as client:
        with pytest.raises(UpstreamProtocolError) as info:
            await client.create({"model": "m"}, idempotency_key="k")
    assert info.value.status_code == status
    assert info.value.operation == "create"
    assert [r.outcome for r in records] == ["protocol_error"]


async def test_cost_is_exact_through_the_client() -> None:
    """The client decodes JSON numbers as decimals: 0.28 dollars is exactly 280000 micro."""

    async def handler(request: httpx.Request) -> httpx.Response:
        body = b'{"id":"job-1","status":"completed","outputs":{"cost":0.28,"video_url":"u"}}'
        return httpx.Response(200, content=body)

    async with _client(handler) as client:
        job = await client.retrieve("job-1")
    assert (job.cost_micro_usd, job.video_url, job.is_terminal) == (280_000, "u", True)


# --- transport errors through MockTransport --------------------------------------------------


def _raise(exc: Exception) -> Handler:
    async def handler(request: httpx.Request) -> httpx.Response:
        raise exc

    return handler


def _wrapped(aiohttp_exc: Exception) -> Exception:
    """What httpx-aiohttp raises: its (often wrong) httpx mapping, with the original as cause."""
    mapped = httpx.ConnectTimeout(str(aiohttp_exc))
    mapped.__cause__ = aiohttp_exc
    return mapped


TRANSPORT_ERRORS = [
    pytest.param(httpx.ConnectTimeout("t"), UpstreamTimeout, False, id="httpx-connect-timeout"),
    pytest.param(httpx.PoolTimeout("t"), UpstreamTimeout, False, id="httpx-pool-timeout"),
    pytest.param(httpx.ReadTimeout("t"), UpstreamTimeout, True, id="httpx-read-timeout"),
    pytest.param(httpx.WriteTimeout("t"), UpstreamTimeout, True, id="httpx-write-timeout"),
    pytest.param(httpx.ConnectError("c"), UpstreamConnectionError, False, id="httpx-connect"),
    pytest.param(
        httpx.UnsupportedProtocol("u"), UpstreamConnectionError, False, id="httpx-unsupported"
    ),
    pytest.param(httpx.ReadError("r"), UpstreamConnectionError, True, id="httpx-read-error"),
    pytest.param(httpx.WriteError("w"), UpstreamConnectionError, True, id="httpx-write-error"),
    pytest.param(
        httpx.RemoteProtocolError("p"), UpstreamConnectionError, True, id="httpx-remote-protocol"
    ),
    pytest.param(
        _wrapped(aiohttp.ServerDisconnectedError()),
        UpstreamConnectionError,
        True,
        id="aiohttp-server-disconnected",
    ),
    pytest.param(
        _wrapped(aiohttp.ClientOSError(104, "Connection reset by peer")),
        UpstreamConnectionError,
        True,
        id="aiohttp-os-error",
    ),
    pytest.param(
        _wrapped(aiohttp.ClientPayloadError("incomplete")),
        UpstreamConnectionError,
        True,
        id="aiohttp-payload",
    ),
    pytest.param(
        _wrapped(aiohttp.ConnectionTimeoutError("pool/connect")),
        UpstreamTimeout,
        False,
        id="aiohttp-connection-timeout",
    ),
    pytest.param(
        _wrapped(aiohttp.SocketTimeoutError("read")),
        UpstreamTimeout,
        True,
        id="aiohttp-socket-timeout",
    ),
    pytest.param(
        aiohttp.ServerDisconnectedError(), UpstreamConnectionError, True, id="raw-aiohttp"
    ),
    pytest.param(RuntimeError("boom"), UpstreamConnectionError, True, id="unknown-exception"),
]


@pytest.mark.parametrize(("raised", "expected", "request_sent"), TRANSPORT_ERRORS)
async def test_transport_errors_are_translated(
    raised: Exception, expected: type[UpstreamError], request_sent: bool
) -> None:
    """Each transport-level failure becomes one UpstreamError kind with the right request_sent."""
    records: list[CallRecord] = []
    async with _client(_raise(raised), records=records) as client:
        with pytest.raises(expected) as info:
            await client.create({"model": "m"}, idempotency_key="k")
    exc = info.value
    assert isinstance(exc, UpstreamTimeout | UpstreamConnectionError)
    assert exc.request_sent is request_sent
    assert exc.__cause__ is None and exc.__suppress_context__
    outcome = "timeout" if expected is UpstreamTimeout else "connection_error"
    assert [(r.operation, r.status_code, r.outcome) for r in records] == [("create", None, outcome)]


async def test_cancellation_propagates_and_is_recorded() -> None:
    """A cancelled call raises CancelledError (not an UpstreamError) and records "cancelled"."""
    started = asyncio.Event()

    async def handler(request: httpx.Request) -> httpx.Response:
        started.set()
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    records: list[CallRecord] = []
    async with _client(handler, records=records) as client:
        task = asyncio.create_task(client.retrieve("job-1"))
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert [r.outcome for r in records] == ["cancelled"]


# --- on_call and logging ---------------------------------------------------------------------


async def test_on_call_records_each_call() -> None:
    """on_call receives one CallRecord per call: operation, status, outcome and a duration."""
    answers = iter([_job_response(), httpx.Response(429, json={}), _job_response({**JOB})])

    async def handler(request: httpx.Request) -> httpx.Response:
        return next(answers)

    records: list[CallRecord] = []
    async with _client(handler, records=records) as client:
        await client.create({"model": "m"}, idempotency_key="k")
        with pytest.raises(UpstreamHTTPError):
            await client.retrieve("job-1")
        await client.retrieve("job-1")
    assert [(r.operation, r.status_code, r.outcome) for r in records] == [
        ("create", 200, "ok"),
        ("retrieve", 429, "http_429"),
        ("retrieve", 200, "ok"),
    ]
    assert all(r.duration_s >= 0 for r in records)


async def test_failing_on_call_never_breaks_the_call(
    debug_logs: list[MutableMapping[str, Any]],
) -> None:
    """An exception raised by on_call is logged and the call still returns its job."""

    def broken(record: CallRecord) -> None:
        raise ValueError("metrics are down")

    async with _client(lambda request: _async(_job_response()), on_call=broken) as client:
        job = await client.retrieve("job-1")
    assert job.id == "job-1"
    events = [e for e in debug_logs if e["event"] == "upstream_on_call_failed"]
    assert len(events) == 1 and "metrics are down" in events[0]["error"]


async def _async(response: httpx.Response) -> httpx.Response:
    return response


async def test_each_call_is_logged_at_debug(debug_logs: list[MutableMapping[str, Any]]) -> None:
    """Every call logs one snake_case debug event with operation, status and outcome."""
    async with _client(lambda request: _async(_job_response())) as client:
        await client.retrieve("job-1")
    (event,) = [e for e in debug_logs if e["event"] == "upstream_call"]
    assert event["log_level"] == "debug"
    assert (event["operation"], event["status_code"], event["outcome"]) == ("retrieve", 200, "ok")
    assert event["upstream_id"] == "job-1"


# --- the API key stays secret ---------------------------------------------------------------


async def test_api_key_never_leaks(debug_logs: list[MutableMapping[str, Any]]) -> None:
    """The key is absent from repr, exception text, tracebacks and logs, even if echoed back."""

    async def echoing(request: httpx.Request) -> httpx.Response:
        auth = request.headers["authorization"]
        if request.method == "POST":
            return httpx.Response(401, json={"error": {"message": f"bad key {auth}"}})
        return httpx.Response(200, content=f'{{"id": "job-1", "status": "{auth}"'.encode())

    failures: list[BaseException] = []
    handlers: list[Handler] = [echoing, _raise(httpx.ConnectError(f"no route {API_KEY}"))]
    for handler in handlers:
        async with _client(handler) as client:
            assert API_KEY not in repr(client) and API_KEY not in str(client)
            with pytest.raises(UpstreamError) as info:
                await client.create({"model": "m"}, idempotency_key="k")
            failures.append(info.value)
            with pytest.raises(UpstreamError) as info:
                await client.retrieve("job-1")
            failures.append(info.value)
    assert len(failures) == 4
    for exc in failures:
        assert API_KEY not in str(exc) and API_KEY not in repr(exc)
        assert API_KEY not in "".join(traceback.format_exception(exc))
        assert API_KEY not in repr(vars(exc))
        frame_locals = [repr(tb.tb_frame.f_locals) for tb in _tracebacks(exc)]
        assert not any(API_KEY in text for text in frame_locals)
    assert "[redacted]" in str(failures[0])
    assert debug_logs and API_KEY not in repr(debug_logs)
    with pytest.raises(ValueError) as bad:
        UpstreamClient(base_url="https://x.test/v1", api_key=API_KEY)
    assert API_KEY not in str(bad.value)


def _tracebacks(exc: BaseException) -> Iterator[Any]:
    tb = exc.__traceback__
    while tb is not None:
        yield tb
        tb = tb.tb_next


# --- parse_retry_after ---------------------------------------------------------------------

NOW = 1_760_000_000.0


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({}, None),
        ({"retry-after-ms": "250"}, 0.25),
        ({"Retry-After-Ms": "250", "Retry-After": "3"}, 0.25),
        ({"retry-after-ms": "soon", "Retry-After": "3"}, 3.0),
        ({"Retry-After": "2.5"}, 2.5),
        ({"Retry-After": "3", "x-ratelimit-reset": "9"}, 9.0),
        ({"Retry-After": "9", "x-ratelimit-reset": "2"}, 9.0),
        ({"retry-after-ms": "250", "x-ratelimit-reset": "0.000"}, 0.25),
        ({"x-ratelimit-reset": "9"}, 9.0),
        ({"x-ratelimit-reset": "0.5"}, 0.5),
        ({"Retry-After": format_datetime(datetime.fromtimestamp(NOW + 30, UTC), True)}, 30.0),
        ({"Retry-After": format_datetime(datetime.fromtimestamp(NOW - 30, UTC), True)}, 0.0),
        ({"Retry-After": "Wed, 21 Oct 2015 07:28:00 -0000"}, 0.0),
        ({"Retry-After": "3600"}, 60.0),
        ({"retry-after-ms": "-5"}, 0.0),
        ({"x-ratelimit-reset": str(int(NOW + 12))}, 12.0),
        ({"Retry-After": "nan"}, None),
        ({"Retry-After": "inf"}, None),
        ({"Retry-After": ""}, None),
        ({"Retry-After": "tomorrow-ish"}, None),
        ({"x-ratelimit-reset": "1m30s"}, None),
    ],
)
def test_parse_retry_after(headers: dict[str, str], expected: float | None) -> None:
    """No earlier than x-ratelimit-reset says, nor than retry-after-ms (else Retry-After,
    seconds or date) when present: the longest wait wins; clamped 0-60."""
    result = parse_retry_after(headers, NOW)
    if expected is None:
        assert result is None
    else:
        assert result == pytest.approx(expected)


def test_parse_retry_after_accepts_httpx_headers() -> None:
    """httpx.Headers (case-insensitive, multi-valued) works as the headers mapping."""
    assert parse_retry_after(httpx.Headers({"RETRY-AFTER": "4"}), NOW) == 4.0


# --- real sockets, both transports ------------------------------------------------------------

KINDS: list[TransportKind] = ["aiohttp", "httpx"]


class RawServer:
    """A tiny HTTP/1.1 server on 127.0.0.1 whose per-connection behaviour a test scripts."""

    def __init__(
        self,
        behaviour: Callable[
            [RawServer, asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]
        ],
    ) -> None:
        self.behaviour = behaviour
        self.requests: list[bytes] = []
        self.request_seen = asyncio.Event()
        self.connections = 0
        self.port = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    async def __aenter__(self) -> RawServer:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def read_request(self, reader: asyncio.StreamReader) -> bytes:
        head = await reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n"):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        request = head + await reader.readexactly(length)
        self.requests.append(request)
        self.request_seen.set()
        return request

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.connections += 1
        try:
            await self.behaviour(self, reader, writer)
        except (asyncio.CancelledError, ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await writer.wait_closed()
            self._tasks.discard(task)


def _ok_bytes() -> bytes:
    body = json.dumps(JOB).encode()
    head = f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    return head.encode() + b"\r\n" + body


async def _never_answer(
    server: RawServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    await server.read_request(reader)
    await asyncio.Event().wait()


async def _answer_once_then_drop(
    server: RawServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    await server.read_request(reader)
    writer.write(_ok_bytes())
    await writer.drain()
    await server.read_request(reader)  # the next request on this kept-alive connection: drop it


async def _trickle(
    server: RawServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    await server.read_request(reader)
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n")
    while True:
        writer.write(b" ")
        await writer.drain()
        await asyncio.sleep(0.02)


def _client_for(kind: TransportKind, url: str, **timeouts: float) -> UpstreamClient:
    return UpstreamClient(
        base_url=url,
        api_key=API_KEY,
        timeouts=UpstreamTimeouts(**timeouts),
        transport=make_transport(kind, max_connections=1),
    )


@pytest.mark.parametrize("kind", KINDS)
async def test_real_read_timeout(kind: TransportKind) -> None:
    """A server that accepts and never answers gives UpstreamTimeout(request_sent=True)."""
    async with (
        RawServer(_never_answer) as server,
        _client_for(kind, server.url, read_s=0.2) as client,
    ):
        with pytest.raises(UpstreamTimeout) as info:
            await client.create({"model": "m"}, idempotency_key="k")
    assert info.value.request_sent is True
    assert info.value.operation == "create"
    assert len(server.requests) == 1


@pytest.mark.parametrize("kind", KINDS)
async def test_real_connection_refused(kind: TransportKind) -> None:
    """A refused port gives UpstreamConnectionError(request_sent=False)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    async with _client_for(kind, f"http://127.0.0.1:{port}") as client:
        with pytest.raises(UpstreamConnectionError) as info:
            await client.create({"model": "m"}, idempotency_key="k")
    assert info.value.request_sent is False


@pytest.mark.parametrize("kind", KINDS)
async def test_real_pool_timeout(kind: TransportKind) -> None:
    """With the one pooled connection busy, a second call times out before sending anything."""
    async with (
        RawServer(_never_answer) as server,
        _client_for(kind, server.url, pool_s=0.2, read_s=30) as client,
    ):
        busy = asyncio.create_task(client.retrieve("job-1"))
        await server.request_seen.wait()
        with pytest.raises(UpstreamTimeout) as info:
            await client.create({"model": "m"}, idempotency_key="k")
        busy.cancel()
        with pytest.raises(asyncio.CancelledError):
            await busy
    assert info.value.request_sent is False
    assert len(server.requests) == 1


@pytest.mark.parametrize("kind", KINDS)
async def test_real_total_deadline(kind: TransportKind) -> None:
    """An answer trickling in byte by byte is cut by total_s: UpstreamTimeout(request_sent=True)."""
    async with (
        RawServer(_trickle) as server,
        _client_for(kind, server.url, read_s=5, total_s=0.3) as client,
    ):
        with pytest.raises(UpstreamTimeout) as info:
            await client.retrieve("job-1")
    assert info.value.request_sent is True
    assert "total deadline" in str(info.value)


@pytest.mark.parametrize("method", ["create", "retrieve"])
@pytest.mark.parametrize("kind", KINDS)
async def test_no_automatic_retry_on_dropped_keepalive_connection(
    kind: TransportKind, method: str
) -> None:
    """A request dropped on a reused connection is sent once, never re-sent (POST nor GET)."""
    async with RawServer(_answer_once_then_drop) as server, _client_for(kind, server.url) as client:
        assert (await client.retrieve("job-1")).id == "job-1"
        with pytest.raises(UpstreamConnectionError) as info:
            if method == "create":
                await client.create({"model": "m"}, idempotency_key="k")
            else:
                await client.retrieve("job-1")
    assert info.value.request_sent is True
    assert (server.connections, len(server.requests)) == (1, 2)


@pytest.mark.parametrize("kind", KINDS)
async def test_real_round_trip(kind: TransportKind) -> None:
    """Both transports carry a create and a retrieve over one kept-alive connection."""

    async def serve(
        server: RawServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        while True:
            await server.read_request(reader)
            writer.write(_ok_bytes())
            await writer.drain()

    async with RawServer(serve) as server, _client_for(kind, server.url) as client:
        created = await client.create({"model": "m"}, idempotency_key="k-1")
        polled = await client.retrieve(created.id)
    assert created == polled
    post, get = server.requests
    assert post.startswith(b"POST /v2/videos HTTP/1.1\r\n")
    assert b"\r\nidempotency-key: k-1\r\n" in post.lower()
    assert post.endswith(b'{"model":"m"}')
    assert get.startswith(b"GET /v2/videos/job-1 HTTP/1.1\r\n")
    assert f"authorization: bearer {API_KEY.lower()}".encode() in get.lower()
    assert server.connections == 1


def _serving(
    head: bytes, body: bytes
) -> Callable[[RawServer, asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]:
    async def serve(
        server: RawServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        while True:
            await server.read_request(reader)
            writer.write(head + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
            await writer.drain()

    return serve


@pytest.mark.parametrize("kind", KINDS)
async def test_real_bodies_in_a_content_coding_are_decoded(kind: TransportKind) -> None:
    """A gzip body is decoded (the aiohttp path leaves it to httpx's decoders, as the
    httpx-aiohttp transport did); one that does not decode is a protocol error."""
    ok = _serving(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Encoding: gzip\r\n",
        gzip.compress(json.dumps(JOB).encode()),
    )
    async with RawServer(ok) as server, _client_for(kind, server.url) as client:
        job = await client.retrieve("job-1")
    assert job.id == "job-1"
    bad = _serving(b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\n", b"not gzip at all")
    async with RawServer(bad) as server, _client_for(kind, server.url) as client:
        with pytest.raises(UpstreamProtocolError, match="undecodable body"):
            await client.retrieve("job-1")


@pytest.mark.parametrize("kind", KINDS)
async def test_real_oversized_body_and_error_headers(kind: TransportKind) -> None:
    """A body over the limit is a protocol error (not read further); an error status keeps
    its headers (Retry-After) and message."""
    big = _serving(b"HTTP/1.1 200 OK\r\n", b" " * (MAX_BODY_BYTES + 1))
    async with RawServer(big) as server, _client_for(kind, server.url) as client:
        with pytest.raises(UpstreamProtocolError, match="body larger than"):
            await client.retrieve("job-1")
    limited = _serving(
        b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 7\r\nContent-Type: application/json\r\n",
        b'{"error": {"message": "slow down", "type": "rate_limit"}}',
    )
    async with RawServer(limited) as server, _client_for(kind, server.url) as client:
        with pytest.raises(UpstreamHTTPError) as info:
            await client.retrieve("job-1")
    assert info.value.status_code == 429
    assert info.value.retry_after_s == 7
    assert "slow down" in str(info.value)


def test_unknown_transport_kind() -> None:
    """make_transport refuses an unknown kind and a pool of no connections."""
    with pytest.raises(ValueError):
        make_transport("curl")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        make_transport("httpx", max_connections=0)
