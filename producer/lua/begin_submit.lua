-- Take the submit lease (pending -> submitting) if creates aren't paused and the in-flight
-- cap admits it. KEYS[9]: the pause hash (circuit breaker).
-- ARGV: 5 expected timer seq, 6 in-flight cap (0 = none), 7 lease (ms), 8 lease owner,
--       9 ambiguous-submit policy ('resubmit' | 'fail'), 10 wait when the cap is full (ms).
-- A pause that has run its time is half-open: one request at a time goes through as a probe
-- (its success resumes creates for everyone; see worker/pause.py).
-- Returns {'OK', submit_seq, ambiguous 0|1, probe 0|1} | {'CAP_FULL' | 'LEASED' | 'PAUSED', seq, wait_ms} |
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
    return {'PAUSED', next_step('submit', probe_until - NOW), probe_until - NOW}
  end
  redis.call('HSET', KEYS[9], 'probe_until_ms', istr(NOW + lease_ms), 'probe_request', ID)
  probe = 1
end
local ambiguous = 0
if status == 'pending' then
  if cap > 0 then
    local holding = 0
    for _, n in ipairs(redis.call('HMGET', K_COUNTS, 'submitting', 'queued', 'in_progress', 'tracking')) do
      holding = holding + (tonumber(n) or 0)
    end
    if holding >= cap then
      return {'CAP_FULL', next_step('submit', cap_wait_ms), cap_wait_ms}
    end
  end
  set_status(status, 'submitting')
else
  -- The lease expired: an earlier attempt died mid-POST; the video may exist upstream.
  redis.call('HINCRBY', K_REC, 'ambiguous_submits', 1)
  ambiguous = 1
  if policy == 'fail' then
    visible_terminal(status, 'failed',
      'ambiguous submit: an earlier attempt died while creating the upstream job')
    release()
    return {'FAILED'}
  end
end
local submit_seq = redis.call('HINCRBY', K_REC, 'submit_seq', 1)
local lease_until = NOW + lease_ms
redis.call('HSET', K_REC, 'lease_owner', owner, 'lease_until_ms', istr(lease_until),
  'next_check_at_ms', istr(lease_until))
redis.call('ZADD', K_INFLIGHT, lease_until, ID)
if ambiguous == 1 then emit('submitting', 'ambiguous', '1') else emit('submitting') end
return {'OK', submit_seq, ambiguous, probe}
