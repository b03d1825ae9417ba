"""Starlette routes of the simulated Together video API and its ``/_sim`` control plane."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from genqueue.simulator.config import FaultPolicy, SimConfig
from genqueue.simulator.faults import (
    NOMINAL_RATE_LIMIT,
    Abandoned,
    FaultInjector,
    FaultProfile,
    rate_limit_headers,
)
from genqueue.simulator.lifecycle import Clock, SimJob, Simulator
from genqueue.simulator.shapes import error_body, legacy_job, sdk_job, user_id_for, video_bytes

Handler = Callable[[Request], Awaitable[Response]]

CREATE = "POST /v2/videos"
RETRIEVE = "GET /v2/videos/{id}"
LEGACY_STATUS = "GET /v2/videos/status"
FILES = "GET /_sim/files/{id}.mp4"
SHORT_LINK = "GET /shrt/{id}"

_INT_FIELDS = ("width", "height", "fps", "steps", "output_quality", "seed")
_STR_FIELDS = ("prompt", "negative_prompt", "ratio", "resolution")


def _error(status: int, message: str, type_: str, param: str | None, code: str | None) -> Response:
    return JSONResponse(error_body(message, type_, param, code), status_code=status)


def _invalid(message: str, param: str | None, code: str = "invalid_parameter") -> Response:
    return _error(400, message, "invalid_request_error", param, code)


def _sim(request: Request) -> Simulator:
    sim: Simulator = request.app.state.sim
    return sim


def _check_auth(request: Request, config: SimConfig) -> Response | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return _error(
            401,
            "Missing API key: send 'Authorization: Bearer <key>'.",
            "invalid_request_error",
            None,
            "invalid_api_key",
        )
    if config.api_key is not None and token != config.api_key:
        return _error(
            401, "Invalid API key provided.", "invalid_request_error", None, "invalid_api_key"
        )
    return None


def _api(endpoint: str, handler: Handler, *, auth: bool = True) -> Handler:
    """Wrap a route: fault hook around (auth + handler), then count the answer."""

    async def route(request: Request) -> Response:
        sim = _sim(request)
        if endpoint in (CREATE, RETRIEVE, LEGACY_STATUS):
            sim.note_arrival()

        async def call_next() -> Response:
            if auth:
                denied = _check_auth(request, sim.config)
                if denied is not None:
                    return denied
            return await handler(request)

        faults: FaultPolicy | None = request.app.state.faults
        try:
            # The one place where fault injection applies.
            response = await (faults(endpoint, request, call_next) if faults else call_next())
        except BaseException:
            sim.count_request(endpoint, "error")
            raise
        # What the client saw: nothing at all when it went away before the answer.
        label = response.label if isinstance(response, Abandoned) else response.status_code
        sim.count_request(endpoint, label)
        if endpoint in (CREATE, RETRIEVE, LEGACY_STATUS) and not isinstance(response, Abandoned):
            # Together sends these on every answer; a real limit (fault profile) set its own.
            nominal = rate_limit_headers(str(NOMINAL_RATE_LIMIT), NOMINAL_RATE_LIMIT - 1, 0.0)
            for name, value in nominal.items():
                response.headers.setdefault(name, value)
        return response

    return route


def _validate(body: Mapping[str, Any]) -> Response | None:
    """Type and range checks of ``CreateVideoBody``; unknown fields are ignored."""
    prompt = body.get("prompt")
    if isinstance(prompt, str) and not 1 <= len(prompt) <= 32_000:
        return _invalid("'prompt' must be 1 to 32000 characters.", "prompt")
    for name in _INT_FIELDS:
        value = body.get(name)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
            return _invalid(f"'{name}' must be an integer.", name)
    for name in ("width", "height", "fps", "steps"):
        value = body.get(name)
        if isinstance(value, int) and value <= 0:
            return _invalid(f"'{name}' must be positive.", name)
    steps = body.get("steps")
    if isinstance(steps, int) and not 10 <= steps <= 50:
        return _invalid("'steps' must be between 10 and 50.", "steps")
    for name in _STR_FIELDS:
        value = body.get(name)
        if value is not None and not isinstance(value, str):
            return _invalid(f"'{name}' must be a string.", name)
    seconds = body.get("seconds")
    if seconds is not None:
        try:
            ok = not isinstance(seconds, bool) and float(str(seconds)) > 0
        except ValueError:
            ok = False
        if not ok:
            return _invalid("'seconds' must be a positive number given as a string.", "seconds")
    guidance = body.get("guidance_scale")
    if guidance is not None and (
        not isinstance(guidance, int | float) or isinstance(guidance, bool)
    ):
        return _invalid("'guidance_scale' must be a number.", "guidance_scale")
    if body.get("output_format") not in (None, "MP4", "WEBM"):
        return _invalid("'output_format' must be 'MP4' or 'WEBM'.", "output_format")
    generate_audio = body.get("generate_audio")
    if generate_audio is not None and not isinstance(generate_audio, bool):
        return _invalid("'generate_audio' must be a boolean.", "generate_audio")
    media = body.get("media")
    if media is not None and not isinstance(media, dict):
        return _invalid("'media' must be an object.", "media")
    return None


def _base(request: Request, config: SimConfig) -> str:
    return (config.public_url or str(request.base_url)).rstrip("/")


def _video_url(request: Request, config: SimConfig, job: SimJob) -> str:
    """A short link, like Together's ``https://api.together.ai/shrt/...``."""
    return f"{_base(request, config)}/shrt/{job.id}"


def _signature(sim: Simulator, job_id: str, expires: int) -> str:
    key = f"genqueue-sim-files:{sim.seed}".encode()
    return hmac.new(key, f"{job_id}:{expires}".encode(), hashlib.sha256).hexdigest()[:32]


def _render(request: Request, sim: Simulator, job: SimJob, legacy: bool) -> Response:
    now = sim.clock()
    url = _video_url(request, sim.config, job)
    queued = sim.config.report_queued
    if legacy:
        return JSONResponse(legacy_job(job, now, url, user_id_for(sim.seed), report_queued=queued))
    return JSONResponse(sdk_job(job, now, url, report_queued=queued))


async def create_video(request: Request) -> Response:
    """``POST /v2/videos``: create a job (or replay one by ``Idempotency-Key``)."""
    sim = _sim(request)
    raw = await request.body()
    try:
        body = json.loads(raw)
    except ValueError:
        return _invalid("Request body must be valid JSON.", None, "invalid_json")
    if not isinstance(body, dict):
        return _invalid("Request body must be a JSON object.", None, "invalid_json")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        return _invalid("'model' is required.", "model", "missing_required_parameter")
    profile = sim.config.profile(model)
    if profile is None:
        return _invalid(f"Unable to access model {model}.", "model", "model_not_available")
    invalid = _validate(body)
    if invalid is not None:
        return invalid
    inputs = {k: v for k, v in body.items() if k != "model"}
    job, _ = sim.create(model, profile, inputs, request.headers.get("idempotency-key"))
    return _render(request, sim, job, sim.config.shape == "legacy")


def _not_found(job_id: str) -> Response:
    return _error(
        404, f"Video job '{job_id}' not found.", "invalid_request_error", "id", "not_found"
    )


async def retrieve_video(request: Request) -> Response:
    """``GET /v2/videos/{id}``: the job's current state in the configured shape."""
    sim = _sim(request)
    job_id: str = request.path_params["job_id"]
    job = sim.get(job_id)
    if job is None:
        return _not_found(job_id)
    sim.record_poll(job)
    return _render(request, sim, job, sim.config.shape == "legacy")


async def legacy_status(request: Request) -> Response:
    """``GET /v2/videos/status?id=``: the first SDK's poll endpoint, always the legacy shape."""
    sim = _sim(request)
    job_id = request.query_params.get("id")
    if not job_id:
        return _invalid("Query parameter 'id' is required.", "id", "missing_required_parameter")
    job = sim.get(job_id)
    if job is None:
        return _not_found(job_id)
    sim.record_poll(job)
    return _render(request, sim, job, legacy=True)


def _file_not_found() -> Response:
    return _error(404, "File not found.", "invalid_request_error", None, "not_found")


async def short_link(request: Request) -> Response:
    """``GET /shrt/{id}``: 302 to a freshly signed file URL, until the link itself expires."""
    sim = _sim(request)
    job_id: str = request.path_params["job_id"]
    job = sim.get(job_id)
    now = sim.clock()
    if job is None or job.status(now) != "completed":
        return _file_not_found()
    if now >= job.done_at + sim.config.short_link_ttl_s:
        return _error(404, "Link expired.", "invalid_request_error", None, "link_expired")
    expires = int((now + sim.config.signed_url_ttl_s) * 1000)  # unix milliseconds
    signature = _signature(sim, job.id, expires)
    location = f"{_base(request, sim.config)}/_sim/files/{job.id}.mp4"
    return Response(
        status_code=302, headers={"Location": f"{location}?expires={expires}&sig={signature}"}
    )


async def video_file(request: Request) -> Response:
    """``GET /_sim/files/{id}.mp4?expires=&sig=``: the video bytes through a signed URL
    (403 once expired or when the signature is wrong)."""
    sim = _sim(request)
    job_id: str = request.path_params["job_id"]
    job = sim.get(job_id)
    if job is None or job.status(sim.clock()) != "completed":
        return _file_not_found()
    try:
        expires = int(request.query_params.get("expires", ""))
    except ValueError:
        expires = -1
    signature = request.query_params.get("sig", "")
    if not hmac.compare_digest(signature, _signature(sim, job.id, expires)):
        return _error(403, "Signature does not match.", "access_denied", None, "bad_signature")
    if sim.clock() * 1000 >= expires:
        return _error(403, "Request has expired.", "access_denied", None, "url_expired")
    return Response(video_bytes(job.id), media_type="video/mp4")


async def sim_stats(request: Request) -> Response:
    """``GET /_sim/stats``: ground-truth counters."""
    return JSONResponse(_sim(request).stats())


async def sim_load(request: Request) -> Response:
    """Peak load ground truth: most API calls in any window (``?window_s=1``) and most jobs
    in flight at once."""
    try:
        window_s = float(request.query_params.get("window_s", "1"))
    except ValueError:
        window_s = 1.0
    return JSONResponse(_sim(request).load(max(0.001, window_s)))


async def sim_jobs(request: Request) -> Response:
    """``GET /_sim/jobs``: every job with status, cost and poll count."""
    return JSONResponse(_sim(request).jobs())


async def sim_reset(request: Request) -> Response:
    """``POST /_sim/reset[?seed=N]``: forget all jobs and counters."""
    raw_seed = request.query_params.get("seed")
    try:
        seed = int(raw_seed) if raw_seed is not None else None
    except ValueError:
        return _invalid("'seed' must be an integer.", "seed")
    sim = _sim(request)
    sim.reset(seed)
    return JSONResponse({"ok": True, "seed": sim.seed})


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    # Counted so a client requesting wrong paths (e.g. a base_url ending in /v1) shows up.
    _sim(request).count_request(f"{request.method} <unmatched>", exc.status_code)
    return _error(exc.status_code, str(exc.detail), "invalid_request_error", None, None)


def _fault_policy(config: SimConfig, sim: Simulator) -> FaultPolicy | None:
    faults = config.faults
    if not isinstance(faults, FaultProfile):
        return faults
    if not faults.active:
        return None
    return FaultInjector(
        faults, sim, create_endpoints={CREATE}, retrieve_endpoints={RETRIEVE, LEGACY_STATUS}
    )


def create_app(config: SimConfig | None = None, clock: Clock = time.time) -> Starlette:
    """The simulator as an ASGI app; ``app.state.sim`` is its :class:`Simulator`."""
    cfg = config if config is not None else SimConfig()
    routes = [
        Route("/v2/videos", _api(CREATE, create_video), methods=["POST"]),
        # Before the {job_id} route, which would otherwise capture "status".
        Route("/v2/videos/status", _api(LEGACY_STATUS, legacy_status), methods=["GET"]),
        Route("/v2/videos/{job_id}", _api(RETRIEVE, retrieve_video), methods=["GET"]),
        Route("/shrt/{job_id}", _api(SHORT_LINK, short_link, auth=False), methods=["GET"]),
        Route("/_sim/files/{job_id}.mp4", _api(FILES, video_file, auth=False), methods=["GET"]),
        Route("/_sim/stats", sim_stats, methods=["GET"]),
        Route("/_sim/jobs", sim_jobs, methods=["GET"]),
        Route("/_sim/load", sim_load, methods=["GET"]),
        Route("/_sim/reset", sim_reset, methods=["POST"]),
    ]
    app = Starlette(routes=routes, exception_handlers={HTTPException: _http_error})
    app.state.sim = Simulator(cfg, clock)
    app.state.faults = _fault_policy(cfg, app.state.sim)
    return app
