-- Start a status check: the timer step must be current and the shared rate limit must admit
-- the call, else the step is put off to its turn (the record's `call_turn` says it holds
-- one: see take_call_slot). Returns the record, so a check reads it and takes its call slot
-- in one round trip.
-- KEYS: 9 the rate limit, 10 its turns (see take_call_slot).
-- ARGV: 5 expected timer seq, 6 rate limit interval (µs; 0 = no limit), 7 burst tolerance (µs).
-- Returns {'GO', field, value, ..., now ms (Redis TIME: the schedule's clock)} | {'LIMITED', seq, delay_ms} | {'STALE'} | {'DONE'} | {'MISSING'}
-- KEYS 1..8 and ARGV 1..4: shared by every transition script (producer/contracts.py
-- `common_keys`/`common_args`): record, in-flight zset, status counts, totals, event stream,
-- idempotency mapping (the record key if none), outbox, spec; request id, event stream max
-- length, done channel, retention of a finished record (ms). Optional trailing inline-arm
-- KEYS/ARGV: see lua/_transition.lua.
local K_REC, K_INFLIGHT, K_COUNTS, K_TOTALS = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local K_EVENTS, K_IDEM, K_OUTBOX, K_SPEC = KEYS[5], KEYS[6], KEYS[7], KEYS[8]
local ID, EVENTS_MAXLEN, CHANNEL, RETENTION_MS = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
local K_RATE_LIMIT, K_RATE_TURNS = KEYS[9], KEYS[10]
local EXPECTED_SEQ, INTERVAL_US, TOLERANCE_US = ARGV[5], tonumber(ARGV[6]), tonumber(ARGV[7])
--- @include "transition"
--- @include "rate_limit"
-- No idempotency check: begin_poll never ends a request.
if redis.call('EXISTS', K_REC) == 0 then return {'MISSING'} end
if get('seq') ~= EXPECTED_SEQ or get('timer') ~= 'poll' then return {'STALE'} end
if not NON_TERMINAL[get('status')] and get('tracking') ~= '1' and get('tracking') ~= 'extra' then
  return {'DONE'}
end
if INTERVAL_US > 0 then
  local has_turn = get('call_turn') == '1'
  local wait_ms = take_call_slot(K_RATE_LIMIT, K_RATE_TURNS, INTERVAL_US, TOLERANCE_US,
    has_turn and 'turn' or 'check')
  if wait_ms > 0 then
    if not has_turn then redis.call('HSET', K_REC, 'call_turn', '1') end
    return {'LIMITED', next_step('poll', wait_ms), wait_ms}
  end
  if has_turn then redis.call('HDEL', K_REC, 'call_turn') end
end
local record = redis.call('HGETALL', K_REC)
table.insert(record, 1, 'GO')
record[#record + 1] = NOW
return record
