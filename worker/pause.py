"""The shared pause of upstream creates (circuit breaker), kept in Redis for every worker."""

from __future__ import annotations

import redis.asyncio

from producer.keys import Keys

_PAUSE_LUA = """
-- KEYS: 1 pause hash. ARGV: 1 reason, 2 status code, 3 duration (ms). Redis clock.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local untilms = now + tonumber(ARGV[3])
redis.call('HSET', KEYS[1], 'reason', ARGV[1], 'code', ARGV[2],
  'until_ms', string.format('%d', untilms), 'since_ms', string.format('%d', now))
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[3]))
return untilms
"""


class CreatePause:
    """Pauses creates for everyone after the upstream refused our key or credit."""

    def __init__(self, client: redis.asyncio.Redis, keys: Keys) -> None:
        self._script = client.register_script(_PAUSE_LUA)
        self._client = client
        self._keys = keys

    async def pause(self, *, reason: str, code: int | str, duration_ms: int) -> int:
        """Pause creates for ``duration_ms``; returns when the pause ends (Redis ms)."""
        return int(
            await self._script(keys=[self._keys.pause], args=[reason, str(code), duration_ms])
        )

    async def resume(self) -> bool:
        """End a pause now; True if one was in force."""
        return bool(await self._client.delete(self._keys.pause))
