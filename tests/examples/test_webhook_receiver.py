"""examples/webhook_receiver.py: verifies Standard Webhooks signatures, handles each id once."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import redis.asyncio
from standardwebhooks import Webhook

from genqueue.producer import AsyncClient, Settings
from genqueue.producer.keys import Field
from genqueue.worker.outbound.resolver import StaticResolver
from genqueue.worker.side_effects import webhook_payload
from tests.conftest import StartWorker
from tests.examples import load_example
from tests.faults import RouterTransport

receiver = load_example("webhook_receiver")

SECRET = "whsec_" + base64.b64encode(b"genqueue-example-secret-0123").decode()
OTHER_SECRET = "whsec_" + base64.b64encode(b"some-other-secret-456789abcd").decode()
URL = "http://hooks.test/hooks/genqueue"
REQ = {"model": "minimax/video-01-director", "prompt": "a lantern on water"}


class Recorder:
    """The handler under test: remembers every event it was given."""

    def __init__(self, fail_times: int = 0) -> None:
        self.events: list[dict[str, Any]] = []
        self.fail_times = fail_times

    async def __call__(self, event: dict[str, Any]) -> None:
        if self.fail_times:
            self.fail_times -= 1
            raise RuntimeError("the database is down")
        self.events.append(event)


@pytest.fixture
def handler() -> Recorder:
    return Recorder()


@pytest.fixture
async def http(handler: Recorder) -> AsyncIterator[httpx.AsyncClient]:
    """The receiver app behind an in-process HTTP client."""
    app = receiver.create_app(SECRET, handler)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app)) as c:
        yield c


def signed(
    body: str, msg_id: str = "wh_1", at: datetime | None = None, secret: str = SECRET
) -> dict[str, str]:
    """Headers of a delivery of ``body`` signed as genqueue signs it."""
    at = at or datetime.now(UTC)
    return {
        "content-type": "application/json",
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": Webhook(secret).sign(msg_id, at, body),
    }


EVENT = json.dumps(
    {
        "type": "generation.completed",
        "timestamp": "2025-01-01T00:00:00Z",
        "data": {"id": "r-1", "status": "completed", "cost_usd": "0.280000"},
    },
    separators=(",", ":"),
)


async def test_signed_event_is_handled_once_and_a_replay_is_acknowledged(
    http: httpx.AsyncClient, handler: Recorder
) -> None:
    """A validly signed event is handled once; a second delivery of the same webhook-id is
    answered 200 "duplicate" without calling the handler again."""
    headers = signed(EVENT, "wh_r-1")
    first = await http.post(URL, content=EVENT, headers=headers)
    assert first.status_code == 200 and first.json()["status"] == "handled"
    replay = await http.post(URL, content=EVENT, headers=signed(EVENT, "wh_r-1"))
    assert replay.status_code == 200 and replay.json()["status"] == "duplicate"
    assert [e["data"]["id"] for e in handler.events] == ["r-1"]
    other = await http.post(URL, content=EVENT, headers=signed(EVENT, "wh_r-2"))
    assert other.json()["status"] == "handled" and len(handler.events) == 2


@pytest.mark.parametrize(
    "case",
    ["tampered_body", "stale_timestamp", "future_timestamp", "wrong_secret", "no_signature",
     "garbage_signature", "not_json"],
)  # fmt: skip
async def test_bad_deliveries_are_rejected_with_400(
    http: httpx.AsyncClient, handler: Recorder, case: str
) -> None:
    """A tampered body, a timestamp over 5 minutes off, a foreign secret, a missing or
    malformed signature and a non-JSON body are refused with 400 and never handled."""
    body, headers = EVENT, signed(EVENT)
    if case == "tampered_body":
        body = EVENT.replace("0.280000", "0.000000")
    elif case == "stale_timestamp":
        headers = signed(EVENT, at=datetime.now(UTC) - timedelta(minutes=10))
    elif case == "future_timestamp":
        headers = signed(EVENT, at=datetime.now(UTC) + timedelta(minutes=10))
    elif case == "wrong_secret":
        headers = signed(EVENT, secret=OTHER_SECRET)
    elif case == "no_signature":
        del headers["webhook-signature"]
    elif case == "garbage_signature":
        headers["webhook-signature"] = "v1"
    elif case == "not_json":
        body = "not json"
        headers = signed(body)
    resp = await http.post(URL, content=body, headers=headers)
    assert resp.status_code == 400, resp.text
    assert "webhook rejected" in resp.json()["error"]
    assert handler.events == []
    # A rejected delivery does not use up its webhook-id: the genuine one is still handled.
    genuine = await http.post(URL, content=EVENT, headers=signed(EVENT))
    assert genuine.json()["status"] == "handled" and len(handler.events) == 1


async def test_a_failing_handler_answers_500_and_the_retry_is_handled() -> None:
    """When the handler raises, the receiver answers 500 and forgets the id, so the sender's
    retry of the same webhook-id is handled."""
    handler = Recorder(fail_times=1)
    app = receiver.create_app(SECRET, handler)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app)) as http:
        failed = await http.post(URL, content=EVENT, headers=signed(EVENT, "wh_x"))
        assert failed.status_code == 500
        retried = await http.post(URL, content=EVENT, headers=signed(EVENT, "wh_x"))
        assert retried.json()["status"] == "handled"
    assert len(handler.events) == 1


def test_seen_ids_stay_bounded() -> None:
    """The memory of handled ids keeps only the newest ``max_entries``."""
    seen = receiver.SeenIds(max_entries=2)
    assert seen.claim("a") and seen.claim("b") and not seen.claim("a")
    assert seen.claim("c")  # evicts "a"
    assert seen.claim("a") and not seen.claim("c")


async def test_a_real_record_built_by_webhook_payload_is_accepted(
    http: httpx.AsyncClient,
    handler: Recorder,
    client: AsyncClient,
    start_worker: StartWorker,
    aredis: redis.asyncio.Redis,
    settings: Settings,
) -> None:
    """The body genqueue's worker builds (``webhook_payload`` of a completed ``RequestView``),
    signed as the worker signs it, is accepted and handed over with its record."""
    await start_worker()
    rid = await client.submit(REQ)
    view = await client.wait(rid, 20)
    raw = await aredis.hgetall(settings.keys.record(rid))  # type: ignore[misc]
    now = datetime.now(UTC)
    body = webhook_payload(view, raw, now)
    resp = await http.post(URL, content=body.encode(), headers=signed(body, f"wh_{rid}", now))
    assert resp.status_code == 200 and resp.json()["status"] == "handled"
    [event] = handler.events
    assert event["type"] == "generation.completed"
    assert event["data"]["id"] == rid and event["data"]["cost_usd"] == str(view.cost_usd)


async def test_a_worker_delivers_to_the_receiver_exactly_once(
    client: AsyncClient,
    start_worker: StartWorker,
    sim_app: Any,
    aredis: redis.asyncio.Redis,
    settings: Settings,
) -> None:
    """An in-process genqueue worker with the same secret delivers a finished request's
    webhook to the receiver app, which verifies it and handles it once."""
    handler = Recorder()
    app = receiver.create_app(SECRET, handler)
    routes: dict[str, httpx.AsyncBaseTransport] = {
        "sim": httpx.ASGITransport(app=sim_app),
        "hooks.test": httpx.ASGITransport(app=app),
    }
    await start_worker(
        side_transport=RouterTransport(routes),
        with_side=True,
        webhook_secret=SECRET,
        # The receiver runs in-process: its name resolves to loopback, opened explicitly.
        resolver=StaticResolver({"hooks.test": ["127.0.0.1"]}),
        settings=replace(settings, outbound_allow_nets="127.0.0.0/8"),
    )
    rid = await client.submit(REQ, webhook_url=URL)
    await client.wait(rid, 20)
    key = settings.keys.record(rid)
    for _ in range(500):
        if await aredis.hget(key, Field.WEBHOOK_STATE) == "done":  # type: ignore[misc]
            break
        await asyncio.sleep(0.02)
    else:
        raise AssertionError("the webhook was not delivered")
    assert [(e["type"], e["data"]["id"]) for e in handler.events] == [("generation.completed", rid)]
