-- The upstream job is finished: record outputs and cost, end the request, leave every index.
-- ARGV: 5 expected timer seq, 6 upstream outcome (completed | failed | cancelled), 7 cost
--       (micro-USD, '' if none),
--       8 video url, 9 error, 10 upstream created_at, 11 started_at, 12 done_at,
--       13 '1' to owe a download of the video (completed only).
-- Returns {'OK', final status, now ms, '1' if the visible status ended now} | {'STALE'} | {'MISSING'}
if redis.call('EXISTS', K_REC) == 0 then return {'MISSING'} end
local expected_seq, outcome, cost = ARGV[5], ARGV[6], ARGV[7]
local err = ARGV[9]
if get('seq') ~= expected_seq or get('timer') ~= 'poll' then return {'STALE'} end
local status = get('status')
if not NON_TERMINAL[status] and get('tracking') ~= '1' then return {'STALE'} end
redis.call('HINCRBY', K_REC, 'polls', 1)
redis.call('HSET', K_REC, 'upstream_status', outcome)
-- `cancelled` is the user's word: a job the upstream cancelled ends the request failed.
if outcome == 'cancelled' then
  outcome = 'failed'
  err = 'cancelled by the upstream' .. ((err or '') ~= '' and (': ' .. err) or '')
end
set_if('video_url', ARGV[8])
set_if('upstream_created_at', ARGV[10])
set_if('upstream_started_at', ARGV[11])
set_if('upstream_done_at', ARGV[12])
if cost ~= '' then
  redis.call('HSET', K_REC, 'cost_micro_usd', cost)
  redis.call('HINCRBY', K_TOTALS, 'cost_micro' .. SEP .. get('model'), cost)
end
if ARGV[13] == '1' and outcome == 'completed' and NON_TERMINAL[status] and (ARGV[8] or '') ~= '' then
  owe('download')
end
local ended_now = '0'
if NON_TERMINAL[status] then
  visible_terminal(status, outcome, err)
  status = outcome
  ended_now = '1'
else
  set_if('upstream_error', err)
  emit(status, 'tracked_outcome', outcome)
end
release()
return {'OK', status, istr(NOW), ended_now}
