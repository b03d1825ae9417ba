"""The async producer client: submit, get, wait, cancel, stats."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, Literal

import redis.asyncio

from genqueue.producer.admission import AsyncAdmission
from genqueue.producer.connections import async_redis
from genqueue.producer.contracts import Cancel
from genqueue.producer.durability import AsyncDurableWriter, DurableReply, create_policy
from genqueue.producer.errors import RequestNotFound, WaitTimeout, WriteNotDurable
from genqueue.producer.keys import DEFAULT_TENANT, Tag
from genqueue.producer.models import GenerationRequest, Priority
from genqueue.producer.record import RequestView, read_full
from genqueue.producer.replies import CancelReply, CreateReply
from genqueue.producer.scripts import AsyncScripts, ms
from genqueue.producer.settings import Settings
from genqueue.producer.stats import Stats, parse_stats, redis_time_ms, stats_commands
from genqueue.producer.submission import created_id, prepare, visible_to
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
    """The created request's id; ``UnknownTenant`` if its tenant is not configured (nothing
    was written), ``WriteNotDurable`` if its replica wait timed out."""
    request_id = created_id(out.reply)
    if not out.acknowledged:
        raise WriteNotDurable(request_id, out.wait)
    return request_id


class AsyncClient:
    """What an asyncio backend uses to enqueue generations and hear back.

    One client per process is enough (it pools connections and shares one pub/sub
    subscription among all waiters); close it with ``aclose()`` or ``async with``.
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        client: redis.asyncio.Redis | None = None,
        tenant: str | None = None,
    ):
        self.settings = settings or Settings.from_env()
        #: The tenant this client submits for and is scoped to (None: submits as
        #: ``default`` and reads every tenant's requests: the producer is trusted). Each
        #: call may name another with ``tenant=``.
        self.tenant = tenant
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
        tenant: str | None = None,
        priority: Priority = "normal",
    ) -> str:
        """Validate and enqueue a request; return its id (the same id again for a known key).

        ``priority`` orders admission among the tenant's waiting requests (then the earliest
        deadline). Raises ``InvalidRequest`` (nothing written) for bad input, ``UnknownTenant``
        for a tenant that is not configured (``tenant``: else the client's, else ``default``),
        ``QueueFull`` when the tenant's admission queue holds its ``max_waiting``,
        ``WriteNotDurable`` when the deployment has replicas and none acknowledged the
        creation in time.
        """
        sub = prepare(
            self.settings,
            request,
            idempotency_key=idempotency_key,
            webhook_url=webhook_url,
            deadline_s=deadline_s,
            tenant=tenant or self.tenant or DEFAULT_TENANT,
            priority=priority,
        )
        return checked_create(await self._durable.write(sub.create))

    async def get(self, request_id: str, *, tenant: str | None = None) -> RequestView:
        """The current record; raises ``RequestNotFound`` (also for another tenant's request
        when scoped to ``tenant``, or to the client's own)."""
        raw = await read_full(self._redis, self._keys, request_id)
        view = RequestView.from_hash(raw) if raw else None
        if view is None or not visible_to(view, tenant or self.tenant):
            raise RequestNotFound(request_id)  # not "forbidden": ids are not confirmed
        return view

    async def wait(
        self, request_id: str, timeout_s: float | None = None, *, tenant: str | None = None
    ) -> RequestView:
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
                view = await self.get(request_id, tenant=tenant)
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

    async def cancel(self, request_id: str, *, tenant: str | None = None) -> CancelOutcome:
        """Cancel: at once if pending or already created upstream, else at the next step."""
        view = await self.get(request_id, tenant=tenant)
        c = Cancel(
            request_id=request_id,
            idempotency_key=view.idempotency_key,
            tenant=view.tenant,
            tracking_limit_ms=ms(self.settings.tracking_limit_s),
        ).call(self.settings)
        return cancel_outcome(await self._scripts.run(c), request_id)

    async def resume_creates(self) -> bool:
        """End a pause of upstream creates now (after fixing the key or credits) and admit the
        requests that waited for it; True if creates were paused."""
        was_paused = bool(await self._redis.delete(self._keys.pause))
        await AsyncAdmission(self._redis, self._keys).admit_all()
        return was_paused

    async def stats(self, *, tenant: str | None = None) -> Stats:
        """A snapshot of queue depth, in-flight counts and totals: the cluster's, or one
        tenant's own (``tenant``, else the client's own) counts and totals."""
        now = redis_time_ms(await self._redis.time())
        async with self._redis.pipeline(transaction=False) as pipe:
            for cmd in stats_commands(self._keys, now):
                pipe.execute_command(*cmd)
            replies = await pipe.execute()
        return parse_stats(replies, now, tenant=tenant or self.tenant)

    @property
    def redis(self) -> redis.asyncio.Redis:
        return self._redis
