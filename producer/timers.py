"""Timers: the only module that knows how arq stores a job.

A timer is an arq job with a deterministic id (``poll:{id}:{seq}``) scheduled on Redis' clock.
Arming is one Lua script (``lua/arm.lua``: the same check arq's ``enqueue_job`` does — job
or result key present means already armed — but atomic, usable from sync and async clients,
and scored with Redis ``TIME`` instead of the host's clock). Payloads are JSON, never pickle.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Final

import redis
import redis.asyncio
from arq.constants import expires_extra_ms, job_key_prefix, result_key_prefix
from arq.jobs import serialize_job

from genqueue.producer.evalsha import script_caller
from genqueue.producer.keys import INLINE_ARM_MARKER, SCHEMA_VERSION, WakeKeys, timer_job_id
from genqueue.producer.scripts import source

#: arq's job key prefix and how long a job key outlives its run time (ms): scripts that arm a
#: job the caller could not pass ready-made (``lua/_job.lua``) are given them.
JOB_KEY_PREFIX: Final = job_key_prefix
JOB_EXTRA_MS: Final = expires_extra_ms


_ENCODER: Final = json.JSONEncoder(separators=(",", ":"))
#: How ``json.dumps`` writes a string (its default ``ensure_ascii``).
_json_str: Final = json.encoder.encode_basestring_ascii


def dumps(obj: Any) -> bytes:
    """arq job serializer: JSON (a shared Redis must not be a code-execution channel); one
    encoder for every call (``json.dumps`` with options builds one per call)."""
    return _ENCODER.encode(obj).encode()


def loads(data: bytes) -> Any:
    """arq job deserializer (JSON)."""
    return json.loads(data)


@dataclass(frozen=True, slots=True)
class Timer:
    """One step of a request's timer chain."""

    kind: str
    request_id: str
    seq: int

    @property
    def job_id(self) -> str:
        return timer_job_id(self.kind, self.request_id, self.seq)


def _arm_call(
    queue: str, timer: Timer, *, at_ms: int, delay_ms: int, now_ms: int, wake: WakeKeys
) -> tuple[list[str], list[str | bytes]]:
    # Task arguments carry the schema version: timers outlive rolling deploys.
    payload = timer_payload(timer, now_ms)
    job_id = timer.job_id
    keys = [
        job_key_prefix + job_id,
        result_key_prefix + job_id,
        queue,
        wake.wake,
        wake.wake_at,
    ]
    args: list[str | bytes] = [
        payload,
        str(at_ms),
        str(max(0, delay_ms)),
        str(expires_extra_ms),
        job_id,
    ]
    return keys, args


def timer_payload(timer: Timer, now_ms: int) -> bytes:
    """arq's job payload of a timer: the bytes ``serialize_job`` gives with ``dumps`` (arq's
    field order, compact JSON), written directly (arq's dict and a JSON encoder pass were a
    few % of a worker's CPU, one per status check)."""
    if type(timer.seq) is not int or type(now_ms) is not int:
        return serialize_job(
            timer.kind,
            (timer.request_id, timer.seq, SCHEMA_VERSION),
            {},
            None,
            now_ms,
            serializer=dumps,
        )
    kind, rid = _json_str(timer.kind), _json_str(timer.request_id)
    return (
        f'{{"t":null,"f":{kind},"a":[{rid},{timer.seq},{SCHEMA_VERSION:d}],"k":{{}},"et":{now_ms}}}'
    ).encode()


@lru_cache(maxsize=16)
def _wake_keys(queue: str) -> WakeKeys:
    return WakeKeys.of(queue)


def inline_arm(queue: str, timer: Timer) -> tuple[list[str], list[str]]:
    """The KEYS and ARGV a transition script takes at the end to enqueue ``timer`` itself
    when it is the step the script moves to (``arm`` in ``lua/_transition.lua``): one round
    trip and one script call fewer than arming afterwards."""
    keys, args = _arm_call(
        queue,
        timer,
        at_ms=0,
        delay_ms=0,
        now_ms=int(time.time() * 1000),
        wake=_wake_keys(queue),
    )
    payload = args[0]
    assert isinstance(payload, bytes)
    return keys, [payload.decode(), str(expires_extra_ms), timer.job_id, INLINE_ARM_MARKER]


class AsyncTimers:
    """Arms timers through an asyncio Redis client (``wake``: whom an arm wakes; the queue's
    own wake keys unless given)."""

    def __init__(
        self, client: redis.asyncio.Redis, queue: str, wake: WakeKeys | None = None
    ) -> None:
        self._client = client
        self._script = client.register_script(source("arm"))
        self._call = script_caller(client)
        self._queue = queue
        self._wake = wake or WakeKeys.of(queue)

    async def arm(self, timer: Timer, *, delay_ms: int = 0, at_ms: int = 0) -> bool:
        """Schedule the timer; False if that exact step is already armed (or running)."""
        keys, args = _arm_call(
            self._queue,
            timer,
            at_ms=at_ms,
            delay_ms=delay_ms,
            now_ms=int(time.time() * 1000),
            wake=self._wake,
        )
        return bool(await self._call(self._script, keys, args))

    async def arm_many(self, items: Sequence[tuple[Timer, int]]) -> list[bool]:
        """Schedule each (timer, run at in Redis ms) in one pipeline; per item, as ``arm``:
        False if that exact step is already armed (or running).

        One round trip for the batch (plus the pipeline's ``SCRIPT EXISTS``, which reloads
        the script if Redis lost it). Each arm is atomic on its own; the batch is not.
        """
        if not items:
            return []
        now_ms = int(time.time() * 1000)
        async with self._client.pipeline(transaction=False) as pipe:
            for timer, at_ms in items:
                keys, args = _arm_call(
                    self._queue, timer, at_ms=at_ms, delay_ms=0, now_ms=now_ms, wake=self._wake
                )
                await self._script(keys=keys, args=args, client=pipe)
            replies = await pipe.execute()
        return [bool(r) for r in replies]


class SyncTimers:
    """Arms timers through a blocking Redis client (``wake`` as ``AsyncTimers``)."""

    def __init__(self, client: redis.Redis, queue: str, wake: WakeKeys | None = None) -> None:
        self._script = client.register_script(source("arm"))
        self._queue = queue
        self._wake = wake or WakeKeys.of(queue)

    def arm(self, timer: Timer, *, delay_ms: int = 0, at_ms: int = 0) -> bool:
        """Schedule the timer; False if that exact step is already armed (or running)."""
        keys, args = _arm_call(
            self._queue,
            timer,
            at_ms=at_ms,
            delay_ms=delay_ms,
            now_ms=int(time.time() * 1000),
            wake=self._wake,
        )
        return bool(self._script(keys=keys, args=args))
