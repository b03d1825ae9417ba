"""Side effects owed after a request ends: download the finished video, deliver the webhook.

The terminal transition records what is owed (the outbox, architecture rule 4); a dispatcher
(an arq cron on the side queue) arms ``side:{id}:{side_seq}`` for every due entry, and each
run does one effect and records its result with one script. The download comes first: the
webhook then carries the file's path and checksum.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import httpx
import structlog
from standardwebhooks import Webhook

from genqueue.logs import register_secrets
from genqueue.producer.contracts import SideAttempt, SideEffect
from genqueue.producer.keys import SIDE_TASK, Field, Tag, tenant_of
from genqueue.producer.record import RequestView, read_full
from genqueue.producer.scripts import ms
from genqueue.producer.stats import redis_time_ms
from genqueue.producer.tenants import webhook_secrets
from genqueue.producer.timers import Timer
from genqueue.worker.backoff import retry_delay_s
from genqueue.worker.outbound.fetch import LinkGone, RetryableFetch, SignedUrlExpired, fetch_to
from genqueue.worker.outbound.guard import Refused
from genqueue.worker.outbound.post import post_status
from genqueue.worker.runtime import Runtime
from genqueue.worker.targets import DownloadTarget, FileTarget, S3Target, parse_s3_url
from genqueue.worker.upstream import UpstreamError

log = structlog.get_logger(__name__)

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


async def dispatch_outbox(rt: Runtime, batch: int = 500, lease_ms: int = 60_000) -> int:
    """Arm the side-effect timer of every due outbox entry; returns how many were armed.

    Each entry is first put off by ``lease_ms`` (its side job records the real next due time
    when it runs): the side worker runs this pass when the outbox has a due entry
    (``worker/wakeup.py``), so an entry left due would be dispatched again at every look. The
    lease is the backstop of a lost side job: the entry comes due again and is re-armed.
    """
    keys = rt.keys
    now = redis_time_ms(await rt.redis.time())
    due: list[str] = await rt.redis.zrangebyscore(keys.outbox, "-inf", now, start=0, num=batch)
    if not due:
        return 0
    # Before arming: a side job that runs at once then sets its own due time, never undone.
    await rt.redis.zadd(keys.outbox, dict.fromkeys(due, now + lease_ms), xx=True, gt=True)
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
        structlog.contextvars.bind_contextvars(tenant=tenant_of(raw))  # this job's task only
        if raw.get(Field.DOWNLOAD_STATE) == "pending":
            attempts = await _count_attempt(rt, raw, seq, "download")
            if attempts:
                result, delay_s, fields = await _download(rt, raw, attempts)
                await _record(rt, raw, seq, "download", result, delay_s, fields)
        elif raw.get(Field.WEBHOOK_STATE) == "pending":
            host = _host(raw.get(Field.WEBHOOK_URL, ""))
            async with rt.host_slots.take(host) as got:
                if not got:
                    # One slow host must not take every side slot: put it back, no attempt.
                    delay_s = 1.0 + rt.rng.random()
                    await _record(rt, raw, seq, "webhook", "retry", delay_s, {}, "deferred")
                    return
                attempts = await _count_attempt(rt, raw, seq, "webhook")
                if attempts:
                    result, delay_s, fields = await _deliver(rt, raw, attempts)
                    await _record(rt, raw, seq, "webhook", result, delay_s, fields)


def _host(url: str) -> str:
    try:
        return (urlsplit(url).hostname or "").rstrip(".")
    except ValueError:
        return ""


async def _count_attempt(rt: Runtime, raw: dict[str, str], seq: int, effect: str) -> int:
    """Count the attempt before making it (a task killed mid-call still used one); 0 when
    the record moved on meanwhile."""
    c = SideAttempt(
        request_id=raw[Field.ID],
        idempotency_key=raw.get(Field.IDEMPOTENCY_KEY) or None,
        tenant=tenant_of(raw),
        expected_side_seq=seq,
        effect=effect,
    ).call(rt.config.settings)
    reply = await rt.scripts.run(c)
    return reply.attempts if reply.tag is Tag.OK else 0


async def _record(
    rt: Runtime,
    raw: dict[str, str],
    seq: int,
    effect: str,
    result: str,
    delay_s: float,
    fields: dict[str, str],
    label: str | None = None,
) -> None:
    webhooks = rt.config.webhooks
    c = SideEffect(
        request_id=raw[Field.ID],
        idempotency_key=raw.get(Field.IDEMPOTENCY_KEY) or None,
        tenant=tenant_of(raw),
        expected_side_seq=seq,
        effect=effect,
        result=result,
        retry_delay_ms=ms(delay_s),
        fields=fields,
        dead_max_age_ms=ms(webhooks.dead_max_age_s),
        dead_max=webhooks.dead_max,
    ).call(rt.config.settings)
    reply = await rt.scripts.run(c)
    counter = rt.metrics.webhook_deliveries if effect == "webhook" else rt.metrics.downloads
    counter.labels(label or result).inc()
    log.info(
        f"{effect}_{label or result}",
        **{k: v for k, v in fields.items() if not k.endswith("_at_ms")},
    )
    if reply.tag is Tag.NEXT and reply.due_in_ms <= 0:
        # The next effect is due now: don't wait for the dispatcher's next pass.
        await rt.side_timers.arm(Timer(SIDE_TASK, raw[Field.ID], reply.side_seq))


# --- download -------------------------------------------------------------------------------


class _Retryable(Exception):
    pass


#: Visits of the short link per download attempt: each redirects to a freshly signed URL.
LINK_VISITS = 3


def _suffix(url: str) -> str:
    suffix = PurePosixPath(urlsplit(url).path).suffix.lower()
    return suffix if suffix in _VIDEO_SUFFIXES else ".mp4"


def _target(rt: Runtime, request_id: str, url: str) -> DownloadTarget:
    cfg = rt.config
    if cfg.downloads.s3_url:
        bucket, prefix = parse_s3_url(cfg.downloads.s3_url)
        key = f"{prefix}/{request_id}{_suffix(url)}" if prefix else f"{request_id}{_suffix(url)}"
        return S3Target(rt.s3, bucket, key, cfg.downloads.s3_part_bytes)
    return FileTarget(Path(cfg.downloads.dir), request_id, _suffix(url))


async def _download(
    rt: Runtime, raw: dict[str, str], attempts: int
) -> tuple[str, float, dict[str, str]]:
    """Stream the video to its target (``downloads.dir`` or S3): size-limited, checksummed,
    committed only when whole, all within one total deadline; a partial file or upload is
    removed on every way out (cancellation included)."""
    cfg = rt.config
    url = raw.get(Field.VIDEO_URL, "")
    if attempts > cfg.downloads.retries:
        # Earlier attempts were killed before recording a result (each was counted first).
        return "dead", 0.0, {Field.DOWNLOAD_ERROR: f"gave up after {attempts - 1} attempts"}
    target = _target(rt, raw[Field.ID], url)
    try:
        try:
            async with asyncio.timeout(cfg.downloads.timeout_s):
                digest, size = await _follow_link(rt, raw, url, target)
                location = await target.commit(digest)
        except TimeoutError:
            raise _Retryable(
                f"not done within {cfg.downloads.timeout_s:g} s from {safe_url(url)}"
            ) from None
    except (_Retryable, RetryableFetch) as exc:
        if attempts >= cfg.downloads.retries:
            return "dead", 0.0, {Field.DOWNLOAD_ERROR: str(exc)[:300]}
        delay = retry_delay_s(attempts, base_s=2.0, cap_s=300.0, jitter=0.1, rng=rt.rng)
        return "retry", delay, {Field.DOWNLOAD_ERROR: str(exc)[:300]}
    except Refused as exc:
        return "dead", 0.0, {Field.DOWNLOAD_ERROR: f"refused: {exc}"[:300]}
    except (ValueError, OSError) as exc:
        return "dead", 0.0, {Field.DOWNLOAD_ERROR: f"{type(exc).__name__}: {exc}"[:300]}
    except Exception as exc:
        if not _is_storage_error(exc):
            raise
        # Object storage refused or failed: worth another attempt (credentials fixed, ...).
        error = f"storage: {type(exc).__name__}"[:300]
        if attempts >= cfg.downloads.retries:
            return "dead", 0.0, {Field.DOWNLOAD_ERROR: error}
        delay = retry_delay_s(attempts, base_s=2.0, cap_s=300.0, jitter=0.1, rng=rt.rng)
        return "retry", delay, {Field.DOWNLOAD_ERROR: error}
    finally:
        await target.abort()  # after a commit: a no-op
    return (
        "done",
        0.0,
        {
            Field.DOWNLOAD_PATH: location,
            Field.DOWNLOAD_SHA256: digest,
            Field.DOWNLOAD_BYTES: str(size),
            Field.DOWNLOAD_ERROR: "",
        },
    )


async def _follow_link(
    rt: Runtime, raw: dict[str, str], url: str, target: DownloadTarget
) -> tuple[str, int]:
    """Download through Together's short link: it redirects to a signed URL that expires.

    A signed URL refused after a redirect is expired: visit the short link again for a fresh
    one (up to ``LINK_VISITS`` visits). A short link that is gone (404/410) past its own
    lifetime: re-read the job once for its current URL. Every visit goes through the guarded
    client hop by hop with the size cap, within the caller's total deadline; a refused visit
    writes nothing to ``target``.
    """
    cfg = rt.config
    reread = False
    for _ in range(LINK_VISITS):
        try:
            return await fetch_to(
                rt.download_http,
                url,
                target,
                max_bytes=cfg.downloads.max_bytes,
                max_redirects=cfg.downloads.max_redirects,
                label=safe_url(url),
            )
        except SignedUrlExpired:
            log.info("download_signed_url_expired", url=safe_url(url))
        except LinkGone:
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


def _is_storage_error(exc: Exception) -> bool:
    """botocore's errors, recognised without importing botocore where it is not installed."""
    return type(exc).__module__.startswith(("botocore", "boto3"))


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


async def signing_secrets(rt: Runtime, tenant: str) -> Sequence[str]:
    """The secrets that sign ``tenant``'s webhooks: its own (newest first, all of them during
    a rotation), else ``GENQUEUE_WEBHOOK_SECRET`` (empty: none at all)."""
    own = await webhook_secrets(rt.redis, rt.keys, tenant)
    register_secrets(*own)  # read from Redis: blanked in every log line from now on
    if own:
        return own
    return (rt.config.webhooks.secret,) if rt.config.webhooks.secret else ()


def signature_header(secrets: Sequence[str], msg_id: str, sent_at: datetime, payload: str) -> str:
    """``webhook-signature`` with one ``v1,<sig>`` per secret, space-separated (Standard
    Webhooks: a receiver accepts if any verifies, so old and new secrets overlap)."""
    return " ".join(Webhook(s).sign(msg_id, sent_at, payload) for s in secrets)


async def _deliver(
    rt: Runtime, raw: dict[str, str], attempts: int
) -> tuple[str, float, dict[str, str]]:
    """POST the signed record to the request's webhook URL (Standard Webhooks), within one
    total deadline; the receiver's answer body is never read (only its status)."""
    cfg = rt.config
    url = raw.get(Field.WEBHOOK_URL, "")
    now_ms = redis_time_ms(await rt.redis.time())
    since_ms = max(
        int(raw.get(Field.FINISHED_AT_MS) or now_ms),
        int(raw.get(Field.WEBHOOK_REPLAYED_AT_MS) or 0),
    )
    age_s = (now_ms - since_ms) / 1000
    error: str
    status = ""
    secrets = await signing_secrets(rt, tenant_of(raw))
    if not secrets:
        error = "GENQUEUE_WEBHOOK_SECRET is not set: webhooks cannot be signed"
    else:
        sent_at = datetime.now(UTC)
        msg_id = raw.get(Field.WEBHOOK_ID) or f"wh_{raw[Field.ID]}"
        payload = webhook_payload(RequestView.from_hash(raw), raw, sent_at)
        headers = {
            "content-type": "application/json",
            "webhook-id": msg_id,
            "webhook-timestamp": str(int(sent_at.timestamp())),
            "webhook-signature": signature_header(secrets, msg_id, sent_at, payload),
        }
        try:
            code = await post_status(
                rt.webhook_http, url, payload.encode(), headers, total_s=cfg.webhooks.timeout_s
            )
        except Refused as exc:
            # Policy, not weather: retrying cannot help. The request itself is untouched.
            return "dead", 0.0, {Field.WEBHOOK_ERROR: f"refused: {exc}"[:300],
                                 Field.WEBHOOK_LAST_STATUS: ""}  # fmt: skip
        except TimeoutError:
            error = f"no answer within {cfg.webhooks.timeout_s:g} s from {safe_url(url)}"
        except httpx.InvalidURL:
            return "dead", 0.0, {Field.WEBHOOK_ERROR: "invalid webhook URL",
                                 Field.WEBHOOK_LAST_STATUS: ""}  # fmt: skip
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__} posting to {safe_url(url)}"
        else:
            status = str(code)
            if 200 <= code < 300:
                return "done", 0.0, {Field.WEBHOOK_DELIVERED_AT_MS: str(now_ms),
                                     Field.WEBHOOK_ERROR: "",
                                     Field.WEBHOOK_LAST_STATUS: status}  # fmt: skip
            if code == 410:  # the receiver asks us to stop (Standard Webhooks)
                return "dead", 0.0, {Field.WEBHOOK_ERROR: "HTTP 410 Gone",
                                     Field.WEBHOOK_LAST_STATUS: status}  # fmt: skip
            error = f"HTTP {code} from {safe_url(url)}"
    fields = {Field.WEBHOOK_ERROR: error, Field.WEBHOOK_LAST_STATUS: status}
    if age_s >= cfg.webhooks.max_age_s:
        return "dead", 0.0, fields
    delay = retry_delay_s(
        attempts,
        base_s=cfg.webhooks.retry_s,
        cap_s=cfg.webhooks.retry_cap_s,
        jitter=0.1,
        rng=rt.rng,
    )
    return "retry", min(delay, max(0.0, cfg.webhooks.max_age_s - age_s)), fields
