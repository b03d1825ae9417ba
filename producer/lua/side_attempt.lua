-- Count an attempt of a side effect before it is made (a killed attempt still counts).
-- KEYS: (only the shared ones.)
-- ARGV: 5 expected side seq, 6 effect ('download' | 'webhook').
-- Returns {'OK', attempts (this one included)} | {'STALE'} | {'MISSING'}
-- KEYS 1..8 and ARGV 1..4: shared by every transition script (producer/contracts.py
-- `common_keys`/`common_args`): record, in-flight zset, status counts, totals, event stream,
-- idempotency mapping (the record key if none), outbox, spec; request id, event stream max
-- length, done channel, retention of a finished record (ms). Optional trailing inline-arm
-- KEYS/ARGV: see lua/_transition.lua.
local K_REC, K_INFLIGHT, K_COUNTS, K_TOTALS = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local K_EVENTS, K_IDEM, K_OUTBOX, K_SPEC = KEYS[5], KEYS[6], KEYS[7], KEYS[8]
local ID, EVENTS_MAXLEN, CHANNEL, RETENTION_MS = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
local EXPECTED_SIDE_SEQ, EFFECT = ARGV[5], ARGV[6]
--- @include "transition"
if redis.call('EXISTS', K_REC) == 0 then return {'MISSING'} end
if get('side_seq') ~= EXPECTED_SIDE_SEQ or get(EFFECT .. '_state') ~= 'pending' then
  return {'STALE'}
end
return {'OK', istr(redis.call('HINCRBY', K_REC, EFFECT .. '_attempts', 1))}
