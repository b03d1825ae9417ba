-- An operator asks for a fresh attempt of a dead webhook (same webhook-id).
-- KEYS: (only the shared ones.)
-- ARGV: 5 dead-letter zset key.
-- Returns {'OK', side_seq} | {'NOT_DEAD', state} | {'MISSING'}
-- KEYS 1..8 and ARGV 1..4: shared by every transition script (producer/contracts.py
-- `common_keys`/`common_args`): record, in-flight zset, status counts, totals, event stream,
-- idempotency mapping (the record key if none), outbox, spec; request id, event stream max
-- length, done channel, retention of a finished record (ms). Optional trailing inline-arm
-- KEYS/ARGV: see lua/_transition.lua.
local K_REC, K_INFLIGHT, K_COUNTS, K_TOTALS = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local K_EVENTS, K_IDEM, K_OUTBOX, K_SPEC = KEYS[5], KEYS[6], KEYS[7], KEYS[8]
local ID, EVENTS_MAXLEN, CHANNEL, RETENTION_MS = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
local K_DEAD_LETTERS = ARGV[5]
--- @include "transition"
if redis.call('EXISTS', K_REC) == 0 then
  redis.call('ZREM', K_DEAD_LETTERS, ID)
  return {'MISSING'}
end
local state = get('webhook_state')
if state ~= 'dead' then return {'NOT_DEAD', state} end
redis.call('HSET', K_REC, 'webhook_state', 'pending', 'webhook_replayed_at_ms', istr(NOW),
  'webhook_attempts', '0')
local seq = redis.call('HINCRBY', K_REC, 'side_seq', 1)
redis.call('ZADD', K_OUTBOX, NOW, ID)
-- The outbox's wake keys (producer/keys.py Keys.side_wake): a waiting side worker looks now.
wake_one(K_OUTBOX .. WAKE_SUFFIX, K_OUTBOX .. WAKE_AT_SUFFIX, NOW)
redis.call('ZREM', K_DEAD_LETTERS, ID)
emit(get('status'), 'webhook', 'replayed')
return {'OK', istr(seq)}
