"""Outbound calls cannot pin a worker: memory, total deadlines, attempts counted before the
call, a per-host cap, partial files removed (issue 18)."""

from __future__ import annotations

import asyncio
import tracemalloc
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio

from genqueue.producer.client import AsyncClient
from genqueue.producer.contracts import Finish
from genqueue.producer.keys import Field
from genqueue.producer.settings import Settings
from genqueue.worker.outbound.guard import GuardedTransport
from genqueue.worker.outbound.post import post_status
from genqueue.worker.outbound.resolver import StaticResolver
from genqueue.worker.runtime import Runtime
from genqueue.worker.side_effects import run_side
from genqueue.worker.upstream import make_transport
from tests.conftest import StartWorker, worker_config
from tests.faults import RouterTransport
from tests.test_side_effects import REQ, SECRET, Receiver, rec, until_webhook
from tests.test_transitions import Scripts

LOCAL = "127.0.0.0/8"
RESOLVER = {h: ["127.0.0.1"] for h in ("slow.test", "fast.test", "hooks.test")}


StartOutbound = Callable[..., Awaitable[None]]


@pytest.fixture
def start_outbound(start_worker: StartWorker, settings: Settings, sim_app: Any) -> StartOutbound:
    """``await start_outbound(receivers, **overrides)``: a worker with a side worker whose
    outbound calls go to ``receivers`` (host: transport; ``sim``, the simulator, unless
    given), hosts resolved to 127.0.0.1, loopback allowed, webhooks signed with ``SECRET``."""

    async def start(receivers: dict[str, httpx.AsyncBaseTransport], **overrides: Any) -> None:
        routes = {"sim": httpx.ASGITransport(app=sim_app), **receivers}
        await start_worker(
            side_transport=RouterTransport(routes),
            with_side=True,
            resolver=StaticResolver(RESOLVER),
            settings=replace(settings, outbound_allow_nets=LOCAL),
            webhook_secret=SECRET,
            **overrides,
        )

    return start


async def _start_gone(start_outbound: StartOutbound, **overrides: Any) -> None:
    """A worker whose webhooks go to ``hooks.test``, a receiver answering 410 (gone: the
    delivery is dead-lettered at once)."""
    await start_outbound({"hooks.test": Receiver([410] * 10).transport}, **overrides)


class Hanging(httpx.AsyncBaseTransport):
    """A receiver that never answers; records each call's webhook-id and the most calls it
    ever had in flight at once."""

    def __init__(self) -> None:
        self.ids: list[str] = []
        self.in_flight = 0
        self.most_in_flight = 0
        self.entered = asyncio.Event()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.ids.append(request.headers.get("webhook-id", ""))
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        self.entered.set()
        try:
            await asyncio.sleep(3600)
        finally:
            self.in_flight -= 1
        raise AssertionError("unreachable")


async def _serve_forever_body(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, trickle: bool
) -> None:
    try:
        await reader.readuntil(b"\r\n\r\n")
        if trickle:  # one byte of the status line at a time, never finishing it
            for b in b"HTTP/1.1 200 OK\r\n" * 1000:
                writer.write(bytes([b]))
                await writer.drain()
                await asyncio.sleep(0.05)
            return
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % (300 << 20))
        chunk = bytes(1 << 16)
        for _ in range((300 << 20) // len(chunk)):
            writer.write(chunk)
            await writer.drain()
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    finally:
        writer.close()


@pytest.fixture
async def big_and_trickling() -> AsyncIterator[tuple[int, int]]:
    """Ports of two real receivers on 127.0.0.1: one answering 300 MB, one trickling."""
    big = await asyncio.start_server(
        lambda r, w: _serve_forever_body(r, w, trickle=False), "127.0.0.1", 0
    )
    slow = await asyncio.start_server(
        lambda r, w: _serve_forever_body(r, w, trickle=True), "127.0.0.1", 0
    )
    yield big.sockets[0].getsockname()[1], slow.sockets[0].getsockname()[1]
    for s in (big, slow):
        s.close()


def _client(kind: str) -> httpx.AsyncClient:
    transport = GuardedTransport(
        make_transport(kind),  # type: ignore[arg-type]
        resolver=StaticResolver(RESOLVER),
        allow=Settings(outbound_allow_nets=LOCAL).allow_nets,
    )
    return httpx.AsyncClient(transport=transport, timeout=10.0, trust_env=False)


@pytest.mark.parametrize("kind", ["httpx", "aiohttp"])
async def test_a_300_mb_answer_costs_no_memory(kind: str, big_and_trickling: Any) -> None:
    """A receiver answering 300 MB costs the worker less than 20 MB (tracemalloc peak): only
    the status is read."""
    port, _ = big_and_trickling
    async with _client(kind) as client:
        tracemalloc.start()
        try:
            status = await post_status(
                client, f"http://fast.test:{port}/hook", b"{}", {}, total_s=10
            )
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert status == 200 and peak < 20 << 20


@pytest.mark.parametrize("kind", ["httpx", "aiohttp"])
async def test_a_trickling_receiver_is_cut_at_the_total_deadline(
    kind: str, big_and_trickling: Any
) -> None:
    """A receiver trickling a byte at a time (each read within the 10 s read timeout) is cut
    at the call's total deadline."""
    _, port = big_and_trickling
    async with _client(kind) as client:
        call = asyncio.create_task(
            post_status(client, f"http://slow.test:{port}/hook", b"{}", {}, total_s=0.3)
        )
        done, _ = await asyncio.wait([call], timeout=20)
        assert done, "the call outlived its total deadline"
        assert isinstance(call.exception(), TimeoutError)


async def test_a_hanging_host_is_capped_counted_and_dead_lettered(
    client: AsyncClient,
    start_outbound: StartOutbound,
    aredis: redis.asyncio.Redis,
    settings: Settings,
) -> None:
    """Deliveries to a host that never answers take at most its per-host slots, each ends at
    the total deadline and is counted, and they are dead-lettered after their retries (the
    requests stay completed), while another host's deliveries go through."""
    hanging, fast = Hanging(), Receiver()
    await start_outbound(
        {"slow.test": hanging, "fast.test": fast.transport},
        webhook_timeout_s=0.3,
        webhook_retry_s=0.05,
        webhook_retry_cap_s=0.1,
        webhook_max_age_s=1.5,
        webhook_host_concurrency=1,
    )
    slow_ids = [await client.submit(REQ, webhook_url="http://slow.test/h") for _ in range(3)]
    fast_ids = [await client.submit(REQ, webhook_url="http://fast.test/h") for _ in range(3)]
    for rid in fast_ids:
        await until_webhook(aredis, settings, rid, "done", 30)
    for rid in slow_ids:
        await until_webhook(aredis, settings, rid, "dead", 30)
        r = await rec(aredis, settings, rid)
        assert r[Field.STATUS] == "completed"
        assert "no answer within 0.3 s" in r[Field.WEBHOOK_ERROR]
        assert int(r[Field.WEBHOOK_ATTEMPTS]) == hanging.ids.count(f"wh_{rid}") >= 1
        assert await aredis.zscore(settings.keys.dead_letters, rid) is not None
    assert hanging.most_in_flight == 1 and len(fast.verified) == 3


async def test_a_killed_attempt_is_still_counted(
    client: AsyncClient, aredis: redis.asyncio.Redis, settings: Settings
) -> None:
    """The attempt is counted before the call: a delivery task killed mid-call (arq's job
    timeout) has used one."""
    hanging = Hanging()
    rid = await client.submit(REQ, webhook_url="http://slow.test/h")
    s = Scripts(settings, aredis)
    await s.to_polling(rid)
    await s.finish(rid)
    cfg = worker_config(replace(settings, outbound_allow_nets=LOCAL), webhook_secret=SECRET)
    rt = await Runtime.start(cfg, side_transport=hanging, resolver=StaticResolver(RESOLVER))
    try:
        seq = int((await rec(aredis, settings, rid))[Field.SIDE_SEQ])
        task = asyncio.create_task(run_side(rt, rid, seq))
        await asyncio.wait_for(hanging.entered.wait(), 10)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    finally:
        await rt.close()
    r = await rec(aredis, settings, rid)
    assert r[Field.WEBHOOK_ATTEMPTS] == "1" and r[Field.WEBHOOK_STATE] == "pending"


async def test_killed_download_attempts_count_toward_giving_up(
    client: AsyncClient,
    sim_app: Any,
    aredis: redis.asyncio.Redis,
    settings: Settings,
    tmp_path: Path,
) -> None:
    """Download attempts killed mid-stream count: once they exceed download_retries the
    download is given up without another call, and no partial file is left."""
    video = SlowVideo(httpx.ASGITransport(app=sim_app))
    cfg = worker_config(settings, download_dir=str(tmp_path), download_retries=1)
    rid = await client.submit(REQ)
    s = Scripts(settings, aredis)
    await s.to_polling(rid)
    seq_now = int((await s.rec(rid))[Field.SEQ])
    url = "http://sim/_sim/files/x.mp4"
    await s.run(
        Finish(
            request_id=rid,
            expected_seq=seq_now,
            outcome="completed",
            cost_micro_usd=280_000,
            video_url=url,
            upstream_created_at=1.0,
            upstream_started_at=2.0,
            upstream_done_at=3.0,
            owe_download=True,
        )
    )
    rt = await Runtime.start(cfg, side_transport=video, resolver=StaticResolver(RESOLVER))
    try:
        seq = int((await rec(aredis, settings, rid))[Field.SIDE_SEQ])
        task = asyncio.create_task(run_side(rt, rid, seq))
        await until_true(lambda: video.video_calls == 1)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        assert not list(tmp_path.iterdir())  # the partial file went with the killed attempt
        await run_side(rt, rid, seq)  # arq re-runs the killed job
    finally:
        await rt.close()
    r = await rec(aredis, settings, rid)
    assert r[Field.DOWNLOAD_STATE] == "dead" and r[Field.DOWNLOAD_ATTEMPTS] == "2"
    assert "gave up after 1 attempts" in r[Field.DOWNLOAD_ERROR] and video.video_calls == 1


async def until_true(pred: Any) -> None:
    for _ in range(500):
        if pred():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not met in time")


class SlowVideo(httpx.AsyncBaseTransport):
    """The simulator, except that video files trickle and never finish."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner
        self.video_calls = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if not request.url.path.startswith("/_sim/files/"):
            return await self.inner.handle_async_request(request)
        self.video_calls += 1

        async def body() -> AsyncIterator[bytes]:
            yield b"x" * 1000
            await asyncio.sleep(3600)

        return httpx.Response(200, headers={"content-length": "100000"}, content=body())


async def test_a_download_slower_than_its_deadline_is_retried_then_given_up(
    client: AsyncClient,
    start_outbound: StartOutbound,
    sim_app: Any,
    aredis: redis.asyncio.Redis,
    settings: Settings,
    tmp_path: Path,
) -> None:
    """A download that outlasts its total deadline is counted, retried, given up after its
    retries with no partial file left, and the webhook then goes out."""
    video = SlowVideo(httpx.ASGITransport(app=sim_app))
    hook = Receiver()
    await start_outbound(
        {"sim": video, "hooks.test": hook.transport},
        download_dir=str(tmp_path),
        download_timeout_s=0.3,
        download_retries=2,
    )
    rid = await client.submit(REQ, webhook_url="http://hooks.test/h")
    await until_webhook(aredis, settings, rid, "done", 30)
    r = await rec(aredis, settings, rid)
    assert r[Field.DOWNLOAD_STATE] == "dead" and r[Field.DOWNLOAD_ATTEMPTS] == "2"
    assert "not done within 0.3 s" in r[Field.DOWNLOAD_ERROR]
    assert video.video_calls == 2 and not list(tmp_path.iterdir())
    assert hook.verified[0]["data"]["download"]["state"] == "dead"


async def test_dead_letters_are_bounded_by_count_and_age(
    client: AsyncClient,
    start_outbound: StartOutbound,
    aredis: redis.asyncio.Redis,
    settings: Settings,
) -> None:
    """The dead-letter set keeps at most webhook_dead_max entries, the newest."""
    await _start_gone(start_outbound, webhook_dead_max=2)
    ids = []
    for _ in range(3):
        ids.append(await client.submit(REQ, webhook_url="http://hooks.test/h"))
        await until_webhook(aredis, settings, ids[-1], "dead", 30)
    kept = await aredis.zrange(settings.keys.dead_letters, 0, -1)
    assert kept == ids[1:]


async def test_dead_letters_older_than_their_age_are_dropped(
    client: AsyncClient,
    start_outbound: StartOutbound,
    aredis: redis.asyncio.Redis,
    settings: Settings,
) -> None:
    """A dead letter older than webhook_dead_max_age_s is dropped when the next is added."""
    await _start_gone(start_outbound, webhook_dead_max_age_s=0.05)
    first = await client.submit(REQ, webhook_url="http://hooks.test/h")
    await until_webhook(aredis, settings, first, "dead", 30)
    await asyncio.sleep(0.1)
    second = await client.submit(REQ, webhook_url="http://hooks.test/h")
    await until_webhook(aredis, settings, second, "dead", 30)
    assert await aredis.zrange(settings.keys.dead_letters, 0, -1) == [second]
