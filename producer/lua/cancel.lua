-- Ask for a cancel. A pending request ends at once; one whose upstream job exists shows
-- `cancelled` at once but is still tracked so its cost is recorded (rule 2); a submitting one is
-- cancelled when its create answers.
-- ARGV: 5 tracking limit (ms).
-- Returns {'CANCELLED'} | {'REQUESTED'} | {'ALREADY', status} | {'MISSING'}
if redis.call('EXISTS', K_REC) == 0 then return {'MISSING'} end
local limit_ms = tonumber(ARGV[5])
local status = get('status')
if not NON_TERMINAL[status] then return {'ALREADY', status} end
redis.call('HSET', K_REC, 'cancel_requested', '1')
if status == 'pending' then
  visible_terminal(status, 'cancelled', '')
  release()
  return {'CANCELLED'}
end
if status == 'submitting' then return {'REQUESTED'} end
visible_terminal(status, 'cancelled', '')
begin_tracking(limit_ms)
return {'CANCELLED'}
