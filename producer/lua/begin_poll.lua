-- Start a status check: the timer step must be current and the shared rate limit must admit
-- the call, else the step is put off to its turn (the record's `call_turn` says it holds
-- one: see take_call_slot). Returns the record, so a check reads it and takes its call slot
-- in one round trip.
-- KEYS[9] the rate limit, KEYS[10] its turns (see take_call_slot).
-- ARGV: 5 expected timer seq, 6 rate limit interval (µs; 0 = no limit), 7 burst tolerance (µs).
-- Returns {'GO', field, value, ...} | {'LIMITED', seq, delay_ms} | {'STALE'} | {'DONE'} | {'MISSING'}
if redis.call('EXISTS', K_REC) == 0 then return {'MISSING'} end
if get('seq') ~= ARGV[5] or get('timer') ~= 'poll' then return {'STALE'} end
if not NON_TERMINAL[get('status')] and get('tracking') ~= '1' then return {'DONE'} end
local interval_us = tonumber(ARGV[6])
if interval_us > 0 then
  local has_turn = get('call_turn') == '1'
  local wait_ms = take_call_slot(KEYS[9], KEYS[10], interval_us, tonumber(ARGV[7]),
    has_turn and 'turn' or 'check')
  if wait_ms > 0 then
    if not has_turn then redis.call('HSET', K_REC, 'call_turn', '1') end
    return {'LIMITED', next_step('poll', wait_ms), wait_ms}
  end
  if has_turn then redis.call('HDEL', K_REC, 'call_turn') end
end
local record = redis.call('HGETALL', K_REC)
table.insert(record, 1, 'GO')
return record
