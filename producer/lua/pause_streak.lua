-- Count creates in a row that failed like an outage, across all workers (worker/pause.py).
-- KEYS: 1 the failure streak counter. ARGV: 1 'fail' | 'ok', 2 threshold.
-- Returns 1 when the streak just reached the threshold, else 0.
local K_STREAK = KEYS[1]
local RESULT, THRESHOLD = ARGV[1], tonumber(ARGV[2])
if RESULT == 'ok' then
  if redis.call('GET', K_STREAK) then redis.call('DEL', K_STREAK) end
  return 0
end
local n = redis.call('INCR', K_STREAK)
redis.call('PEXPIRE', K_STREAK, 600000)
if n == THRESHOLD then return 1 end
return 0
