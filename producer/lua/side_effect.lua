-- Record the result of one side effect (download or webhook) owed after the end.
-- KEYS: (only the shared ones.)
-- ARGV: 5 expected side seq, 6 effect ('download' | 'webhook'), 7 result ('done' | 'retry' |
--       'dead'), 8 retry delay (ms), 9 fields to set (JSON object of strings), 10 dead-letter
--       zset key for webhooks given up on, 11 dead letters' maximum age (ms), 12 their
--       maximum count (each '' = the set is not trimmed that way).
-- The attempt itself was counted before the call (side_attempt.lua).
-- Returns {'NEXT', side_seq, due_in_ms} (more is owed) | {'CLEAR'} (nothing owed any more) |
--   {'STALE'} | {'MISSING'}
-- KEYS 1..8 and ARGV 1..4: shared by every transition script (producer/contracts.py
-- `common_keys`/`common_args`): record, in-flight zset, status counts, totals, event stream,
-- idempotency mapping (the record key if none), outbox, spec; request id, event stream max
-- length, done channel, retention of a finished record (ms). Optional trailing inline-arm
-- KEYS/ARGV: see lua/_transition.lua.
local K_REC, K_INFLIGHT, K_COUNTS, K_TOTALS = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local K_EVENTS, K_IDEM, K_OUTBOX, K_SPEC = KEYS[5], KEYS[6], KEYS[7], KEYS[8]
local ID, EVENTS_MAXLEN, CHANNEL, RETENTION_MS = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
local EXPECTED_SIDE_SEQ, EFFECT, RESULT = ARGV[5], ARGV[6], ARGV[7]
local RETRY_DELAY_MS, FIELDS_JSON, K_DEAD_LETTERS = tonumber(ARGV[8]), ARGV[9], ARGV[10]
local DEAD_MAX_AGE_MS, DEAD_MAX = tonumber(ARGV[11]), tonumber(ARGV[12])
--- @include "transition"
local refused = idempotency_key_not_passed()
if refused then return refused end
if redis.call('EXISTS', K_REC) == 0 then
  redis.call('ZREM', K_OUTBOX, ID)
  return {'MISSING'}
end
if get('side_seq') ~= EXPECTED_SIDE_SEQ or get(EFFECT .. '_state') ~= 'pending' then return {'STALE'} end
local fields = cjson.decode(FIELDS_JSON)
for k, v in pairs(fields) do redis.call('HSET', K_REC, k, v) end
local due = NOW
if RESULT == 'retry' then
  due = NOW + RETRY_DELAY_MS
else
  redis.call('HSET', K_REC, EFFECT .. '_state', RESULT)
  emit(get('status'), EFFECT, RESULT)
  if RESULT == 'dead' and EFFECT == 'webhook' then
    redis.call('ZADD', K_DEAD_LETTERS, NOW, ID)
    if DEAD_MAX_AGE_MS then
      redis.call('ZREMRANGEBYSCORE', K_DEAD_LETTERS, '-inf', NOW - DEAD_MAX_AGE_MS)
    end
    if DEAD_MAX then redis.call('ZREMRANGEBYRANK', K_DEAD_LETTERS, 0, -(DEAD_MAX + 1)) end
  end
end
local seq = redis.call('HINCRBY', K_REC, 'side_seq', 1)
if get('download_state') == 'pending' or get('webhook_state') == 'pending' then
  redis.call('ZADD', K_OUTBOX, due, ID)
  return {'NEXT', seq, due - NOW}
end
redis.call('ZREM', K_OUTBOX, ID)
return {'CLEAR'}
