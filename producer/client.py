"""The async producer client: submit, get, wait, cancel, stats."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, Literal

import redis.asyncio

from genqueue.producer.connections import async_redis
from genqueue.producer.contracts import Cancel
from genqueue.producer.durability import AsyncDurableWriter, DurableReply, create_policy
from genqueue.producer.errors import RequestNotFound, WaitTimeout, WriteNotDurable
from genqueue.producer.keys import Tag
from genqueue.producer.models import GenerationRequest
from genqueue.producer.record import RequestView, read_full
from genqueue.producer.replies import CancelReply, CreateReply
from genqueue.producer.scripts import AsyncScripts, ms
from genqueue.producer.settings import Settings
from genqueue.producer.stats import Stats, parse_stats, redis_time_ms, stats_commands
from genqueue.producer.submission import prepare
from genqueue.producer.waiters import AsyncDoneListener

CancelOutcome = Literal["cancelled", "requested", "already_finished"]

#: How long ``wait()`` waits for its subscription before relying on re-reads alone.
_SUBSCRIBE_TIMEOUT_S = 5.0


def cancel_outcome(reply: CancelReply, request_id: str) -> CancelOutcome:
    """Interpret the cancel script's reply."""
    if reply.tag is Tag.MISSING:
        raise RequestNotFound(request_id)
    if reply.tag is Tag.CANCELLED:
        return "cancelled"
    if reply.tag is Tag.REQUESTED:
        return "requested"
    return "already_finished"


def checked_create(out: DurableReply[CreateReply]) -> str:
    """The created request's id; ``WriteNotDurable`` if its replica wait timed out."""
    request_id = out.reply.request_id
    if not out.acknowledged:
        raise WriteNotDurable(request_id, out.wait)
    return request_id


class AsyncClient:
    """What an asyncio backend uses to enqueue generations and hear back.

    One client per process is enough (it pools connections and shares one pub/sub
    subscription among all waiters); close it with ``aclose()`` or ``async with``.
    """

    def __init__(
        self, settings: Settings | None = None, *, client: redis.asyncio.Redis | None = None
    ):
        self.settings = settings or Settings.from_env()
        self._redis = client or async_redis(
            self.settings.redis_url, decode_responses=True, socket_connect_timeout=5
        )
        self._owns_redis = client is None
        self._keys = self.settings.keys
        self._scripts = AsyncScripts(self._redis)
        self._durable = AsyncDurableWriter(self._redis, create_policy(self.settings))
        self._listener = AsyncDoneListener(self._redis, self._keys)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop the shared subscription and release connections."""
        await self._listener.aclose()
        if self._owns_redis:
            await self._redis.aclose()

    async def submit(
        self,
        request: GenerationRequest | dict[str, Any],
        *,
        idempotency_key: str | None = None,
        webhook_url: str | None = None,
        deadline_s: float | None = None,
    ) -> str:
        """Validate and enqueue a request; return its id (the same id again for a known key).

        Raises ``InvalidRequest`` (nothing written) for bad input, ``WriteNotDurable`` when the
        deployment has replicas and none acknowledged the creation in time.
        """
        sub = prepare(
            self.settings,
            request,
            idempotency_key=idempotency_key,
            webhook_url=webhook_url,
            deadline_s=deadline_s,
        )
        return checked_create(await self._durable.write(sub.create))

    async def get(self, request_id: str) -> RequestView:
        """The current record; raises ``RequestNotFound``."""
        raw = await read_full(self._redis, self._keys, request_id)
        if not raw:
            raise RequestNotFound(request_id)
        return RequestView.from_hash(raw)

    async def wait(self, request_id: str, timeout_s: float | None = None) -> RequestView:
        """Wait until the request is terminal (woken by pub/sub, re-read as a backstop).

        Raises ``WaitTimeout`` after ``timeout_s`` (None: no limit), ``RequestNotFound``.
        """
        loop = asyncio.get_running_loop()
        deadline = None if timeout_s is None else loop.time() + timeout_s
        ev = self._listener.register(request_id)
        try:
            await self._listener.ensure_subscribed(
                _SUBSCRIBE_TIMEOUT_S if timeout_s is None else min(timeout_s, _SUBSCRIBE_TIMEOUT_S)
            )
            while True:
                ev.clear()
                view = await self.get(request_id)
                if view.is_terminal:
                    return view
                pause = self.settings.wait_recheck_s
                if deadline is not None:
                    remaining = deadline - loop.time()
                    if remaining <= 0:
                        raise WaitTimeout(request_id, timeout_s or 0.0, view.status)
                    pause = min(pause, remaining)
                with contextlib.suppress(TimeoutError):  # not wait_for: see waiters.py
                    async with asyncio.timeout(pause):
                        await ev.wait()
        finally:
            self._listener.unregister(request_id, ev)

    async def cancel(self, request_id: str) -> CancelOutcome:
        """Cancel: at once if pending or already created upstream, else at the next step."""
        view = await self.get(request_id)
        c = Cancel(
            request_id=request_id,
            idempotency_key=view.idempotency_key,
            tracking_limit_ms=ms(self.settings.tracking_limit_s),
        ).call(self.settings)
        return cancel_outcome(await self._scripts.run(c), request_id)

    async def resume_creates(self) -> bool:
        """End a pause of upstream creates now (after fixing the key or credits); True if
        creates were paused."""
        return bool(await self._redis.delete(self._keys.pause))

    async def stats(self) -> Stats:
        """A snapshot of queue depth, in-flight counts and cluster totals."""
        now = redis_time_ms(await self._redis.time())
        async with self._redis.pipeline(transaction=False) as pipe:
            for cmd in stats_commands(self._keys, now):
                pipe.execute_command(*cmd)
            replies = await pipe.execute()
        return parse_stats(replies, now)

    @property
    def redis(self) -> redis.asyncio.Redis:
        return self._redis
