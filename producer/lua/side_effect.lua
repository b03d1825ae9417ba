-- Record the result of one side effect (download or webhook) owed after the end.
-- ARGV: 5 expected side seq, 6 effect ('download' | 'webhook'), 7 result ('done' | 'retry' |
--       'dead'), 8 retry delay (ms), 9 fields to set (JSON object of strings), 10 dead-letter
--       zset key for webhooks given up on, 11 dead letters' maximum age (ms), 12 their
--       maximum count (both optional: absent, the set is not trimmed).
-- The attempt itself was counted before the call (side_attempt.lua).
-- Returns {'NEXT', side_seq, due_in_ms} (more is owed) | {'CLEAR'} (nothing owed any more) |
--   {'STALE'} | {'MISSING'}
if redis.call('EXISTS', K_REC) == 0 then
  redis.call('ZREM', K_OUTBOX, ID)
  return {'MISSING'}
end
local expected_seq, effect, result = ARGV[5], ARGV[6], ARGV[7]
local delay_ms, fields = tonumber(ARGV[8]), cjson.decode(ARGV[9])
if get('side_seq') ~= expected_seq or get(effect .. '_state') ~= 'pending' then return {'STALE'} end
for k, v in pairs(fields) do redis.call('HSET', K_REC, k, v) end
local due = NOW
if result == 'retry' then
  due = NOW + delay_ms
else
  redis.call('HSET', K_REC, effect .. '_state', result)
  emit(get('status'), effect, result)
  if result == 'dead' and effect == 'webhook' then
    redis.call('ZADD', ARGV[10], NOW, ID)
    local max_age_ms, max_count = tonumber(ARGV[11]), tonumber(ARGV[12])
    if max_age_ms then redis.call('ZREMRANGEBYSCORE', ARGV[10], '-inf', NOW - max_age_ms) end
    if max_count then redis.call('ZREMRANGEBYRANK', ARGV[10], 0, -(max_count + 1)) end
  end
end
local seq = redis.call('HINCRBY', K_REC, 'side_seq', 1)
if get('download_state') == 'pending' or get('webhook_state') == 'pending' then
  redis.call('ZADD', K_OUTBOX, due, ID)
  return {'NEXT', seq, due - NOW}
end
redis.call('ZREM', K_OUTBOX, ID)
return {'CLEAR'}
