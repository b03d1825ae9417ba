"""The upstream client: create and retrieve Together video jobs, nothing else.

No automatic retries anywhere (a re-sent POST can buy the same video twice): every failure is
raised as an ``UpstreamError`` for ``classify()`` and the caller's own retry policy. All
lower-level errors (httpx, aiohttp, JSON) are translated here, in ``_translate`` and
``_interpret``. Raised errors do not chain the lower-level exception (its frames hold request
headers, which tracebacks that show locals would print); its type and text are in the message.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import json
import math
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from types import TracebackType
from typing import Any, Final, Self
from urllib.parse import quote

import aiohttp
import httpx
import structlog
from httpx_aiohttp.transport import AiohttpResponseStream

from genqueue.worker.upstream.errors import (
    Operation,
    UpstreamConnectionError,
    UpstreamError,
    UpstreamHTTPError,
    UpstreamProtocolError,
    UpstreamTimeout,
    parse_retry_after,
    truncate,
)
from genqueue.worker.upstream.jobs import MAX_ID_CHARS, UpstreamJob, describe_error, parse_job
from genqueue.worker.upstream.transport import DirectAiohttpTransport, make_transport

log = structlog.get_logger(__name__)

try:
    _VERSION = importlib.metadata.version("genqueue")
except importlib.metadata.PackageNotFoundError:  # running from a source tree
    _VERSION = "0+unknown"
USER_AGENT: Final = f"genqueue/{_VERSION}"

MAX_BODY_BYTES: Final = 1024 * 1024
"""A job object is a few hundred bytes; a longer answer is not one (and is not read further)."""

_IDEMPOTENCY_KEY = re.compile(r"[\x21-\x7e]{1,255}")
_HEADER_VALUE = re.compile(r"[\x20-\x7e]{1,4096}")
_TAGS = re.compile(r"<[^>]*>")


@dataclass(frozen=True, slots=True)
class UpstreamTimeouts:
    """Per-phase HTTP timeouts, plus a deadline for the whole call (all in seconds).

    ``total_s`` bounds a call whose phases each stay within their own timeout (an answer
    trickling in byte by byte): the call must end well inside the task timeout
    (``WorkerConfig.task_timeout_s``).
    """

    connect_s: float = 5.0
    read_s: float = 20.0
    write_s: float = 10.0
    pool_s: float = 5.0
    total_s: float = 40.0

    def __post_init__(self) -> None:
        for name in ("connect_s", "read_s", "write_s", "pool_s", "total_s"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive number of seconds")

    def as_httpx(self) -> httpx.Timeout:
        return httpx.Timeout(
            connect=self.connect_s, read=self.read_s, write=self.write_s, pool=self.pool_s
        )


@dataclass(frozen=True, slots=True)
class CallRecord:
    """One finished upstream call, for metrics (``outcome``: "ok", "http_429", "timeout", ...)."""

    operation: Operation
    status_code: int | None  # None when no HTTP answer arrived
    outcome: str  # ok | http_<code> | timeout | connection_error | protocol_error | cancelled
    duration_s: float


@dataclass(frozen=True, slots=True)
class _Answer:
    status_code: int
    #: httpx's headers, or aiohttp's raw ones (made httpx's only when an error needs them).
    raw_headers: httpx.Headers | tuple[tuple[bytes, bytes], ...]
    body: bytes
    problem: str | None  # why the body is unusable ("too large", "undecodable"), if it is

    @property
    def headers(self) -> httpx.Headers:
        h = self.raw_headers
        return h if isinstance(h, httpx.Headers) else httpx.Headers(list(h))


def _outcome(exc: BaseException) -> str:
    if isinstance(exc, UpstreamHTTPError):
        return f"http_{exc.status_code}"
    if isinstance(exc, UpstreamTimeout):
        return "timeout"
    if isinstance(exc, UpstreamConnectionError):
        return "connection_error"
    if isinstance(exc, UpstreamProtocolError):
        return "protocol_error"
    if isinstance(exc, asyncio.CancelledError):
        return "cancelled"
    return "internal_error"


def _aiohttp_cause(exc: BaseException) -> aiohttp.ClientError | None:
    """The aiohttp exception behind an httpx-aiohttp error (it raises ``mapped from original``)."""
    current: BaseException | None = exc
    for _ in range(4):
        if current is None:
            return None
        if isinstance(current, aiohttp.ClientError):
            return current
        current = current.__cause__
    return None


def _translate_aiohttp(
    cause: aiohttp.ClientError, detail: str, operation: Operation
) -> UpstreamError:
    # httpx-aiohttp maps most of these to httpx.ConnectTimeout, whatever the phase: decide here.
    if isinstance(cause, aiohttp.ConnectionTimeoutError):  # pool wait or connect
        return UpstreamTimeout(detail, operation=operation, request_sent=False)
    if isinstance(cause, aiohttp.ServerTimeoutError):  # sock_read, or an unknown phase
        return UpstreamTimeout(detail, operation=operation, request_sent=True)
    if isinstance(
        cause,
        aiohttp.ClientConnectorError  # refused, DNS, TLS handshake, proxy connect
        | aiohttp.ClientHttpProxyError
        | aiohttp.InvalidURL
        | aiohttp.NonHttpUrlClientError,
    ):
        return UpstreamConnectionError(detail, operation=operation, request_sent=False)
    # Disconnects, resets, payload and parser errors: the request may have been received.
    return UpstreamConnectionError(detail, operation=operation, request_sent=True)


def _translate(
    exc: Exception, operation: Operation, *, total_expired: bool, redact: Callable[[str], str]
) -> UpstreamError:
    """The single place where transport-level exceptions become UpstreamErrors."""
    detail = truncate(redact(f"{type(exc).__name__}: {exc}"))
    if total_expired:
        return UpstreamTimeout(
            "no complete answer within the call's total deadline",
            operation=operation,
            request_sent=True,
        )
    cause = _aiohttp_cause(exc)
    if cause is not None:
        if cause is not exc:
            detail = truncate(redact(f"{type(cause).__name__}: {cause}"))
        return _translate_aiohttp(cause, detail, operation)
    if isinstance(exc, httpx.ConnectTimeout | httpx.PoolTimeout):
        return UpstreamTimeout(detail, operation=operation, request_sent=False)
    if isinstance(exc, httpx.TimeoutException | TimeoutError):  # read/write: may have acted
        return UpstreamTimeout(detail, operation=operation, request_sent=True)
    if isinstance(
        exc,
        httpx.ConnectError
        | httpx.UnsupportedProtocol
        | httpx.ProxyError
        | httpx.LocalProtocolError,  # h11 refused to send our request
    ):
        return UpstreamConnectionError(detail, operation=operation, request_sent=False)
    if not isinstance(exc, httpx.TransportError):
        log.warning("upstream_unexpected_transport_error", operation=operation, error=detail)
    # ReadError, WriteError, RemoteProtocolError, anything unknown: assume it may have arrived.
    return UpstreamConnectionError(detail, operation=operation, request_sent=True)


async def _read_body(response: httpx.Response) -> tuple[bytes, str | None]:
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in response.aiter_bytes():
            size += len(chunk)
            if size > MAX_BODY_BYTES:
                return b"".join(chunks), f"body larger than {MAX_BODY_BYTES} bytes"
            chunks.append(chunk)
    except httpx.DecodingError as exc:
        return b"", truncate(f"undecodable body: {exc}")
    return b"".join(chunks), None


#: Content codings a body arrives in as it is (anything else is decoded by httpx, as the
#: httpx-aiohttp transport has it decoded: ``auto_decompress=False`` on both paths).
_PLAIN_CODINGS: Final = frozenset(("", "identity"))


async def _read_aiohttp_body(response: aiohttp.ClientResponse) -> tuple[bytes, str | None]:
    """``_read_body`` for an aiohttp response: a body in a content coding goes through httpx's
    decoding (exactly as through the httpx-aiohttp transport), a plain one is read here."""
    coding = response.headers.get("Content-Encoding", "").strip().lower()
    if coding not in _PLAIN_CODINGS:
        return await _read_body(
            httpx.Response(
                response.status,
                headers=response.raw_headers,
                stream=AiohttpResponseStream(response),
            )
        )
    length = response.content_length
    if length is not None and length <= MAX_BODY_BYTES:
        # Its declared length is within the limit (aiohttp reads no more than that): one
        # read, not an async iteration per chunk (a job object is one chunk anyway).
        return await response.read(), None
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_chunked(AiohttpResponseStream.CHUNK_SIZE):
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            return b"".join(chunks), f"body larger than {MAX_BODY_BYTES} bytes"
        chunks.append(chunk)
    return b"".join(chunks), None


def _validate_base_url(base_url: str) -> str:
    base = base_url.strip().rstrip("/")
    try:
        url = httpx.URL(base)
    except httpx.InvalidURL:
        raise ValueError("base_url is not a valid URL") from None
    if url.scheme not in ("http", "https") or not url.host:
        raise ValueError("base_url must be an http(s) URL such as https://api.together.xyz")
    if url.path.rstrip("/").endswith(("/v1", "/v2")):
        raise ValueError("base_url must not include /v1 or /v2: the client adds /v2/videos")
    if url.query or url.fragment or url.userinfo:
        raise ValueError("base_url must not carry a query, fragment or credentials")
    return base


class UpstreamClient:
    """Creates and retrieves upstream video jobs over one pooled httpx transport.

    Requests go straight to the transport (``handle_async_request``), not through an
    ``httpx.AsyncClient``: this API needs none of the client's layers (cookies, redirects, auth
    flows, event hooks), and they cost about as much CPU as the transport itself (bench/). On
    the production transport (``DirectAiohttpTransport``) they go to its aiohttp session
    itself, with the options httpx-aiohttp would pass: the httpx request and response built
    around each exchange were a tenth of a worker's CPU per check. Any other transport (the
    tests' ``MockTransport``, httpx's own) is driven through the httpx API.
    Create it on the event loop that will use it; it owns (and closes) ``transport``.
    Raises only ``UpstreamError`` subclasses for anything that happened on the wire, and
    ``ValueError``/``TypeError`` for invalid arguments (then nothing was sent).
    """

    def __init__(
        self,
        *,
        base_url: str,
        api_key: str,
        timeouts: UpstreamTimeouts = UpstreamTimeouts(),
        transport: httpx.AsyncBaseTransport | None = None,
        on_call: Callable[[CallRecord], None] | None = None,
    ) -> None:
        self._base_url = _validate_base_url(base_url)
        key = api_key.strip() if isinstance(api_key, str) else ""
        if not key:
            raise ValueError("api_key is empty")
        if not _HEADER_VALUE.fullmatch(key):
            raise ValueError("api_key contains characters not allowed in an HTTP header")
        self._secret = key
        self._secret_bytes = key.encode("ascii")
        self._timeouts = timeouts
        self._on_call = on_call
        self._transport = transport if transport is not None else make_transport()
        self._transport_name = type(self._transport).__name__
        # No proxies from the environment and no .netrc: the transport is used as chosen.
        self._headers = {
            "Authorization": f"Bearer {key}",
            "User-Agent": USER_AGENT,
            "Accept": "application/json",
        }
        self._extensions = {"timeout": timeouts.as_httpx().as_dict()}
        # The production transport's session is used directly (the same request options as
        # httpx-aiohttp sends; its exceptions are aiohttp's own, which _translate decides on).
        self._direct = (
            self._transport if isinstance(self._transport, DirectAiohttpTransport) else None
        )
        self._aiohttp_timeout = aiohttp.ClientTimeout(
            sock_connect=timeouts.connect_s, sock_read=timeouts.read_s, connect=timeouts.pool_s
        )
        self._closed = False

    def __repr__(self) -> str:
        return f"UpstreamClient(base_url={self._base_url!r}, transport={self._transport_name})"

    @property
    def base_url(self) -> str:
        return self._base_url

    @property
    def timeouts(self) -> UpstreamTimeouts:
        return self._timeouts

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the pooled connections (idempotent)."""
        if not self._closed:
            self._closed = True
            await self._transport.aclose()

    async def create(self, body: Mapping[str, Any], *, idempotency_key: str) -> UpstreamJob:
        """POST ``/v2/videos`` with ``body`` as JSON and an ``Idempotency-Key`` header."""
        if not isinstance(idempotency_key, str) or not _IDEMPOTENCY_KEY.fullmatch(idempotency_key):
            raise ValueError("idempotency_key must be 1-255 visible ASCII characters")
        content = json.dumps(
            dict(body), ensure_ascii=False, allow_nan=False, separators=(",", ":")
        ).encode("utf-8")
        return await self._call(
            "create",
            "POST",
            f"{self._base_url}/v2/videos",
            content=content,
            headers={"Content-Type": "application/json", "Idempotency-Key": idempotency_key},
            log_fields={"idempotency_key": idempotency_key},
        )

    async def retrieve(self, upstream_id: str) -> UpstreamJob:
        """GET ``/v2/videos/{upstream_id}``; the answer must be that job."""
        if (
            not isinstance(upstream_id, str)
            or not upstream_id.strip()
            or upstream_id in (".", "..")
            or len(upstream_id) > MAX_ID_CHARS
            or not upstream_id.isprintable()
        ):
            raise ValueError("upstream_id is not a plausible job id")
        return await self._call(
            "retrieve",
            "GET",
            f"{self._base_url}/v2/videos/{quote(upstream_id, safe='')}",
            expect_id=upstream_id,
            log_fields={"upstream_id": upstream_id},
        )

    async def _call(
        self,
        operation: Operation,
        method: str,
        url: str,
        *,
        content: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        expect_id: str | None = None,
        log_fields: Mapping[str, str],
    ) -> UpstreamJob:
        if self._closed:
            raise RuntimeError("UpstreamClient is closed")
        started = time.perf_counter()
        status_code: int | None = None
        failure: BaseException | None = None
        job: UpstreamJob | None = None
        try:
            answer = await self._exchange(operation, method, url, content, headers)
            status_code = answer.status_code
            job = self._interpret(operation, answer, expect_id)
            return job
        except BaseException as exc:
            failure = exc
            raise
        finally:
            record = CallRecord(
                operation=operation,
                status_code=status_code,
                outcome="ok" if failure is None else _outcome(failure),
                duration_s=time.perf_counter() - started,
            )
            log.debug(
                "upstream_call",
                operation=operation,
                status_code=status_code,
                outcome=record.outcome,
                duration_s=round(record.duration_s, 6),
                upstream_status=job.raw_status if job is not None else None,
                error=self._redact(str(failure)) if failure is not None else None,
                **log_fields,
            )
            if self._on_call is not None:
                try:
                    self._on_call(record)
                except Exception as hook_exc:
                    log.error(
                        "upstream_on_call_failed",
                        operation=operation,
                        error=truncate(f"{type(hook_exc).__name__}: {hook_exc}"),
                    )

    async def _exchange(
        self,
        operation: Operation,
        method: str,
        url: str,
        content: bytes | None,
        headers: Mapping[str, str] | None,
    ) -> _Answer:
        deadline = asyncio.timeout(self._timeouts.total_s)
        try:
            async with deadline:
                if self._direct is not None:
                    answer = await self._over_aiohttp(
                        self._direct.session(), method, url, content, headers
                    )
                else:
                    answer = await self._over_httpx(method, url, content, headers)
        except Exception as exc:
            raise _translate(
                exc, operation, total_expired=deadline.expired(), redact=self._redact
            ) from None
        if self._secret_bytes in answer.body:  # some APIs echo what they got: never pass it on
            body = answer.body.replace(self._secret_bytes, b"[redacted]")
            return _Answer(answer.status_code, answer.raw_headers, body, answer.problem)
        return answer

    def _sent_headers(self, headers: Mapping[str, str] | None) -> dict[str, str]:
        """The client's headers (the API key's among them) with a call's own on top. Never
        bound to a local of ``_exchange``: its frame is in every error's traceback."""
        return {**self._headers, **headers} if headers else self._headers

    async def _over_httpx(
        self, method: str, url: str, content: bytes | None, headers: Mapping[str, str] | None
    ) -> _Answer:
        """One exchange through the httpx transport API (tests' and httpx's transports)."""
        request = httpx.Request(
            method,
            url,
            content=content,
            headers=self._sent_headers(headers),
            extensions=self._extensions,
        )
        response = await self._transport.handle_async_request(request)
        try:
            body, problem = await _read_body(response)
        finally:
            await response.aclose()
        return _Answer(response.status_code, response.headers, body, problem)

    async def _over_aiohttp(
        self,
        session: aiohttp.ClientSession,
        method: str,
        url: str,
        content: bytes | None,
        headers: Mapping[str, str] | None,
    ) -> _Answer:
        """One exchange on the aiohttp session itself, with the options httpx-aiohttp 0.2
        passes (see ``transport.py``): no redirects, no compression either way, its timeouts."""
        async with session.request(
            method,
            url,
            data=content or None,
            headers=self._sent_headers(headers),
            allow_redirects=False,
            auto_decompress=False,
            compress=False,
            timeout=self._aiohttp_timeout,
        ) as response:
            body, problem = await _read_aiohttp_body(response)
            return _Answer(response.status, response.raw_headers, body, problem)

    def _interpret(
        self, operation: Operation, answer: _Answer, expect_id: str | None
    ) -> UpstreamJob:
        if not 200 <= answer.status_code < 300:
            raise self._http_error(operation, answer)
        if answer.problem is not None:
            raise UpstreamProtocolError(
                answer.problem, operation=operation, status_code=answer.status_code
            )
        try:
            payload = json.loads(answer.body, parse_float=Decimal)
        except (ValueError, RecursionError):
            raise UpstreamProtocolError(
                f"malformed JSON: {truncate(repr(answer.body[:200]))}",
                operation=operation,
                status_code=answer.status_code,
            ) from None
        try:
            job = parse_job(payload, operation=operation)
        except UpstreamProtocolError as exc:
            exc.status_code = answer.status_code
            raise
        if expect_id is not None and job.id != expect_id:
            raise UpstreamProtocolError(
                f"asked for job {expect_id!r}, got job {truncate(job.id, 80)!r}",
                operation=operation,
                status_code=answer.status_code,
            )
        return job

    def _http_error(self, operation: Operation, answer: _Answer) -> UpstreamHTTPError:
        message: str | None = None
        error_type: str | None = None
        error_code: str | None = None
        payload: object = None
        if answer.body and answer.problem is None:
            try:
                payload = json.loads(answer.body)
            except (ValueError, RecursionError):
                payload = None
        if isinstance(payload, dict):
            error = payload.get("error")
            if isinstance(error, dict):
                message = describe_error(error.get("message"))
                error_type = _short(error.get("type"))
                error_code = _short(error.get("code"))
            message = message or describe_error(error)
            message = message or describe_error(payload.get("message"))
            message = message or describe_error(payload.get("detail"))
        elif payload is not None:
            message = describe_error(payload)
        if not message and answer.body and payload is None:
            text = answer.body.decode("utf-8", errors="replace").strip()
            if text.startswith("<"):  # an HTML error page from a proxy
                text = _TAGS.sub(" ", text)
            message = truncate(text) or None
        if not message:
            message = httpx.codes.get_reason_phrase(answer.status_code) or "no message"
        return UpstreamHTTPError(
            operation=operation,
            status_code=answer.status_code,
            message=message,
            error_type=error_type,
            error_code=error_code,
            retry_after_s=parse_retry_after(answer.headers, time.time()),
        )

    def _redact(self, text: str) -> str:
        """Remove the API key from upstream-provided text (some APIs echo what they got)."""
        return text.replace(self._secret, "[redacted]") if self._secret in text else text


def _short(value: object) -> str | None:
    if value is None or isinstance(value, dict | list):
        return None
    return truncate(str(value), 100) or None
