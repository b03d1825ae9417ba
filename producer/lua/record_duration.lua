-- Offer one completed job's durations to its model's sample (worker/durations.py).
-- KEYS: 1 total list, 2 generation list, 3 counter, 4 recent totals, 5 recent generations
--       (sorted sets by completion time), 6 clock offset bounds.
-- ARGV: 1 total ('' = none), 2 generation ('' = none), 3 sample size, 4 horizon, 5 a uniform
--       number in [0, 1) from the caller, 6 recent completions kept, 7 clock offset bound
--       ('' = none), 8 offset bounds kept, 9 / 10 the recent entries of total / generation
--       ('start:done', '' = none), 11 the completion time (the recent sets' score).
-- Reservoir sampling: the k-th completion fills the sample while it is not full, then
-- replaces a random slot with probability size / min(k, horizon). The recent sets keep the
-- ARGV[6] latest-done completions whatever the reservoir does (they follow a change within
-- minutes); dropping the earliest-done keeps every completion after the set's lowest score
-- (worker/drift.py: settled). Returns 1 if the sample took the values, 0 if not.
local K_TOTAL, K_GENERATION, K_COUNT = KEYS[1], KEYS[2], KEYS[3]
local K_RECENT_TOTAL, K_RECENT_GENERATION, K_OFFSET = KEYS[4], KEYS[5], KEYS[6]
local TOTAL, GENERATION = ARGV[1], ARGV[2]
local SIZE, HORIZON, UNIFORM = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local RECENT, OFFSET, OFFSETS = tonumber(ARGV[6] or '0'), ARGV[7] or '', tonumber(ARGV[8] or '0')
local RECENT_TOTAL, RECENT_GENERATION = ARGV[9] or '', ARGV[10] or ''
local DONE = ARGV[11] or ''
local function keep_latest_done(key, value, n)
  if key and value ~= '' and DONE ~= '' and n > 0 then
    redis.call('ZADD', key, DONE, value)
    redis.call('ZREMRANGEBYRANK', key, 0, -(n + 1))
  end
end
keep_latest_done(K_RECENT_TOTAL, RECENT_TOTAL, RECENT)
keep_latest_done(K_RECENT_GENERATION, RECENT_GENERATION, RECENT)
if K_OFFSET and OFFSET ~= '' and OFFSETS > 0 then
  redis.call('LPUSH', K_OFFSET, OFFSET)
  redis.call('LTRIM', K_OFFSET, 0, OFFSETS - 1)
end
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
