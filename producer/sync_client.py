"""The blocking producer client, built on redis-py's sync API (safe inside a running event
loop, e.g. a Django async view, where ``asyncio.run`` would fail)."""

from __future__ import annotations

import time
from typing import Any

import redis

from genqueue.producer.admission import admit_all_sync
from genqueue.producer.client import CancelOutcome, cancel_outcome, checked_create
from genqueue.producer.connections import sync_redis
from genqueue.producer.contracts import Cancel
from genqueue.producer.durability import SyncDurableWriter, create_policy
from genqueue.producer.errors import RequestNotFound, WaitTimeout
from genqueue.producer.keys import DEFAULT_TENANT
from genqueue.producer.models import GenerationRequest, Priority
from genqueue.producer.record import RequestView, read_full_sync
from genqueue.producer.scripts import SyncScripts, ms
from genqueue.producer.settings import Settings
from genqueue.producer.stats import Stats, parse_stats, redis_time_ms, stats_commands
from genqueue.producer.submission import prepare, visible_to
from genqueue.producer.waiters import SyncDoneListener

_SUBSCRIBE_TIMEOUT_S = 5.0


class Client:
    """What a synchronous backend (Django, Flask, scripts) uses; thread-safe."""

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        client: redis.Redis | None = None,
        tenant: str | None = None,
    ):
        self.settings = settings or Settings.from_env()
        #: The tenant this client submits for and is scoped to (None: submits as
        #: ``default`` and reads every tenant's requests: the producer is trusted).
        self.tenant = tenant
        self._redis = client or sync_redis(
            self.settings.redis_url, decode_responses=True, socket_connect_timeout=5
        )
        self._owns_redis = client is None
        self._keys = self.settings.keys
        self._scripts = SyncScripts(self._redis)
        self._durable = SyncDurableWriter(self._redis, create_policy(self.settings))
        self._listener = SyncDoneListener(self._redis, self._keys)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the shared subscription and release connections."""
        self._listener.close()
        if self._owns_redis:
            self._redis.close()

    def submit(
        self,
        request: GenerationRequest | dict[str, Any],
        *,
        idempotency_key: str | None = None,
        webhook_url: str | None = None,
        deadline_s: float | None = None,
        tenant: str | None = None,
        priority: Priority = "normal",
    ) -> str:
        """Validate and enqueue a request; return its id (see ``AsyncClient.submit``)."""
        sub = prepare(
            self.settings,
            request,
            idempotency_key=idempotency_key,
            webhook_url=webhook_url,
            deadline_s=deadline_s,
            tenant=tenant or self.tenant or DEFAULT_TENANT,
            priority=priority,
        )
        return checked_create(self._durable.write(sub.create))

    def get(self, request_id: str, *, tenant: str | None = None) -> RequestView:
        """The current record; raises ``RequestNotFound`` (also for another tenant's request
        when scoped to ``tenant``, or to the client's own)."""
        raw = read_full_sync(self._redis, self._keys, request_id)
        view = RequestView.from_hash(raw) if raw else None
        if view is None or not visible_to(view, tenant or self.tenant):
            raise RequestNotFound(request_id)  # not "forbidden": ids are not confirmed
        return view

    def wait(
        self, request_id: str, timeout_s: float | None = None, *, tenant: str | None = None
    ) -> RequestView:
        """Block until the request is terminal (see ``AsyncClient.wait``)."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        ev = self._listener.register(request_id)
        try:
            self._listener.ensure_subscribed(
                _SUBSCRIBE_TIMEOUT_S if timeout_s is None else min(timeout_s, _SUBSCRIBE_TIMEOUT_S)
            )
            while True:
                ev.clear()
                view = self.get(request_id, tenant=tenant)
                if view.is_terminal:
                    return view
                pause = self.settings.wait_recheck_s
                if deadline is not None:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise WaitTimeout(request_id, timeout_s or 0.0, view.status)
                    pause = min(pause, remaining)
                ev.wait(pause)
        finally:
            self._listener.unregister(request_id, ev)

    def cancel(self, request_id: str, *, tenant: str | None = None) -> CancelOutcome:
        """Cancel (see ``AsyncClient.cancel``)."""
        view = self.get(request_id, tenant=tenant)
        c = Cancel(
            request_id=request_id,
            idempotency_key=view.idempotency_key,
            tenant=view.tenant,
            tracking_limit_ms=ms(self.settings.tracking_limit_s),
        ).call(self.settings)
        return cancel_outcome(self._scripts.run(c), request_id)

    def resume_creates(self) -> bool:
        """End a pause of upstream creates now (after fixing the key or credits) and admit the
        requests that waited for it; True if creates were paused."""
        was_paused = bool(self._redis.delete(self._keys.pause))
        admit_all_sync(self._redis, self._keys)
        return was_paused

    def stats(self, *, tenant: str | None = None) -> Stats:
        """A snapshot of queue depth, in-flight counts and totals: the cluster's, or one
        tenant's own (``tenant``, else the client's own) counts and totals."""
        now = redis_time_ms(self._redis.time())
        with self._redis.pipeline(transaction=False) as pipe:
            for cmd in stats_commands(self._keys, now):
                pipe.execute_command(*cmd)  # type: ignore[no-untyped-call]
            replies = pipe.execute()
        return parse_stats(replies, now, tenant=tenant or self.tenant)
