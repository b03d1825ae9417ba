-- Take the submit lease (pending -> submitting) if creates aren't paused and the in-flight
-- cap and the shared rate limit admit it. KEYS[9]: the pause hash (circuit breaker),
-- KEYS[10] the rate limit, KEYS[11] its turns (see take_call_slot).
-- ARGV: 5 expected timer seq, 6 in-flight cap (0 = none), 7 lease (ms), 8 lease owner,
--       9 ambiguous-submit policy ('resubmit' | 'fail'), 10 wait when the cap is full (ms),
--       11 rate limit interval (µs; 0 = no limit), 12 burst tolerance (µs).
-- A pause that has run its time is half-open: one request at a time goes through as a probe
-- (its success resumes creates for everyone; see worker/pause.py).
-- Returns {'OK', submit_seq, ambiguous 0|1, probe 0|1} |
--   {'CAP_FULL' | 'LEASED' | 'PAUSED' | 'LIMITED', seq, wait_ms} |
--   {'CANCELLED'} | {'EXPIRED'} | {'FAILED'} | {'STALE'} | {'MISSING'}
if redis.call('EXISTS', K_REC) == 0 then return {'MISSING'} end
local expected_seq, cap, lease_ms = ARGV[5], tonumber(ARGV[6]), tonumber(ARGV[7])
local owner, policy, cap_wait_ms = ARGV[8], ARGV[9], tonumber(ARGV[10])
if get('seq') ~= expected_seq or get('timer') ~= 'submit' then return {'STALE'} end
local status = get('status')
if status ~= 'pending' and status ~= 'submitting' then return {'STALE'} end
if status == 'submitting' then
  local lease_until = num('lease_until_ms')
  if NOW < lease_until then
    -- Another attempt may still be waiting for its POST: never buy the same video twice.
    return {'LEASED', next_step('submit', lease_until - NOW), lease_until - NOW}
  end
end
if get('cancel_requested') == '1' then
  visible_terminal(status, 'cancelled', '')
  release()
  return {'CANCELLED'}
end
if NOW >= num('deadline_at_ms') then
  visible_terminal(status, 'expired', 'deadline passed before the upstream job was created')
  release()
  return {'EXPIRED'}
end
local paused_until = tonumber(redis.call('HGET', KEYS[9], 'until_ms') or '0') or 0
local probe = 0
if NOW < paused_until then
  return {'PAUSED', next_step('submit', paused_until - NOW), paused_until - NOW}
elseif paused_until > 0 then
  local probe_until = tonumber(redis.call('HGET', KEYS[9], 'probe_until_ms') or '0') or 0
  if NOW < probe_until then
    -- A probe is out: ask again soon (as when the cap is full), not at its lease's end, so
    -- creates resume within cap_wait of the probe's success.
    local wait = math.max(1, math.min(probe_until - NOW, cap_wait_ms))
    return {'PAUSED', next_step('submit', wait), wait}
  end
  probe = 1  -- taken below, once the cap and the rate limit have let this create through
end
-- status 'submitting' here: the lease expired, an earlier attempt died mid-POST; the video
-- may exist upstream.
if status == 'submitting' and policy == 'fail' then
  redis.call('HINCRBY', K_REC, 'ambiguous_submits', 1)
  visible_terminal(status, 'failed',
    'ambiguous submit: an earlier attempt died while creating the upstream job')
  release()
  return {'FAILED'}
end
if status == 'pending' and cap > 0 then
  local holding = 0
  for _, n in ipairs(redis.call('HMGET', K_COUNTS, 'submitting', 'queued', 'in_progress', 'tracking')) do
    holding = holding + (tonumber(n) or 0)
  end
  if holding >= cap then
    return {'CAP_FULL', next_step('submit', cap_wait_ms), cap_wait_ms}
  end
end
-- Last of the checks: a call slot is taken only by a create that will be made.
local interval_us = tonumber(ARGV[11])
if interval_us > 0 then
  local wait_ms = take_call_slot(KEYS[10], KEYS[11], interval_us, tonumber(ARGV[12]), 'create')
  if wait_ms > 0 then return {'LIMITED', next_step('submit', wait_ms), wait_ms} end
end
if probe == 1 then
  redis.call('HSET', KEYS[9], 'probe_until_ms', istr(NOW + lease_ms), 'probe_request', ID)
end
local ambiguous = 0
if status == 'pending' then
  set_status(status, 'submitting')
else
  redis.call('HINCRBY', K_REC, 'ambiguous_submits', 1)
  ambiguous = 1
end
local submit_seq = redis.call('HINCRBY', K_REC, 'submit_seq', 1)
local lease_until = NOW + lease_ms
redis.call('HSET', K_REC, 'lease_owner', owner, 'lease_until_ms', istr(lease_until),
  'next_check_at_ms', istr(lease_until))
redis.call('ZADD', K_INFLIGHT, lease_until, ID)
if ambiguous == 1 then emit('submitting', 'ambiguous', '1') else emit('submitting') end
return {'OK', submit_seq, ambiguous, probe}
