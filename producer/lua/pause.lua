-- Pause upstream creates for every worker (worker/pause.py). Redis clock.
-- KEYS: 1 the pause hash. ARGV: 1 reason, 2 status code, 3 duration (ms).
-- Returns when the pause ends (Redis ms).
local K_PAUSE = KEYS[1]
local REASON, CODE, DURATION_MS = ARGV[1], ARGV[2], tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local untilms = now + DURATION_MS
if not redis.call('HGET', K_PAUSE, 'since_ms') then
  redis.call('HSET', K_PAUSE, 'since_ms', string.format('%d', now))
end
redis.call('HSET', K_PAUSE, 'reason', REASON, 'code', CODE,
  'until_ms', string.format('%d', untilms), 'probe_until_ms', '0')
return untilms
