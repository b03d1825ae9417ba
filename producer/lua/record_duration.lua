-- Offer one completed job's durations to its model's sample (worker/durations.py).
-- KEYS: 1 total list, 2 generation list, 3 counter, 4 recent totals, 5 recent generations,
--       6 clock offset bounds (optional: a caller passing 3 keys keeps the older behaviour).
-- ARGV: 1 total ('' = none), 2 generation ('' = none), 3 sample size, 4 horizon, 5 a uniform
--       number in [0, 1) from the caller, 6 recent window size, 7 clock offset bound ('' = none),
--       8 offset bounds kept, 9 / 10 the recent entries of total / generation ('start:done',
--       '' = none).
-- Reservoir sampling: the k-th completion fills the sample while it is not full, then
-- replaces a random slot with probability size / min(k, horizon). The recent lists keep the
-- last ARGV[6] values whatever the reservoir does (they follow a change within minutes).
-- Returns 1 if the sample took the values, 0 if not.
local K_TOTAL, K_GENERATION, K_COUNT = KEYS[1], KEYS[2], KEYS[3]
local K_RECENT_TOTAL, K_RECENT_GENERATION, K_OFFSET = KEYS[4], KEYS[5], KEYS[6]
local TOTAL, GENERATION = ARGV[1], ARGV[2]
local SIZE, HORIZON, UNIFORM = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local RECENT, OFFSET, OFFSETS = tonumber(ARGV[6] or '0'), ARGV[7] or '', tonumber(ARGV[8] or '0')
local RECENT_TOTAL, RECENT_GENERATION = ARGV[9] or '', ARGV[10] or ''
local function keep_last(key, value, n)
  if key and value ~= '' and n > 0 then
    redis.call('LPUSH', key, value)
    redis.call('LTRIM', key, 0, n - 1)
  end
end
keep_last(K_RECENT_TOTAL, RECENT_TOTAL, RECENT)
keep_last(K_RECENT_GENERATION, RECENT_GENERATION, RECENT)
keep_last(K_OFFSET, OFFSET, OFFSETS)
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
