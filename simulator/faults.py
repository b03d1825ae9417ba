"""Upstream fault injection: seeded 5xx, 429s, slow and hung answers, garbage and ambiguous creates.

A :class:`FaultProfile` is plain data (shares per request and parameters); ``parse`` reads one
from a spec such as ``"chaos"`` or ``"none,error_5xx_share=0.1,rate_limit_rps=50"``. The
simulator turns it into a :class:`FaultInjector`, its ``FaultPolicy`` around every create and
retrieve request (never ``/_sim/*``).

This module imports nothing from the rest of the simulator at run time:
``genqueue.simulator.config`` imports it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import math
import os
import random
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

if TYPE_CHECKING:
    from genqueue.simulator.lifecycle import Simulator

ENV_VAR = "GENQUEUE_SIM_FAULTS"

# Fault kinds, named after the FaultProfile field that causes them ("<kind>_share"), plus
# "rate_limit_rps" for answers refused by the real rate limiter. The order is part of the
# seeded draw: keep it stable.
COMMON_KINDS: tuple[str, ...] = ("error_5xx", "rate_limit", "slow", "hang", "malformed")
CREATE_KINDS: tuple[str, ...] = (
    *COMMON_KINDS,
    "create_then_error",
    "create_then_hang",
    "payment_required",
    "overloaded",
    "upstream_cancel",
    "late_answer",
)
RETRIEVE_KINDS: tuple[str, ...] = (*COMMON_KINDS, "unknown_status", "not_found", "overloaded")

HUNG = "hung"
"""Request-count label of a hung request whose client went away without an answer."""
ABANDONED = "abandoned"
"""Request-count label of a slow request whose client went away before the late answer."""

# Shown as x-ratelimit-limit on random 429s when no real limit (rate_limit_rps) is set.
NOMINAL_RATE_LIMIT = 10


@dataclass(frozen=True)
class FaultProfile:
    """How badly the simulated upstream behaves; every ``*_share`` is a per-request probability.

    Faults are mutually exclusive per request: the shares that apply to an endpoint must add up
    to at most 1. Create (``POST /v2/videos``) can get ``error_5xx``, ``rate_limit``, ``slow``,
    ``hang``, ``malformed``, ``create_then_error`` and ``create_then_hang``; retrieve (``GET
    /v2/videos/{id}`` and the legacy ``GET /v2/videos/status``) the first five plus
    ``unknown_status`` and ``not_found``. Delays are wall-clock seconds (not ``time_scale``d);
    the rate limit counts requests per second of the simulator's clock.
    """

    error_5xx_share: float = 0.0
    """500/502/503/504 with the error JSON before the request is handled (with
    ``send_retry_after``, half the 503s carry ``Retry-After``)."""
    rate_limit_share: float = 0.0
    """Random 429s (``dynamic_request_limited``, ``x-ratelimit-*``), before handling."""
    rate_limit_rps: float | None = None
    """A real token-bucket limit on create + retrieve requests per second across all clients;
    above it: 429 whose ``x-ratelimit-reset`` says when a token is back."""
    send_retry_after: bool = False
    """Add ``Retry-After``/``retry-after-ms`` to 429s (and to half the 503s). Together
    documents only ``x-ratelimit-*``: off by default."""
    rate_limit_burst: float | None = None
    """The bucket's size in requests; None means one second's worth (at least 1)."""
    rate_limit_retry_s: float = 1.0
    """The wait a random (``rate_limit_share``) 429 asks for."""
    slow_share: float = 0.0
    """Handled at once, answered ``slow_s`` later (a create exists before its answer)."""
    slow_s: float = 2.0
    hang_share: float = 0.0
    """Never answered (not handled either) until the client disconnects or ``hang_cap_s``."""
    hang_cap_s: float = 600.0
    """A hung request still connected after this long gets 504."""
    malformed_share: float = 0.0
    """A 200 answer (the request was handled) whose body is truncated or invalid JSON."""
    unknown_status_share: float = 0.0
    """Retrieve: the real job object with ``status`` replaced by ``unknown_status``."""
    unknown_status: str = "mystery_state"
    not_found_share: float = 0.0
    """Retrieve: 404 error JSON for a job that exists."""
    create_then_error_share: float = 0.0
    """Create: the job is created (and billed) but the answer is a 5xx."""
    create_then_hang_share: float = 0.0
    """Create: the job is created (and billed) but the answer never comes."""
    payment_required_share: float = 0.0
    """Create: 402, out of credits (nothing created)."""
    overloaded_share: float = 0.0
    """503 ``service_unavailable``: the platform is out of capacity (nothing handled)."""
    upstream_cancel_share: float = 0.0
    """Create: the job is created, then cancelled by the upstream (ends ``cancelled``, never
    billed)."""
    late_answer_share: float = 0.0
    """Create: the job is created at once, its answer sent ``late_answer_s`` later: long
    enough, against a worker whose lease is shorter, for a second attempt to go out first
    (the answer then names a superseded job; see ``_late_answer``)."""
    late_answer_s: float = 2.5

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            if f.name.endswith("_share"):
                value = getattr(self, f.name)
                if not 0.0 <= value <= 1.0:
                    raise ValueError(f"{f.name} must be within [0, 1], got {value!r}")
        for name in ("rate_limit_rps", "rate_limit_burst"):
            value = getattr(self, name)
            if value is not None and not (value > 0 and math.isfinite(value)):
                raise ValueError(f"{name} must be a positive number or none, got {value!r}")
        for name in ("rate_limit_retry_s", "slow_s", "late_answer_s"):
            value = getattr(self, name)
            if not (value >= 0 and math.isfinite(value)):
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        if not self.hang_cap_s > 0:
            raise ValueError(f"hang_cap_s must be > 0, got {self.hang_cap_s!r}")
        if not self.unknown_status:
            raise ValueError("unknown_status must not be empty")
        for label, kinds in (("create", CREATE_KINDS), ("retrieve", RETRIEVE_KINDS)):
            total = sum(self.share(kind) for kind in kinds)
            if total > 1.0 + 1e-9:
                names = " + ".join(f"{k}_share" for k in kinds if self.share(k))
                raise ValueError(f"{label} fault shares add up to {total:g} > 1 ({names})")

    def share(self, kind: str) -> float:
        """The per-request probability of fault ``kind`` (e.g. ``"hang"``)."""
        value: float = getattr(self, f"{kind}_share")
        return value

    @property
    def active(self) -> bool:
        """Whether any fault can happen at all."""
        return self.rate_limit_rps is not None or any(
            self.share(kind) > 0 for kind in {*CREATE_KINDS, *RETRIEVE_KINDS}
        )

    def to_spec(self) -> str:
        """A spec that ``parse`` turns back into this profile (a profile name when it is one)."""
        for name, profile in PROFILES.items():
            if profile == self:
                return name
        parts = ["none"]
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value != f.default:
                parts.append(f"{f.name}={'none' if value is None else value}")
        return ",".join(parts)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> FaultProfile:
        """The profile named by ``GENQUEUE_SIM_FAULTS`` (a ``parse`` spec); ``none`` if unset."""
        env = os.environ if environ is None else environ
        return parse(env.get(ENV_VAR) or "none")


PROFILES: Mapping[str, FaultProfile] = MappingProxyType(
    {
        "none": FaultProfile(),
        # The chaos mix: ~5% 5xx, 2% 429, 1% hung, 1% malformed, and a little of everything else.
        "chaos": FaultProfile(
            error_5xx_share=0.05,
            rate_limit_share=0.02,
            hang_share=0.01,
            malformed_share=0.01,
            unknown_status_share=0.01,
            not_found_share=0.005,
            create_then_error_share=0.01,
            create_then_hang_share=0.005,
        ),
        # Transient trouble only: nothing hangs, no job is reported missing.
        "flaky": FaultProfile(
            error_5xx_share=0.02,
            rate_limit_share=0.01,
            slow_share=0.01,
            slow_s=1.0,
            malformed_share=0.002,
            unknown_status_share=0.002,
            create_then_error_share=0.002,
        ),
    }
)

_FIELDS = {f.name: f for f in dataclasses.fields(FaultProfile)}
_OPTIONAL = {"rate_limit_rps", "rate_limit_burst"}
_STRINGS = {"unknown_status"}
_BOOLS = {"send_retry_after"}


def _convert(key: str, raw: str) -> object:
    if key in _STRINGS:
        return raw
    if key in _BOOLS:
        if raw.lower() not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
            raise ValueError(f"fault spec: {key} must be true or false, got {raw!r}")
        return raw.lower() in ("1", "true", "yes", "on")
    if key in _OPTIONAL and raw.lower() in ("none", "off", ""):
        return None
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"fault spec: {key} must be a number, got {raw!r}") from None
    if not math.isfinite(value):
        raise ValueError(f"fault spec: {key} must be finite, got {raw!r}")
    return value


def parse(spec: str) -> FaultProfile:
    """A profile from ``"[name][,key=value]..."``: a named profile (default ``none``), overridden.

    Examples: ``"chaos"``, ``"none,error_5xx_share=0.1,rate_limit_rps=50"``,
    ``"hang_share=0.02"``.
    Keys are :class:`FaultProfile` field names; ``rate_limit_rps=none`` removes the limit.
    Raises ValueError naming the bad profile, key or value.
    """
    items = [item.strip() for item in spec.split(",")]
    if items == [""]:
        items = []
    base = PROFILES["none"]
    if items and "=" not in items[0]:
        name = items.pop(0).lower()
        if name not in PROFILES:
            raise ValueError(f"fault spec: unknown profile {name!r} (known: {', '.join(PROFILES)})")
        base = PROFILES[name]
    overrides: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key, raw = key.strip(), raw.strip()
        if not sep or not key:
            raise ValueError(f"fault spec: expected key=value, got {item!r}")
        if key not in _FIELDS:
            raise ValueError(f"fault spec: unknown key {key!r} (known: {', '.join(_FIELDS)})")
        overrides[key] = _convert(key, raw)
    try:
        return dataclasses.replace(base, **overrides)
    except ValueError as exc:
        raise ValueError(f"fault spec {spec!r}: {exc}") from None


class Abandoned(Response):
    """What a request answers once its client has gone: nothing reaches the wire (the server
    drops it), and the simulator counts the request under ``label`` instead of a status code."""

    def __init__(self, label: str) -> None:
        super().__init__(status_code=499)
        self.label = label


def _error(
    status: int,
    message: str,
    type_: str,
    code: str,
    param: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> Response:
    # The shape of simulator.shapes.error_body (not imported: see the module docstring).
    body = {"error": {"message": message, "type": type_, "param": param, "code": code}}
    return JSONResponse(body, status_code=status, headers=headers)


_SERVER_ERRORS: Mapping[int, tuple[str, str]] = {
    500: ("The server had an error while processing your request.", "internal_server_error"),
    502: ("Bad gateway: the upstream model server did not answer properly.", "bad_gateway"),
    503: ("The server is overloaded or not ready yet.", "service_unavailable"),
    504: ("Gateway timeout: the model server took too long to answer.", "gateway_timeout"),
}


def _server_error(rng: random.Random, retry_after: bool) -> Response:
    status = rng.choice(tuple(_SERVER_ERRORS))
    message, code = _SERVER_ERRORS[status]
    headers = {}
    # Drawn whatever the setting, so the seeded sequence does not depend on it.
    if status == 503 and rng.random() < 0.5 and retry_after:
        headers["Retry-After"] = str(rng.randint(1, 5))
    return _error(status, message, "server_error", code, headers=headers)


def rate_limit_headers(limit: str, remaining: int, reset_s: float) -> dict[str, str]:
    """The headers Together documents on every answer: ``x-ratelimit-limit/-remaining/-reset``
    (``reset``: a suggested wait in seconds)."""
    return {
        "x-ratelimit-limit": limit,
        "x-ratelimit-remaining": str(max(0, remaining)),
        "x-ratelimit-reset": f"{max(0.0, reset_s):.3f}",
    }


def _rate_limited(limit: str, remaining: int, wait_s: float, retry_after: bool) -> Response:
    headers = rate_limit_headers(limit, remaining, wait_s)
    if retry_after:
        headers["Retry-After"] = str(max(1, math.ceil(wait_s)))
        headers["retry-after-ms"] = str(max(1, math.ceil(wait_s * 1000)))
    message = f"Rate limit exceeded ({limit} requests per second); retry in {wait_s:.3f} s."
    return _error(429, message, "dynamic_request_limited", "rate_limit_exceeded", headers=headers)


def _garbled(body: bytes, rng: random.Random) -> bytes:
    """Invalid JSON: the body cut short (most often), empty, or a proxy's HTML page."""
    variant = rng.randrange(4)
    if variant == 0:
        return b""
    if variant == 1:
        return b"<html><body><h1>502 Bad Gateway</h1></body></html>\n"
    # Any proper prefix of a JSON object lacks its closing brace, so it never parses.
    return body[: rng.randrange(1, len(body))] if len(body) > 1 else b"{"


async def _late_answer(request: Request, response: Response, delay_s: float) -> Response:
    """The answer of a create whose job already exists, sent ``delay_s`` later (abandoned if
    the client went away first): a client whose lease ran out meanwhile has sent a second
    attempt by then, so this answer names a job that attempt superseded."""
    if await _client_gone_within(request, delay_s):
        return Abandoned(ABANDONED)
    return response


async def _client_gone_within(request: Request, timeout_s: float) -> bool:
    """True as soon as the client disconnects, False once ``timeout_s`` passed first.

    Waits on the ASGI ``receive`` channel, which yields ``http.disconnect`` when the
    connection closes: no polling, and other requests are served meanwhile.
    """
    try:
        async with asyncio.timeout(timeout_s):
            while True:
                message = await request.receive()
                if message["type"] == "http.disconnect":
                    return True
    except TimeoutError:
        return False


class _TokenBucket:
    """``rate`` tokens per second up to ``burst``; one request takes one token."""

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.last = now

    def take(self, now: float) -> float:
        """0.0 if a token was taken, else the wait in seconds until one is available."""
        self.tokens = min(self.burst, self.tokens + max(0.0, now - self.last) * self.rate)
        self.last = max(self.last, now)
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate


Next = Callable[[], Awaitable[Response]]


class FaultInjector:
    """The ``FaultPolicy`` that realises a :class:`FaultProfile` for one :class:`Simulator`.

    Request ``n`` (counted over faultable requests since the last reset) draws its fault from
    ``random.Random(f"genqueue-sim-faults:{seed}:{n}")``: reproducible for a given seed and
    request order, and independent of the jobs' own random draws.
    """

    def __init__(
        self,
        profile: FaultProfile,
        sim: Simulator,
        *,
        create_endpoints: Collection[str],
        retrieve_endpoints: Collection[str],
    ) -> None:
        self.profile = profile
        self.sim = sim
        self.kinds: dict[str, tuple[str, ...]] = {
            **dict.fromkeys(create_endpoints, CREATE_KINDS),
            **dict.fromkeys(retrieve_endpoints, RETRIEVE_KINDS),
        }
        self._generation = -1
        self._requests = 0
        self._bucket: _TokenBucket | None = None
        self.retry_after = profile.send_retry_after
        self._sync()

    def _sync(self) -> None:
        """Start over (request numbering, a full bucket) after a simulator reset."""
        if self._generation == self.sim.resets:
            return
        self._generation = self.sim.resets
        self._requests = 0
        rps = self.profile.rate_limit_rps
        if rps is not None:
            burst = self.profile.rate_limit_burst or max(1.0, rps)
            self._bucket = _TokenBucket(rps, burst, self.sim.clock())

    def _limit_header(self) -> str:
        rps = self.profile.rate_limit_rps
        return f"{rps:g}" if rps is not None else str(NOMINAL_RATE_LIMIT)

    def _pick(self, kinds: tuple[str, ...], rng: random.Random) -> str | None:
        u = rng.random()
        edge = 0.0
        for kind in kinds:
            edge += self.profile.share(kind)
            if u < edge:
                return kind
        return None

    async def __call__(self, endpoint: str, request: Request, call_next: Next) -> Response:
        kinds = self.kinds.get(endpoint)
        if kinds is None:
            return await call_next()
        self._sync()
        n = self._requests
        self._requests += 1
        rng = random.Random(f"genqueue-sim-faults:{self.sim.seed}:{n}")
        bucket = self._bucket
        if bucket is not None:
            wait_s = bucket.take(self.sim.clock())
            if wait_s > 0:
                self.sim.count_fault("rate_limit_rps")
                return _rate_limited(self._limit_header(), 0, wait_s, self.retry_after)
        kind = self._pick(kinds, rng)
        response = await self._apply(kind, request, call_next, rng)
        if bucket is not None and not isinstance(response, Abandoned):
            refill_s = max(0.0, 1.0 - bucket.tokens) / bucket.rate
            for name, value in rate_limit_headers(
                self._limit_header(), math.floor(bucket.tokens), refill_s
            ).items():
                response.headers.setdefault(name, value)
        return response

    async def _apply(
        self, kind: str | None, request: Request, call_next: Next, rng: random.Random
    ) -> Response:
        count = self.sim.count_fault
        if kind is None:
            return await call_next()
        # Faults at the edge: the request is never handled.
        if kind == "error_5xx":
            count(kind)
            return _server_error(rng, self.retry_after)
        if kind == "rate_limit":
            count(kind)
            return _rate_limited(
                self._limit_header(), 0, self.profile.rate_limit_retry_s, self.retry_after
            )
        if kind == "payment_required":
            count(kind)
            message = "Insufficient credits: add credits to your account to continue."
            return _error(402, message, "insufficient_quota", "insufficient_quota")
        if kind == "overloaded":
            count(kind)
            message = "The platform is out of capacity for this model; try again later."
            headers = {"Retry-After": str(rng.randint(1, 5))} if self.retry_after else None
            return _error(
                503, message, "service_unavailable", "service_unavailable", headers=headers
            )
        if kind == "hang":
            count(kind)
            return await self._hang(request)
        response = await call_next()
        if kind == "slow":
            count(kind)
            if await _client_gone_within(request, self.profile.slow_s):
                return Abandoned(ABANDONED)
            return response
        # The remaining faults distort a successful answer; any other answer passes unchanged.
        if response.status_code != 200:
            return response
        count(kind)
        if kind == "create_then_error":
            return _server_error(rng, self.retry_after)
        if kind == "upstream_cancel":
            self.sim.cancel_upstream(str(json.loads(bytes(response.body)).get("id")))
            return response
        if kind == "create_then_hang":
            return await self._hang(request)
        if kind == "late_answer":
            return await _late_answer(request, response, self.profile.late_answer_s)
        if kind == "malformed":
            garbled = _garbled(bytes(response.body), rng)
            return Response(garbled, status_code=200, media_type="application/json")
        job = json.loads(bytes(response.body))
        if kind == "unknown_status":
            job["status"] = self.profile.unknown_status
            return JSONResponse(job)
        assert kind == "not_found", kind
        job_id = job.get("id")
        return _error(
            404, f"Video job '{job_id}' not found.", "invalid_request_error", "not_found", "id"
        )

    async def _hang(self, request: Request) -> Response:
        if await _client_gone_within(request, self.profile.hang_cap_s):
            return Abandoned(HUNG)
        return _error(504, _SERVER_ERRORS[504][0], "server_error", "gateway_timeout")


__all__ = [
    "ABANDONED",
    "CREATE_KINDS",
    "ENV_VAR",
    "HUNG",
    "PROFILES",
    "RETRIEVE_KINDS",
    "Abandoned",
    "FaultInjector",
    "FaultProfile",
    "parse",
    "rate_limit_headers",
]
