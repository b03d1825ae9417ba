"""Side effects owed after a request ends: download the finished video, deliver the webhook.

The terminal transition records what is owed (the outbox, DESIGN.md rule 4); a dispatcher
(an arq cron on the side queue) arms ``side:{id}:{side_seq}`` for every due entry, and each
run does one effect and records its result with one script. The download comes first: the
webhook then carries the file's path and checksum.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import httpx
import structlog
from standardwebhooks import Webhook

from genqueue.producer.keys import SIDE_TASK, Field
from genqueue.producer.record import RequestView, read_full
from genqueue.producer.scripts import call, ms
from genqueue.producer.stats import redis_time_ms
from genqueue.producer.timers import Timer
from genqueue.worker.backoff import retry_delay_s
from genqueue.worker.runtime import Runtime
from genqueue.worker.upstream import UpstreamError

log = structlog.get_logger(__name__)

_CHUNK = 1 << 16
_VIDEO_SUFFIXES = {".mp4", ".webm", ".mov"}


def safe_url(url: str) -> str:
    """A URL fit for logs: no credentials, no query string (signed URLs carry tokens)."""
    try:
        p = urlsplit(url)
    except ValueError:
        return "<invalid url>"
    host = p.hostname or ""
    port = f":{p.port}" if p.port else ""
    return f"{p.scheme}://{host}{port}{p.path}"


async def dispatch_outbox(rt: Runtime, batch: int = 500) -> int:
    """Arm the side-effect timer of every due outbox entry; returns how many were armed."""
    keys = rt.keys
    now = redis_time_ms(await rt.redis.time())
    due: list[str] = await rt.redis.zrangebyscore(keys.outbox, "-inf", now, start=0, num=batch)
    armed = 0
    for request_id in due:
        seq = await rt.redis.hget(keys.record(request_id), Field.SIDE_SEQ)  # type: ignore[misc]
        if seq is None:
            await rt.redis.zrem(keys.outbox, request_id)  # the record expired: nothing owed
            continue
        if await rt.side_timers.arm(Timer(SIDE_TASK, request_id, int(seq))):
            armed += 1
    return armed


async def run_side(rt: Runtime, request_id: str, seq: int) -> None:
    """Do the next side effect owed for a finished request (download first, then webhook)."""
    with structlog.contextvars.bound_contextvars(request_id=request_id, side_seq=seq):
        raw = await read_full(rt.redis, rt.keys, request_id)
        if not raw or raw.get(Field.SIDE_SEQ) != str(seq):
            return  # gone, or a stale timer: the dispatcher arms the current one
        if raw.get(Field.DOWNLOAD_STATE) == "pending":
            result, delay_s, fields = await _download(rt, raw)
            await _record(rt, raw, seq, "download", result, delay_s, fields)
        elif raw.get(Field.WEBHOOK_STATE) == "pending":
            result, delay_s, fields = await _deliver(rt, raw)
            await _record(rt, raw, seq, "webhook", result, delay_s, fields)


async def _record(
    rt: Runtime,
    raw: dict[str, str],
    seq: int,
    effect: str,
    result: str,
    delay_s: float,
    fields: dict[str, str],
) -> None:
    c = call(
        rt.config.settings,
        "side_effect",
        raw[Field.ID],
        str(seq),
        effect,
        result,
        ms(delay_s),
        json.dumps(fields),
        rt.keys.dead_letters,
        idempotency_key=raw.get(Field.IDEMPOTENCY_KEY) or None,
    )
    reply = await rt.scripts.run(c)
    counter = rt.metrics.webhook_deliveries if effect == "webhook" else rt.metrics.downloads
    counter.labels(result).inc()
    log.info(f"{effect}_{result}", **{k: v for k, v in fields.items() if not k.endswith("_at_ms")})
    if reply[0] == "NEXT" and int(reply[2]) <= 0:
        # The next effect is due now: don't wait for the dispatcher's next pass.
        await rt.side_timers.arm(Timer(SIDE_TASK, raw[Field.ID], int(reply[1])))


# --- download -------------------------------------------------------------------------------


class _Retryable(Exception):
    pass


class _SignedUrlExpired(Exception):
    """The short link redirected to a signed URL that refused us (expired on the way)."""


class _LinkGone(Exception):
    """The video URL itself is unknown now (a short link past its own lifetime)."""


#: Visits of the short link per download attempt: each redirects to a freshly signed URL.
LINK_VISITS = 3


def _suffix(url: str) -> str:
    suffix = PurePosixPath(urlsplit(url).path).suffix.lower()
    return suffix if suffix in _VIDEO_SUFFIXES else ".mp4"


async def _download(rt: Runtime, raw: dict[str, str]) -> tuple[str, float, dict[str, str]]:
    """Stream the video to ``download_dir``: size-limited, checksummed, atomically renamed."""
    cfg = rt.config
    url = raw.get(Field.VIDEO_URL, "")
    attempts = int(raw.get(Field.DOWNLOAD_ATTEMPTS) or 0) + 1
    folder = Path(cfg.download_dir)
    final = folder / f"{raw[Field.ID]}{_suffix(url)}"
    part = folder / f".{raw[Field.ID]}.part"
    try:
        await asyncio.to_thread(folder.mkdir, parents=True, exist_ok=True)
        digest, size = await _follow_link(rt, raw, url, part)
        await asyncio.to_thread(os.replace, part, final)
    except _Retryable as exc:
        part.unlink(missing_ok=True)
        if attempts >= cfg.download_retries:
            return "dead", 0.0, {Field.DOWNLOAD_ERROR: str(exc)[:300]}
        delay = retry_delay_s(attempts, base_s=2.0, cap_s=300.0, jitter=0.1, rng=rt.rng)
        return "retry", delay, {Field.DOWNLOAD_ERROR: str(exc)[:300]}
    except (ValueError, OSError) as exc:
        part.unlink(missing_ok=True)
        return "dead", 0.0, {Field.DOWNLOAD_ERROR: f"{type(exc).__name__}: {exc}"[:300]}
    return (
        "done",
        0.0,
        {
            Field.DOWNLOAD_PATH: str(final),
            Field.DOWNLOAD_SHA256: digest,
            Field.DOWNLOAD_BYTES: str(size),
            Field.DOWNLOAD_ERROR: "",
        },
    )


async def _follow_link(rt: Runtime, raw: dict[str, str], url: str, part: Path) -> tuple[str, int]:
    """Download through Together's short link: it redirects to a signed URL that expires.

    A signed URL refused after a redirect is expired: visit the short link again for a fresh
    one. A short link that is gone (404/410) past its own lifetime: re-read the job once for
    its current URL.
    """
    reread = False
    for _ in range(LINK_VISITS):
        try:
            return await _stream_to(rt, url, part)
        except _SignedUrlExpired:
            log.info("download_signed_url_expired", url=safe_url(url))
        except _LinkGone:
            upstream_id = raw.get(Field.UPSTREAM_ID, "")
            if reread or not upstream_id:
                raise ValueError(f"video URL gone: {safe_url(url)}") from None
            reread = True
            url = await _current_video_url(rt, upstream_id)
            log.info("download_link_reread", url=safe_url(url))
    raise _Retryable(f"signed URL expired on {LINK_VISITS} visits of {safe_url(url)}")


async def _current_video_url(rt: Runtime, upstream_id: str) -> str:
    try:
        job = await rt.upstream.retrieve(upstream_id)
    except UpstreamError as exc:
        raise _Retryable(f"re-reading the job for its video URL: {exc}") from None
    if not job.video_url:
        raise ValueError("the upstream job has no video URL any more")
    return job.video_url


async def _stream_to(rt: Runtime, url: str, part: Path) -> tuple[str, int]:
    limit = rt.config.download_max_bytes
    h = hashlib.sha256()
    size = 0
    try:
        async with rt.download_http.stream("GET", url) as resp:
            if resp.status_code >= 500 or resp.status_code in (408, 429):
                raise _Retryable(f"HTTP {resp.status_code} from {safe_url(url)}")
            if resp.status_code == 403 and resp.history:
                raise _SignedUrlExpired
            if resp.status_code in (404, 410) and not resp.history:
                raise _LinkGone
            if resp.status_code != 200:
                # A signed URL that expired or was refused will not get better by waiting.
                raise ValueError(f"HTTP {resp.status_code} from {safe_url(url)}")
            declared = int(resp.headers.get("content-length") or 0)
            if declared > limit:
                raise ValueError(f"{declared} bytes is over the {limit}-byte limit")
            with part.open("wb") as f:
                async for chunk in resp.aiter_bytes(_CHUNK):
                    size += len(chunk)
                    if size > limit:
                        raise ValueError(f"over the {limit}-byte limit")
                    h.update(chunk)
                    await asyncio.to_thread(f.write, chunk)
                await asyncio.to_thread(os.fsync, f.fileno())
    except httpx.HTTPError as exc:
        raise _Retryable(f"{type(exc).__name__} from {safe_url(url)}") from None
    return h.hexdigest(), size


# --- webhook --------------------------------------------------------------------------------


def webhook_payload(view: RequestView, raw: dict[str, str], sent_at: datetime) -> str:
    """The JSON body of a webhook: event type, time, and the record (with its download)."""
    data: dict[str, Any] = view.to_json_dict()
    data.pop("request", None)  # the caller sent it; prompts needn't travel again
    if raw.get(Field.DOWNLOAD_STATE):
        data["download"] = {
            "state": raw.get(Field.DOWNLOAD_STATE),
            "path": raw.get(Field.DOWNLOAD_PATH) or None,
            "sha256": raw.get(Field.DOWNLOAD_SHA256) or None,
            "bytes": int(raw[Field.DOWNLOAD_BYTES]) if raw.get(Field.DOWNLOAD_BYTES) else None,
        }
    body = {
        "type": f"generation.{view.status}",
        "timestamp": sent_at.isoformat().replace("+00:00", "Z"),
        "data": data,
    }
    return json.dumps(body, separators=(",", ":"), default=str)


async def _deliver(rt: Runtime, raw: dict[str, str]) -> tuple[str, float, dict[str, str]]:
    """POST the signed record to the request's webhook URL (Standard Webhooks)."""
    cfg = rt.config
    url = raw.get(Field.WEBHOOK_URL, "")
    attempts = int(raw.get(Field.WEBHOOK_ATTEMPTS) or 0) + 1
    now_ms = redis_time_ms(await rt.redis.time())
    age_s = (now_ms - int(raw.get(Field.FINISHED_AT_MS) or now_ms)) / 1000
    error: str
    if not cfg.webhook_secret:
        error = "GENQUEUE_WEBHOOK_SECRET is not set: webhooks cannot be signed"
    else:
        sent_at = datetime.now(UTC)
        msg_id = raw.get(Field.WEBHOOK_ID) or f"wh_{raw[Field.ID]}"
        payload = webhook_payload(RequestView.from_hash(raw), raw, sent_at)
        headers = {
            "content-type": "application/json",
            "webhook-id": msg_id,
            "webhook-timestamp": str(int(sent_at.timestamp())),
            "webhook-signature": Webhook(cfg.webhook_secret).sign(msg_id, sent_at, payload),
        }
        try:
            resp = await rt.webhook_http.post(url, content=payload.encode(), headers=headers)
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__} posting to {safe_url(url)}"
        else:
            if 200 <= resp.status_code < 300:
                return "done", 0.0, {Field.WEBHOOK_DELIVERED_AT_MS: str(now_ms),
                                     Field.WEBHOOK_ERROR: ""}  # fmt: skip
            if resp.status_code == 410:  # the receiver asks us to stop (Standard Webhooks)
                return "dead", 0.0, {Field.WEBHOOK_ERROR: "HTTP 410 Gone"}
            error = f"HTTP {resp.status_code} from {safe_url(url)}"
    if age_s >= cfg.webhook_max_age_s:
        return "dead", 0.0, {Field.WEBHOOK_ERROR: error}
    delay = retry_delay_s(
        attempts,
        base_s=cfg.webhook_retry_s,
        cap_s=cfg.webhook_retry_cap_s,
        jitter=0.1,
        rng=rt.rng,
    )
    return (
        "retry",
        min(delay, max(0.0, cfg.webhook_max_age_s - age_s)),
        {Field.WEBHOOK_ERROR: error},
    )
