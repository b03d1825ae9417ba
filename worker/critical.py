"""Work that must run to its end once started, whatever happens to the task that started it.

A create POST whose task is cancelled mid-flight (a lost Redis connection makes the
supervisor stop arq, which cancels every running job; SIGTERM past its grace; a task
timeout) may still have created the upstream job: the answer is thrown away and the next
attempt buys the same video again (the upstream ignores idempotency keys). So the POST and
the write of its answer run in a task of their own that cancellation does not reach, and the
runtime's close waits for them before closing the clients they use.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

import structlog

log = structlog.get_logger(__name__)

T = TypeVar("T")


class CriticalSections:
    """The critical sections of one runtime still running."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()

    def __len__(self) -> int:
        return len(self._tasks)

    async def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` to its end even if the caller is cancelled (the caller then stops
        waiting; the section goes on and ``drain`` waits for it)."""
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            # Nobody is left to see how it ends: a failure is logged rather than lost.
            task.add_done_callback(_log_orphan_failure)
            raise

    async def drain(self) -> None:
        """Wait for every section still running (each bounds its own time)."""
        if self._tasks:
            log.info("critical_sections_draining", running=len(self._tasks))
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)


def _log_orphan_failure(task: asyncio.Task[Any]) -> None:
    if task.cancelled():
        return
    exc = task.exception()
    if exc is not None:
        log.error("critical_section_failed", error=type(exc).__name__, detail=str(exc)[:200])
