"""What a shared rate limit costs per upstream call, client CPU per acquire: the ``limits``
library (two Redis moving windows, one script call each: what genqueue used before) against a
one-script GCRA, the algorithm genqueue now runs *inside* the script that starts each step
(``take_call_slot``), where it costs no round trip of its own — so the standalone GCRA
figure is an upper bound of genqueue's. Measured in the same process one after the other; the
budget is never exhausted (every acquire succeeds, as on a healthy run)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import redis.asyncio
from limits import RateLimitItemPerSecond
from limits.aio.storage import RedisStorage
from limits.aio.strategies import MovingWindowRateLimiter

#: Generic cell rate algorithm: a theoretical arrival time per key, in microseconds of Redis
#: TIME. ARGV: emission interval (us), tolerance (us). Returns 0 or the wait in us.
GCRA_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tat = math.max(tonumber(redis.call('GET', KEYS[1]) or '0'), now)
local interval, tolerance = tonumber(ARGV[1]), tonumber(ARGV[2])
if now < tat - tolerance then return tat - tolerance - now end
redis.call('SET', KEYS[1], tat + interval, 'PX', math.ceil((tat + interval - now) / 1000) + 1000)
return 0
"""


async def _costs(redis_url: str, count: int) -> dict[str, float]:
    rps, burst = 1e6, 50  # never refuses: the common path
    client = redis.asyncio.Redis.from_url(redis_url)
    scheme, rest = redis_url.split("://", 1)
    storage = RedisStorage(
        f"async+{scheme}://{rest}", implementation="redispy", key_prefix="bench-limiter"
    )
    limiter = MovingWindowRateLimiter(storage)
    items = [RateLimitItemPerSecond(int(rps) + burst, 1), RateLimitItemPerSecond(int(rps) * 10, 10)]

    async def limits_acquire() -> bool:
        return all([await limiter.hit(item, "b") for item in items])

    gcra = client.register_script(GCRA_LUA)
    interval_us = round(1e6 / rps)
    try:
        await limits_acquire()  # connect and load scripts outside the measurement
        await gcra(keys=["bench-limiter:gcra"], args=[interval_us, burst * interval_us])
        t0 = time.process_time()
        for _ in range(count):
            await limits_acquire()
        limits_ms = (time.process_time() - t0) / count * 1000
        t0 = time.process_time()
        for _ in range(count):
            await gcra(keys=["bench-limiter:gcra"], args=[interval_us, burst * interval_us])
        gcra_ms = (time.process_time() - t0) / count * 1000
    finally:
        await client.aclose()
    return {"limits_ms": limits_ms, "gcra_ms": gcra_ms}


def limiter_cost(redis_url: str, count: int = 3000) -> dict[str, Any]:
    """CPU ms per acquire of the ``limits`` limiter and of a one-script GCRA."""
    return asyncio.run(_costs(redis_url, count))
