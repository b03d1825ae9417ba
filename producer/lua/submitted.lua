-- Record the upstream id the moment create answers (submitting -> queued | in_progress).
-- ARGV: 5 submit seq, 6 upstream id, 7 upstream status, 8 upstream created_at, 9 started_at,
--       10 first poll delay (ms), 11 tracking limit (ms), 12 tracking poll delay (ms).
-- KEYS[9]: the create failure streak (Keys.pause_streak): the upstream answered, so it ends.
-- Returns {'OK', seq, delay_ms} | {'STALE'} | {'MISSING'}. Every upstream id is kept, even a stale one.
redis.call('DEL', KEYS[9])
if redis.call('EXISTS', K_REC) == 0 then return {'MISSING'} end
local submit_seq, upstream_id, upstream_status = ARGV[5], ARGV[6], ARGV[7]
local first_delay_ms, limit_ms, tracking_delay_ms = tonumber(ARGV[10]), tonumber(ARGV[11]), tonumber(ARGV[12])
local status = get('status')
if status ~= 'submitting' or get('submit_seq') ~= submit_seq then
  add_upstream_id(upstream_id, false)
  return {'STALE'}
end
add_upstream_id(upstream_id, true)
redis.call('HSET', K_REC, 'upstream_id', upstream_id, 'submitted_at_ms', istr(NOW),
  'upstream_status', upstream_status)
redis.call('HDEL', K_REC, 'lease_owner', 'lease_until_ms')
set_if('upstream_created_at', ARGV[8])
set_if('upstream_started_at', ARGV[9])
local new = 'queued'
if upstream_status == 'in_progress' then new = 'in_progress' end
local delay = first_delay_ms
if get('cancel_requested') == '1' then
  visible_terminal(status, 'cancelled', '')
  begin_tracking(limit_ms)
  delay = math.min(delay, tracking_delay_ms)
elseif NOW >= num('deadline_at_ms') then
  visible_terminal(status, 'expired', 'deadline passed while the upstream job was being created')
  begin_tracking(limit_ms)
  delay = math.min(delay, tracking_delay_ms)
else
  set_status(status, new)
  emit(new, 'upstream_id', upstream_id)
end
return {'OK', next_step('poll', delay), delay}
