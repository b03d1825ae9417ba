"""The producer clients: waits that never miss a wake-up, the sync API, stats."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from typing import Any

import pytest
import redis
import redis.asyncio

from genqueue.producer import AsyncClient, Client, RequestNotFound, Settings, WaitTimeout
from genqueue.producer.contracts import Finish
from genqueue.producer.keys import Field
from genqueue.producer.scripts import AsyncScripts
from tests.conftest import begin_submit_call, submitted

MODEL = "minimax/video-01-director"
REQ = {"model": MODEL, "prompt": "a kite over dunes"}


async def finish_directly(settings: Settings, aredis: redis.asyncio.Redis, rid: str) -> None:
    """Drive a request to `completed` with the scripts, as a worker would."""
    scripts = AsyncScripts(aredis)
    ok = await scripts.run(begin_submit_call(settings, rid))
    up = submitted(rid, ok.submit_seq, first_poll_delay_ms=10, tracking_poll_delay_ms=10)
    reply = await scripts.run(dataclasses.replace(up, upstream_created_at=None).call(settings))
    assert reply.step is not None
    done = Finish(
        request_id=rid,
        expected_seq=reply.step.seq,
        outcome="completed",
        cost_micro_usd=280_000,
        video_url="https://v",
    )
    await scripts.run(done.call(settings))


async def test_wait_returns_at_once_for_a_finished_request(
    client: AsyncClient, settings: Settings, aredis: redis.asyncio.Redis
) -> None:
    """A request that finished before wait() began is returned at once (read after subscribe)."""
    rid = await client.submit(REQ)
    await finish_directly(settings, aredis, rid)
    view = await client.wait(rid, timeout_s=5)
    assert view.status == "completed" and view.cost_micro_usd == 280_000


async def test_wait_is_woken_by_pubsub_not_by_rereads(
    settings: Settings, aredis: redis.asyncio.Redis
) -> None:
    """A waiter wakes on the done message long before its backstop re-read would run."""
    slow_recheck = Settings(
        redis_url=settings.redis_url, key_prefix=settings.key_prefix, wait_recheck_s=3600
    )
    async with AsyncClient(slow_recheck) as client:
        rid = await client.submit(REQ)
        waiter = asyncio.create_task(client.wait(rid, timeout_s=30))
        await asyncio.sleep(0.2)
        assert not waiter.done()
        await finish_directly(settings, aredis, rid)
        view = await asyncio.wait_for(waiter, 10)
    assert view.status == "completed"


async def test_backstop_reread_finds_a_change_without_a_message(
    settings: Settings, aredis: redis.asyncio.Redis
) -> None:
    """If the done message is lost, the periodic re-read still ends the wait."""
    fast = Settings(
        redis_url=settings.redis_url, key_prefix=settings.key_prefix, wait_recheck_s=0.05
    )
    async with AsyncClient(fast) as client:
        rid = await client.submit(REQ)
        waiter = asyncio.create_task(client.wait(rid, timeout_s=30))
        await asyncio.sleep(0.1)
        await aredis.hset(settings.keys.record(rid), Field.STATUS, "failed")  # no PUBLISH
        view = await asyncio.wait_for(waiter, 10)
    assert view.status == "failed"


async def test_many_waiters_share_one_subscription(
    client: AsyncClient, settings: Settings, aredis: redis.asyncio.Redis
) -> None:
    """Fifty concurrent waits use one pattern subscription, not a connection each."""
    ids = [await client.submit(REQ) for _ in range(50)]
    waiters = [asyncio.create_task(client.wait(i, timeout_s=30)) for i in ids]
    await asyncio.sleep(0.3)
    assert await aredis.execute_command("PUBSUB", "NUMPAT") == 1
    clients = await aredis.client_list()
    assert sum(1 for c in clients if int(c.get("psub", 0)) > 0) == 1
    for rid in ids:
        await finish_directly(settings, aredis, rid)
    views = await asyncio.gather(*waiters)
    assert {v.status for v in views} == {"completed"}


async def test_wait_times_out_with_the_current_status(client: AsyncClient) -> None:
    """wait() raises WaitTimeout naming the status it last saw."""
    rid = await client.submit(REQ)
    with pytest.raises(WaitTimeout, match="pending"):
        await client.wait(rid, timeout_s=0.2)


async def test_unknown_id_raises_not_found(client: AsyncClient) -> None:
    """get, wait and cancel of an unknown id raise RequestNotFound."""
    for op in (client.get, client.cancel):
        with pytest.raises(RequestNotFound):
            await op("no-such-id")
    with pytest.raises(RequestNotFound):
        await client.wait("no-such-id", timeout_s=1)


def test_sync_client_full_cycle(settings: Settings) -> None:
    """The blocking client submits, reads, waits, cancels and reports stats."""
    with Client(settings) as gq:
        rid = gq.submit(REQ, idempotency_key="sync-1", deadline_s=60)
        assert gq.submit(REQ, idempotency_key="sync-1") == rid
        view = gq.get(rid)
        assert view.status == "pending" and view.request == REQ
        assert gq.stats().requests_by_status["pending"] == 1
        result: dict[str, Any] = {}

        def waiter() -> None:
            result["view"] = gq.wait(rid, timeout_s=10)

        t = threading.Thread(target=waiter)
        t.start()
        assert gq.cancel(rid) == "cancelled"
        t.join(10)
        assert result["view"].status == "cancelled"
        # Never accepted upstream: counted under "other" (a bound on the totals).
        assert gq.stats().finished == {("other", "cancelled"): 1}


async def test_sync_client_works_inside_a_running_event_loop(settings: Settings) -> None:
    """The sync client works from code running inside an event loop (e.g. a Django async view)."""
    with Client(settings) as gq:
        rid = gq.submit(REQ)
        assert gq.get(rid).status == "pending"
        assert gq.cancel(rid) == "cancelled"
        assert gq.wait(rid, timeout_s=5).status == "cancelled"


def test_unreachable_redis_raises_a_redis_error() -> None:
    """A client pointed at a closed port fails with a Redis connection error, not a hang."""
    from genqueue.local_redis import free_port

    closed = Settings(redis_url=f"redis://127.0.0.1:{free_port()}/0")
    with Client(closed) as gq, pytest.raises(redis.ConnectionError):
        gq.submit(REQ)


async def test_event_stream_can_be_consumed_with_a_consumer_group(
    client: AsyncClient, settings: Settings, aredis: redis.asyncio.Redis
) -> None:
    """A consumer group sees each transition once, in order, as docs/events.md describes."""
    stream = settings.keys.events
    await aredis.xgroup_create(stream, "billing", id="0", mkstream=True)
    rid = await client.submit(REQ)
    await finish_directly(settings, aredis, rid)
    got = await aredis.xreadgroup("billing", "c1", {stream: ">"}, count=100)
    entries = got[0][1]
    assert [e["status"] for _, e in entries] == ["pending", "submitting", "queued", "completed"]
    assert entries[2][1]["upstream_id"] == "up-1" and all(e["id"] == rid for _, e in entries)
    await aredis.xack(stream, "billing", *[eid for eid, _ in entries])
    assert await aredis.xreadgroup("billing", "c1", {stream: ">"}, count=100) == []


@pytest.mark.parametrize("ticks", range(6))
async def test_a_wait_cancelled_as_its_subscription_lands_is_cancelled(
    client: AsyncClient, ticks: int
) -> None:
    """A ``wait()`` cancelled in the same few loop ticks as the subscription is confirmed ends
    cancelled instead of waiting on (Python 3.11's ``asyncio.wait_for`` swallows such a
    cancel; a demo interrupted at that moment hung until its videos finished)."""
    rid = await client.submit(REQ)
    listener = client._listener
    hold = asyncio.Event()
    # A listener task that never confirms by itself: the test says when the subscription lands.
    listener._task = asyncio.create_task(hold.wait())
    try:
        waiter = asyncio.create_task(client.wait(rid, timeout_s=30))
        await asyncio.sleep(0.05)  # the wait is now waiting for the subscription
        listener._subscribed.set()
        for _ in range(ticks):
            await asyncio.sleep(0)
        waiter.cancel()
        done, _ = await asyncio.wait({waiter}, timeout=2)
        assert done and waiter.cancelled()
    finally:
        hold.set()
        listener._subscribed.clear()


async def test_a_cancel_landing_while_the_client_closes_is_not_absorbed(
    client: AsyncClient,
) -> None:
    """``aclose()`` cancelled while its listener task is still winding down ends cancelled
    (it waits for the listener without taking the listener's CancelledError for its own)."""
    listener = client._listener

    async def slow_to_stop() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            await asyncio.sleep(0.2)
            raise

    stopping = listener._task = asyncio.create_task(slow_to_stop())
    await asyncio.sleep(0)
    closing = asyncio.create_task(listener.aclose())
    await asyncio.sleep(0.05)
    closing.cancel()
    done, _ = await asyncio.wait({closing}, timeout=2)
    assert done and closing.cancelled()
    await asyncio.wait({stopping}, timeout=2)
