-- The create call did not give an upstream id: fail the request, or give the lease back and retry.
-- ARGV: 5 submit seq, 6 mode ('fail' | 'retry'), 7 ambiguous (the upstream may have created it),
--       8 retry delay (ms), 9 error message, 10 ambiguous-submit policy ('resubmit' | 'fail').
-- Returns {'FAILED'} | {'RETRY', seq, delay_ms} | {'STALE'} | {'MISSING'}
if redis.call('EXISTS', K_REC) == 0 then return {'MISSING'} end
local submit_seq, mode, ambiguous = ARGV[5], ARGV[6], ARGV[7] == '1'
local delay_ms, err, policy = tonumber(ARGV[8]), ARGV[9], ARGV[10]
local status = get('status')
if status ~= 'submitting' or get('submit_seq') ~= submit_seq then return {'STALE'} end
if ambiguous then
  redis.call('HINCRBY', K_REC, 'ambiguous_submits', 1)
  if policy == 'fail' then
    mode = 'fail'
    err = 'ambiguous submit: ' .. err
  end
end
if mode == 'fail' then
  visible_terminal(status, 'failed', err)
  release()
  return {'FAILED'}
end
redis.call('HDEL', K_REC, 'lease_owner', 'lease_until_ms')
redis.call('HSET', K_REC, 'error', err)
set_status(status, 'pending')
emit('pending', 'retry', err)
return {'RETRY', next_step('submit', delay_ms), delay_ms}
