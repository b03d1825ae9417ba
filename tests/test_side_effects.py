"""Side effects owed after the end: signed webhooks (Standard Webhooks) and video downloads."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio
from standardwebhooks import Webhook

from genqueue.producer.client import AsyncClient
from genqueue.producer.keys import Field
from genqueue.producer.settings import Settings
from genqueue.worker.outbound.resolver import StaticResolver
from tests.conftest import StartWorker
from tests.faults import RouterTransport
from tests.test_transitions import Scripts

SECRET = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
REQ = {"model": "minimax/video-01-director", "prompt": "a lantern on water"}
HOOK = "http://hooks.test/genqueue?token=abc"
#: The receiver is local: its name resolves to loopback, which the operator allows.
LOCAL_NETS = "127.0.0.0/8"
LOCAL_HOOKS = StaticResolver({"hooks.test": ["127.0.0.1"]})


class Receiver:
    """A webhook receiver that verifies every delivery as a real one would."""

    def __init__(self, statuses: list[int] | None = None) -> None:
        self.statuses = statuses or []
        self.received: list[dict[str, Any]] = []
        self.verified: list[dict[str, Any]] = []
        self.transport = httpx.MockTransport(self.handle)

    def handle(self, request: httpx.Request) -> httpx.Response:
        headers = dict(request.headers)
        self.received.append({"headers": headers, "body": request.content.decode()})
        self.verified.append(Webhook(SECRET).verify(request.content.decode(), headers))
        status = self.statuses.pop(0) if self.statuses else 200
        return httpx.Response(status)


StartSide = Callable[..., Awaitable[Receiver]]


@pytest.fixture
def start_side(start_worker: StartWorker, sim_app: Any, settings: Settings) -> StartSide:
    """``await start_side(statuses, **config overrides)``: a worker and a side worker whose
    webhooks go to a new verifying Receiver (answering ``statuses``, then 200), returned."""

    async def start(statuses: list[int] | None = None, **overrides: Any) -> Receiver:
        receiver = Receiver(statuses)
        transport = RouterTransport(
            {"sim": httpx.ASGITransport(app=sim_app), "hooks.test": receiver.transport}
        )
        await start_worker(
            side_transport=transport,
            with_side=True,
            webhook_secret=SECRET,
            resolver=LOCAL_HOOKS,
            settings=replace(settings, outbound_allow_nets=LOCAL_NETS),
            **overrides,
        )
        return receiver

    return start


async def until(pred: Any, timeout_s: float = 20.0) -> None:
    for _ in range(int(timeout_s / 0.02)):
        if await pred():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not met in time")


async def rec(aredis: redis.asyncio.Redis, settings: Settings, rid: str) -> dict[str, str]:
    return await aredis.hgetall(settings.keys.record(rid))  # type: ignore[misc]


async def until_webhook(
    aredis: redis.asyncio.Redis,
    settings: Settings,
    rid: str,
    state: str = "done",
    timeout_s: float = 20.0,
) -> None:
    """Wait until the request's webhook reaches ``state``."""

    async def reached() -> bool:
        got = await aredis.hget(settings.keys.record(rid), Field.WEBHOOK_STATE)  # type: ignore[misc]
        return bool(got == state)

    await until(reached, timeout_s)


async def test_webhook_is_signed_and_verifiable(
    client: AsyncClient,
    start_side: StartSide,
    aredis: redis.asyncio.Redis,
    settings: Settings,
) -> None:
    """A finished request's webhook carries a Standard Webhooks signature a receiver verifies."""
    receiver = await start_side()
    rid = await client.submit(REQ, webhook_url=HOOK)
    await client.wait(rid, 20)
    await until_webhook(aredis, settings, rid)
    assert len(receiver.verified) == 1
    body = receiver.verified[0]
    assert body["type"] == "generation.completed" and body["data"]["id"] == rid
    assert body["data"]["cost_usd"] == "0.280000" and "request" not in body["data"]
    assert receiver.received[0]["headers"]["webhook-id"] == f"wh_{rid}"
    r = await rec(aredis, settings, rid)
    assert r[Field.WEBHOOK_ATTEMPTS] == "1" and r[Field.WEBHOOK_DELIVERED_AT_MS]
    assert not await aredis.zcard(settings.keys.outbox)


async def test_failed_deliveries_retry_with_the_same_webhook_id(
    client: AsyncClient,
    start_side: StartSide,
    aredis: redis.asyncio.Redis,
    settings: Settings,
) -> None:
    """A receiver that fails twice gets the same event (same webhook-id) until it accepts."""
    receiver = await start_side([500, 503], webhook_retry_s=0.05)
    rid = await client.submit(REQ, webhook_url=HOOK)
    await until_webhook(aredis, settings, rid, "done", 30)
    ids = {r["headers"]["webhook-id"] for r in receiver.received}
    assert len(receiver.received) == 3 and ids == {f"wh_{rid}"}
    assert (await rec(aredis, settings, rid))[Field.WEBHOOK_ATTEMPTS] == "3"


async def test_undeliverable_webhook_is_dead_lettered(
    client: AsyncClient,
    start_side: StartSide,
    aredis: redis.asyncio.Redis,
    settings: Settings,
) -> None:
    """A receiver that never accepts is given up on after the maximum age and dead-lettered."""
    await start_side([500] * 100, webhook_retry_s=0.05, webhook_max_age_s=0.5)
    rid = await client.submit(REQ, webhook_url=HOOK)
    await until_webhook(aredis, settings, rid, "dead", 30)
    assert await aredis.zscore(settings.keys.dead_letters, rid) is not None
    assert "HTTP 500" in (await rec(aredis, settings, rid))[Field.WEBHOOK_ERROR]
    assert "token=abc" not in (await rec(aredis, settings, rid))[Field.WEBHOOK_ERROR]


async def test_video_is_downloaded_before_the_webhook(
    client: AsyncClient,
    start_side: StartSide,
    aredis: redis.asyncio.Redis,
    settings: Settings,
    tmp_path: Path,
) -> None:
    """The finished video is streamed to disk with its checksum; the webhook then reports it."""
    receiver = await start_side(download_dir=str(tmp_path))
    rid = await client.submit(REQ, webhook_url=HOOK)
    view = await client.wait(rid, 20)
    assert view.status == "completed"
    await until_webhook(aredis, settings, rid)
    r = await rec(aredis, settings, rid)
    path = Path(r[Field.DOWNLOAD_PATH])
    data = path.read_bytes()
    assert r[Field.DOWNLOAD_STATE] == "done" and path.parent == tmp_path
    assert r[Field.DOWNLOAD_SHA256] == hashlib.sha256(data).hexdigest()
    assert int(r[Field.DOWNLOAD_BYTES]) == len(data) > 0
    assert r[Field.STATUS] == "completed"  # attachments never change the status
    sent = receiver.verified[0]["data"]["download"]
    assert sent == {"state": "done", "path": str(path), "sha256": r[Field.DOWNLOAD_SHA256],
                    "bytes": len(data)}  # fmt: skip
    assert not list(tmp_path.glob(".*.part"))


async def test_oversized_download_is_refused(
    client: AsyncClient,
    start_side: StartSide,
    aredis: redis.asyncio.Redis,
    settings: Settings,
    tmp_path: Path,
) -> None:
    """A video over the size limit is not kept, and the webhook still goes out."""
    await start_side(download_dir=str(tmp_path), download_max_bytes=100)
    rid = await client.submit(REQ, webhook_url=HOOK)
    await until_webhook(aredis, settings, rid)
    r = await rec(aredis, settings, rid)
    assert r[Field.DOWNLOAD_STATE] == "dead" and "limit" in r[Field.DOWNLOAD_ERROR]
    assert not list(tmp_path.iterdir())


async def test_owed_webhook_survives_a_crash_right_after_the_end(
    client: AsyncClient,
    start_side: StartSide,
    aredis: redis.asyncio.Redis,
    settings: Settings,
) -> None:
    """The terminal step itself records the webhook owed: with no worker running at that
    moment (a crash right after), a side worker started later still delivers it (rule 4)."""
    rid = await client.submit(REQ, webhook_url=HOOK)
    s = Scripts(settings, aredis)
    await s.to_polling(rid)
    await s.finish(rid)
    assert await aredis.zscore(settings.keys.outbox, rid) is not None
    receiver = await start_side()
    await until_webhook(aredis, settings, rid)
    assert receiver.verified[0]["type"] == "generation.completed"


async def test_cancelled_request_sends_its_webhook(
    client: AsyncClient,
    start_side: StartSide,
    aredis: redis.asyncio.Redis,
    settings: Settings,
) -> None:
    """A request cancelled while pending still notifies its webhook."""
    rid = await client.submit(REQ, webhook_url=HOOK)
    assert await client.cancel(rid) == "cancelled"
    receiver = await start_side()
    await until_webhook(aredis, settings, rid)
    assert receiver.verified[0]["type"] == "generation.cancelled"


def test_webhook_age_must_fit_in_retention() -> None:
    """Records must outlive their webhook retries."""
    from genqueue.worker.config import WebhookSettings, WorkerConfig

    with pytest.raises(ValueError, match="retention"):
        WorkerConfig(settings=Settings(retention_s=3600), webhooks=WebhookSettings(max_age_s=86400))
