-- A poll that did not find the upstream job finished: record what it saw, arm the next poll.
-- ARGV: 5 expected timer seq, 6 upstream status ('' when the poll failed), 7 upstream started_at,
--       8 next delay (ms), 9 tracking poll delay (ms), 10 tracking limit (ms), 11 poll error ('' if none),
--       12 '1' if the upstream answered 404 (the job may be gone).
-- Returns {'OK', seq, delay_ms} | {'ABANDONED'} | {'DONE'} | {'STALE'} | {'MISSING'}
if redis.call('EXISTS', K_REC) == 0 then return {'MISSING'} end
local expected_seq, upstream_status, started_at = ARGV[5], ARGV[6], ARGV[7]
local delay, tracking_delay_ms, limit_ms, poll_error = tonumber(ARGV[8]), tonumber(ARGV[9]), tonumber(ARGV[10]), ARGV[11]
local not_found = ARGV[12] == '1'
if get('seq') ~= expected_seq or get('timer') ~= 'poll' then return {'STALE'} end
local status = get('status')
if not NON_TERMINAL[status] and get('tracking') ~= '1' then return {'DONE'} end
redis.call('HINCRBY', K_REC, 'polls', 1)
if poll_error ~= '' then
  redis.call('HINCRBY', K_REC, 'poll_errors', 1)
else
  redis.call('HDEL', K_REC, 'poll_errors')
end
-- 404s in a row: only an answer that found the job breaks the streak (a 5xx says nothing).
if not_found then
  redis.call('HINCRBY', K_REC, 'not_found_streak', 1)
elseif poll_error == '' then
  redis.call('HDEL', K_REC, 'not_found_streak')
end
if upstream_status ~= '' then redis.call('HSET', K_REC, 'upstream_status', upstream_status) end
set_if('upstream_started_at', started_at)
if NON_TERMINAL[status] then
  if get('cancel_requested') == '1' then
    visible_terminal(status, 'cancelled', '')
    begin_tracking(limit_ms)
  elseif NOW >= num('deadline_at_ms') then
    visible_terminal(status, 'expired', 'deadline passed before the upstream job finished')
    begin_tracking(limit_ms)
  elseif (upstream_status == 'queued' or upstream_status == 'in_progress') and upstream_status ~= status then
    set_status(status, upstream_status)
    emit(upstream_status)
  end
end
if get('tracking') == '1' then
  if NOW >= num('tracking_until_ms') then
    redis.call('HSET', K_REC, 'error', (get('error') or '') .. ' (tracking abandoned: the upstream job never finished)')
    release()
    return {'ABANDONED'}
  end
  delay = math.max(delay, tracking_delay_ms)
end
return {'OK', next_step('poll', delay), delay}
