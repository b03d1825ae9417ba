"""``genqueue.logs.bound_context`` leaves the log context as structlog's
``bound_contextvars`` does."""

from __future__ import annotations

import asyncio

import structlog.contextvars as cv

from genqueue.logs import bound_context


def test_restores_overwritten_and_unbinds_new_keys_only() -> None:
    """Inside, the keys are bound; after, an overwritten key has its old value back, a new
    one is gone, and a key bound inside by someone else stays (as with structlog's)."""
    for manager in (bound_context, cv.bound_contextvars):
        cv.clear_contextvars()
        cv.bind_contextvars(request_id="outer")
        with manager(request_id="inner", timer_seq=3):
            assert cv.get_contextvars() == {"request_id": "inner", "timer_seq": 3}
            cv.bind_contextvars(tenant="t1")
        assert cv.get_contextvars() == {"request_id": "outer", "tenant": "t1"}
    cv.clear_contextvars()


def test_restores_after_an_exception() -> None:
    """An exception leaving the block still restores the context."""
    cv.clear_contextvars()
    try:
        with bound_context(upstream_id="u1"):
            raise RuntimeError("boom")
    except RuntimeError:
        pass
    assert cv.get_contextvars() == {}


async def test_tasks_do_not_see_each_others_binding() -> None:
    """Concurrent tasks each see only their own binding."""
    cv.clear_contextvars()
    seen: dict[str, object] = {}

    async def job(rid: str) -> None:
        with bound_context(request_id=rid):
            await asyncio.sleep(0)
            seen[rid] = cv.get_contextvars().get("request_id")

    await asyncio.gather(job("a"), job("b"))
    assert seen == {"a": "a", "b": "b"}
    assert cv.get_contextvars() == {}
