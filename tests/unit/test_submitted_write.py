"""A created job's id is written even when Redis is briefly unreachable (through the lease and
one more: tasks.py ``_record_submitted``)."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace
from typing import Any

import pytest
import redis.exceptions

from genqueue.worker import tasks
from genqueue.worker.tasks import _run_until


class FlakyDurability:
    """Fails ``failures`` times with ``exc``, then answers OK."""

    def __init__(self, failures: int, exc: Exception) -> None:
        self.failures = failures
        self.exc = exc
        self.calls = 0

    async def run(self, client: Any, scripts: Any, c: Any) -> list[str]:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.exc
        return ["OK"]


class RoundTripDurability(FlakyDurability):
    """Answers OK after a round trip (it yields to the event loop, as a real write does)."""

    def __init__(self) -> None:
        super().__init__(0, RuntimeError())

    async def run(self, client: Any, scripts: Any, c: Any) -> list[str]:
        await asyncio.sleep(0.01)
        return await super().run(client, scripts, c)


def _rt(durability: FlakyDurability) -> Any:
    return SimpleNamespace(durability=durability, redis=None, scripts=None)


@pytest.mark.parametrize(
    "exc", [redis.exceptions.ConnectionError("down"), redis.exceptions.TimeoutError("slow")]
)
async def test_write_is_retried_while_redis_is_unreachable(exc: Exception) -> None:
    """Connection errors before the deadline are retried until the write goes through."""
    durability = FlakyDurability(3, exc)
    reply = await _run_until(_rt(durability), None, time.monotonic() + 30)  # type: ignore[arg-type]
    assert reply == ["OK"] and durability.calls == 4


async def test_write_gives_up_at_the_deadline() -> None:
    """Past the deadline the error is raised, never retried forever."""
    durability = FlakyDurability(10**6, redis.exceptions.ConnectionError("down"))
    with pytest.raises(redis.exceptions.ConnectionError):
        await _run_until(_rt(durability), None, time.monotonic() + 0.2)  # type: ignore[arg-type]
    assert 1 < durability.calls < 10


async def test_an_answer_past_the_deadline_still_gets_one_write() -> None:
    """A create answered after the deadline (a stalled process) is still written once."""
    durability = RoundTripDurability()
    reply = await _run_until(_rt(durability), None, time.monotonic() - 1)  # type: ignore[arg-type]
    assert reply == ["OK"] and durability.calls == 1


async def test_other_errors_are_not_retried() -> None:
    """A script error is not an outage: raised at once."""
    durability = FlakyDurability(1, redis.exceptions.ResponseError("ERR bad script"))
    with pytest.raises(redis.exceptions.ResponseError):
        await _run_until(_rt(durability), None, time.monotonic() + 30)  # type: ignore[arg-type]
    assert durability.calls == 1


class HangingDurability:
    """Never answers, as a command on a connection a network partition left half-open."""

    async def run(self, client: Any, scripts: Any, c: Any) -> list[str]:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


@pytest.mark.timeout(10)
async def test_a_hanging_write_ends_at_the_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    """A write that never answers ends at the deadline: the runtime's close, which waits for
    it, is never held forever."""
    with pytest.raises(TimeoutError):
        rt: Any = SimpleNamespace(durability=HangingDurability(), redis=None, scripts=None)
        monkeypatch.setattr(tasks, "WRITE_TRY_S", 0.1)
        await _run_until(rt, None, time.monotonic() + 0.2)  # type: ignore[arg-type]
