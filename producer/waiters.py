"""Wake-ups for ``wait()``: one shared pattern subscription per client, many waiters.

The order that loses no wake-up (architecture rule 8): subscribe, *then* read the record, then
wait — with a periodic re-read as a backstop for a message lost while reconnecting.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from typing import Any

import redis
import redis.asyncio
import structlog

from genqueue.producer.keys import Keys

log = structlog.get_logger(__name__)

_RECONNECT_DELAY_S = 0.5


def _channel_id(keys: Keys, msg: dict[str, Any]) -> str | None:
    if msg.get("type") != "pmessage":
        return None
    channel = msg["channel"]
    if isinstance(channel, bytes):
        channel = channel.decode()
    prefix = keys.done_channel("")
    return str(channel)[len(prefix) :] if str(channel).startswith(prefix) else None


class AsyncDoneListener:
    """Dispatches ``{prefix}:done:{id}`` messages to asyncio waiters."""

    def __init__(self, client: redis.asyncio.Redis, keys: Keys) -> None:
        self._client = client
        self._keys = keys
        self._waiters: dict[str, set[asyncio.Event]] = {}
        self._subscribed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def register(self, request_id: str) -> asyncio.Event:
        ev = asyncio.Event()
        self._waiters.setdefault(request_id, set()).add(ev)
        return ev

    def unregister(self, request_id: str, ev: asyncio.Event) -> None:
        waiters = self._waiters.get(request_id)
        if waiters is not None:
            waiters.discard(ev)
            if not waiters:
                del self._waiters[request_id]

    async def ensure_subscribed(self, timeout_s: float) -> bool:
        """Start the listener if needed; True once the subscription is confirmed."""
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="genqueue-done-listener")
        # asyncio.timeout, not wait_for: on Python 3.11 wait_for swallows a cancel that lands
        # in the tick its inner wait ends (python/cpython#86296), and a wait() cancelled as
        # the subscription was confirmed went on waiting for its video.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                await self._subscribed.wait()
        return self._subscribed.is_set()

    async def _run(self) -> None:
        while True:
            pubsub = self._client.pubsub()
            try:
                await pubsub.psubscribe(self._keys.done_pattern)
                while True:
                    msg = await pubsub.get_message(timeout=1.0)
                    if msg is None:
                        continue
                    if msg["type"] == "psubscribe":
                        self._subscribed.set()
                        continue
                    request_id = _channel_id(self._keys, msg)
                    for ev in self._waiters.get(request_id or "", ()):
                        ev.set()
            except (redis.RedisError, OSError) as exc:
                self._subscribed.clear()
                log.warning("done_listener_reconnecting", error=type(exc).__name__)
                await asyncio.sleep(_RECONNECT_DELAY_S)
            finally:
                self._subscribed.clear()
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]

    async def aclose(self) -> None:
        if self._task is None:
            return
        task, self._task = self._task, None
        task.cancel()
        # asyncio.wait, not `await task`: awaiting it raises its CancelledError, which can't
        # be told from a cancel of aclose's own caller landing meanwhile (that one must go on).
        await asyncio.wait({task})
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.warning("done_listener_failed", error=type(exc).__name__)


class SyncDoneListener:
    """Dispatches ``{prefix}:done:{id}`` messages to threads waiting in the sync client."""

    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        self._client = client
        self._keys = keys
        self._lock = threading.Lock()
        self._waiters: dict[str, set[threading.Event]] = {}
        self._subscribed = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def register(self, request_id: str) -> threading.Event:
        ev = threading.Event()
        with self._lock:
            self._waiters.setdefault(request_id, set()).add(ev)
        return ev

    def unregister(self, request_id: str, ev: threading.Event) -> None:
        with self._lock:
            waiters = self._waiters.get(request_id)
            if waiters is not None:
                waiters.discard(ev)
                if not waiters:
                    del self._waiters[request_id]

    def ensure_subscribed(self, timeout_s: float) -> bool:
        """Start the listener thread if needed; True once the subscription is confirmed."""
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._stop.clear()
                self._thread = threading.Thread(
                    target=self._run, name="genqueue-done-listener", daemon=True
                )
                self._thread.start()
        return self._subscribed.wait(timeout_s)

    def _run(self) -> None:
        while not self._stop.is_set():
            pubsub = self._client.pubsub()  # type: ignore[no-untyped-call]
            try:
                pubsub.psubscribe(self._keys.done_pattern)
                while not self._stop.is_set():
                    msg = pubsub.get_message(timeout=0.5)
                    if msg is None:
                        continue
                    if msg["type"] == "psubscribe":
                        self._subscribed.set()
                        continue
                    request_id = _channel_id(self._keys, msg)
                    with self._lock:
                        waiters = list(self._waiters.get(request_id or "", ()))
                    for ev in waiters:
                        ev.set()
            except (redis.RedisError, OSError) as exc:
                self._subscribed.clear()
                log.warning("done_listener_reconnecting", error=type(exc).__name__)
                self._stop.wait(_RECONNECT_DELAY_S)
            finally:
                self._subscribed.clear()
                with contextlib.suppress(Exception):
                    pubsub.close()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
