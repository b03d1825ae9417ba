"""Wire formats: the two job-object shapes, error bodies and the fake video file."""

from __future__ import annotations

import functools
import hashlib
from datetime import UTC, datetime
from typing import Any

from genqueue.simulator.lifecycle import SimJob, micro_to_usd

# Go's zero time.Time, which the legacy API prints for "not claimed yet".
ZERO_TIME = "0001-01-01T00:00:00Z"

CREATE_FIELDS: tuple[str, ...] = (
    "prompt",
    "negative_prompt",
    "width",
    "height",
    "seconds",
    "fps",
    "steps",
    "seed",
    "guidance_scale",
    "output_format",
    "output_quality",
    "ratio",
    "resolution",
    "generate_audio",
    "media",
)


def rfc3339(ts: float) -> str:
    """Unix seconds as RFC 3339 UTC with microseconds and ``Z``."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def cost_number(micro: int) -> float:
    """Micro-dollars as the JSON number the API sends (280000 -> 0.28)."""
    return float(micro_to_usd(micro))


def error_body(
    message: str, type_: str, param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    """The API's error JSON: ``{"error": {message, type, param, code}}``."""
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def reported_status(job: SimJob, now: float, report_queued: bool = True) -> str:
    """The status the API shows: ``queued`` becomes ``in_progress`` when not reported."""
    status = job.status(now)
    return "in_progress" if status == "queued" and not report_queued else status


def sdk_job(
    job: SimJob, now: float, video_url: str, *, report_queued: bool = True
) -> dict[str, Any]:
    """The spec's ``VideoJob`` (SDK v3.1): only its fields, unix-second floats.

    Absent optional fields are ``null``, as Together's answers have them (the spec would omit
    them: an exception named in ``tests/contract``). There is no start-of-generation time.
    """
    status = reported_status(job, now, report_queued)
    terminal = status in ("completed", "failed", "cancelled")
    error: dict[str, Any] | None = None
    if status == "failed" and job.error:
        error = {"message": job.error[0], "code": job.error[1]}
    elif status == "cancelled":
        error = {"message": "The video job was cancelled.", "code": "cancelled"}
    return {
        "id": job.id,
        "object": "video",
        "model": job.model,
        "status": status,
        "created_at": job.created_at,
        "completed_at": job.done_at if terminal else None,
        "seconds": job.seconds,
        "size": job.size,
        "error": error,
        "outputs": (
            {"cost": cost_number(job.price_micro_usd), "video_url": video_url}
            if status == "completed"
            else None
        ),
    }


def legacy_job(
    job: SimJob, now: float, video_url: str, user_id: str, *, report_queued: bool = True
) -> dict[str, Any]:
    """The documented 2025-11 shape: RFC 3339 strings, ``info``, ``inputs``, ``claimed_at``."""
    status = reported_status(job, now, report_queued)
    errors: list[dict[str, Any]] | None = None
    if status == "failed" and job.error:
        errors = [{"message": job.error[0], "code": job.error[1]}]
    elif status == "cancelled":
        errors = [{"message": "The video job was cancelled.", "code": "cancelled"}]
    body: dict[str, Any] = {
        "id": job.id,
        "model": job.model,
        "status": status,
        "info": {"user_id": user_id, "errors": errors},
        "inputs": {name: job.inputs.get(name) for name in CREATE_FIELDS},
    }
    if status == "completed":
        body["outputs"] = {"cost": cost_number(job.price_micro_usd), "video_url": video_url}
    body["created_at"] = rfc3339(job.created_at)
    claimed = job.status(now) != "queued"
    body["claimed_at"] = rfc3339(job.started_at) if claimed else ZERO_TIME
    body["done_at"] = (
        rfc3339(job.done_at) if status in ("completed", "failed", "cancelled") else ZERO_TIME
    )
    return body


@functools.lru_cache(maxsize=64)
def user_id_for(seed: int) -> str:
    """A stable 24-hex-digit user id (like the docs' "66f0...") for a seed."""
    return hashlib.sha256(f"genqueue-sim-user:{seed}".encode()).hexdigest()[:24]


def _box(kind: bytes, payload: bytes) -> bytes:
    return (8 + len(payload)).to_bytes(4, "big") + kind + payload


def video_bytes(job_id: str, size: int = 4096) -> bytes:
    """A deterministic ISO-BMFF byte string (``ftyp`` + ``free`` boxes) unique to ``job_id``."""
    ftyp = _box(b"ftyp", b"isom" + (512).to_bytes(4, "big") + b"isomiso2avc1mp41")
    filler = bytearray()
    block = job_id.encode()
    while len(filler) < size - len(ftyp) - 8:
        block = hashlib.sha256(block).digest()
        filler += block
    return ftyp + _box(b"free", bytes(filler[: size - len(ftyp) - 8]))
