"""The one-script claim of a due arq job (``worker/claim.py``) makes arq 0.28's checks."""

from __future__ import annotations

import redis.asyncio
from arq.constants import in_progress_key_prefix
from arq.utils import timestamp_ms

from worker.claim import CLAIM_LUA

QUEUE = "t:queue"


async def test_a_due_job_is_claimed_once(aredis: redis.asyncio.Redis) -> None:
    """A due, queued job is claimed by the first caller only, which sets its in-progress key
    for the given timeout and gets its score."""
    claim = aredis.register_script(CLAIM_LUA)
    now = timestamp_ms()
    await aredis.zadd(QUEUE, {"poll:a:1": now - 5})
    keys, args = [in_progress_key_prefix + "poll:a:1", QUEUE], ["poll:a:1", now, 40_000]
    assert int(float(await claim(keys=keys, args=args))) == now - 5
    assert await claim(keys=keys, args=args) is None
    assert 39_000 < await aredis.pttl(in_progress_key_prefix + "poll:a:1") <= 40_000


async def test_a_job_not_due_or_not_queued_is_not_claimed(aredis: redis.asyncio.Redis) -> None:
    """A job re-queued for later, or no longer queued, is left alone (no in-progress key)."""
    claim = aredis.register_script(CLAIM_LUA)
    now = timestamp_ms()
    await aredis.zadd(QUEUE, {"poll:b:1": now + 60_000})
    for job in ("poll:b:1", "poll:gone:1"):
        keys = [in_progress_key_prefix + job, QUEUE]
        assert await claim(keys=keys, args=[job, now, 40_000]) is None
        assert not await aredis.exists(in_progress_key_prefix + job)
