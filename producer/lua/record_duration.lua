-- Offer one completed job's durations to its model's sample (worker/durations.py).
-- KEYS: 1 total list, 2 generation list, 3 counter.
-- ARGV: 1 total ('' = none), 2 generation ('' = none), 3 sample size, 4 horizon, 5 a uniform
--       number in [0, 1) from the caller.
-- Reservoir sampling: the k-th completion fills the sample while it is not full, then
-- replaces a random slot with probability size / min(k, horizon).
-- Returns 1 if the sample took the values, 0 if not.
local K_TOTAL, K_GENERATION, K_COUNT = KEYS[1], KEYS[2], KEYS[3]
local TOTAL, GENERATION = ARGV[1], ARGV[2]
local SIZE, HORIZON, UNIFORM = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local k = redis.call('INCR', K_COUNT)
local slot = -1
if k > SIZE then
  slot = math.floor(UNIFORM * math.min(k, HORIZON))
  if slot >= SIZE then return 0 end
end
local lists = {{K_TOTAL, TOTAL}, {K_GENERATION, GENERATION}}
for _, pair in ipairs(lists) do
  local key, value = pair[1], pair[2]
  if value ~= '' then
    local n = redis.call('LLEN', key)
    if slot >= 0 and slot < n then
      redis.call('LSET', key, slot, value)
    elseif n < SIZE then
      redis.call('RPUSH', key, value)
    end
  end
end
return 1
