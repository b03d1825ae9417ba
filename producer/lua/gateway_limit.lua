-- The gateway's limits, shared by every gateway process: a GCRA per limit key (Redis clock,
-- µs). A request may go when now >= TAT - tolerance; each one that goes moves the TAT one
-- interval on, so the key lives at most tolerance + interval (its TTL). A refused request
-- spends nothing. Used two ways (gateway/shared_limits.py):
--   a request with a valid key: K_LIMIT is its key's rate and K_BLOCK its address's failed
--     authentications, checked but not spent (an address out of failures is refused even
--     with a right key: a 200 among the 429s would tell a guesser which key is right);
--   a failed authentication: K_LIMIT is its address's failures, no K_BLOCK.
-- Answers {'OK'}, {'RATE', ms} (over K_LIMIT) or {'BLOCKED', ms} (the address, K_BLOCK).
local K_LIMIT = KEYS[1]
local K_BLOCK = KEYS[2]
local INTERVAL_US = tonumber(ARGV[1])
local TOLERANCE_US = tonumber(ARGV[2])
local BLOCK_TOLERANCE_US = tonumber(ARGV[3] or '0')

--- @include "numbers"

local t = redis.call('TIME')
local now_us = tonumber(t[1]) * 1000000 + tonumber(t[2])

local function wait_ms(key, tolerance_us)
  local tat = tonumber(redis.call('GET', key) or '0') or 0
  local free_at = tat - tolerance_us
  if now_us >= free_at then return 0 end
  return math.max(1, math.ceil((free_at - now_us) / 1000))
end

if K_BLOCK then
  local blocked = wait_ms(K_BLOCK, BLOCK_TOLERANCE_US)
  if blocked > 0 then return {'BLOCKED', blocked} end
end
local over = wait_ms(K_LIMIT, TOLERANCE_US)
if over > 0 then return {'RATE', over} end
local tat = math.max(tonumber(redis.call('GET', K_LIMIT) or '0') or 0, now_us)
local after = tat + INTERVAL_US
redis.call('SET', K_LIMIT, istr(after), 'PX', math.ceil((after - now_us) / 1000) + 1000)
return {'OK'}
