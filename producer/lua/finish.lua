-- The upstream job is finished: record outputs and cost, end the request, leave every index.
-- ARGV: 5 expected timer seq, 6 upstream outcome (completed | failed | cancelled), 7 cost
--       (micro-USD, '' if none),
--       8 video url, 9 error, 10 upstream created_at, 11 started_at, 12 done_at,
--       13 '1' to owe a download of the video (completed only), 14 '1' if the job completed
--       but its cost is missing or unusable (recorded as unknown, never as zero).
-- KEYS 9..14, ARGV 15..18: the admission block (lua/_admit.lua).
-- Returns {'OK', final status, now ms, '1' if the visible status ended now} | {'STALE'} | {'MISSING'}
-- KEYS 1..8 and ARGV 1..4: shared by every transition script (producer/contracts.py
-- `common_keys`/`common_args`): record, in-flight zset, status counts, totals, event stream,
-- idempotency mapping (the record key if none), outbox, spec; request id, event stream max
-- length, done channel, retention of a finished record (ms). Optional trailing inline-arm
-- KEYS/ARGV: see lua/_transition.lua.
local K_REC, K_INFLIGHT, K_COUNTS, K_TOTALS = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local K_EVENTS, K_IDEM, K_OUTBOX, K_SPEC = KEYS[5], KEYS[6], KEYS[7], KEYS[8]
local ID, EVENTS_MAXLEN, CHANNEL, RETENTION_MS = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
local EXPECTED_SEQ, OUTCOME, COST = ARGV[5], ARGV[6], ARGV[7]
local VIDEO_URL, ERROR = ARGV[8], ARGV[9]
local CREATED_AT, STARTED_AT, DONE_AT = ARGV[10], ARGV[11], ARGV[12]
local OWE_DOWNLOAD, COST_UNKNOWN = ARGV[13] == '1', ARGV[14] == '1'
local K_ADM_STATE, K_ADM_READY, K_ADM_DEADLINES = KEYS[9], KEYS[10], KEYS[11]
local K_ADM_TENANTS, K_ADM_PAUSE, K_ADM_QUEUE = KEYS[12], KEYS[13], KEYS[14]
local ADM_PREFIX, ADM_JOB_PREFIX = ARGV[15], ARGV[16]
local ADM_JOB_EXTRA_MS, ADM_MAX = tonumber(ARGV[17]), tonumber(ARGV[18])
--- @include "transition"
--- @include "admit"
local refused = idempotency_key_not_passed()
if refused then return refused end
if redis.call('EXISTS', K_REC) == 0 then return {'MISSING'} end
if get('seq') ~= EXPECTED_SEQ or get('timer') ~= 'poll' then return {'STALE'} end
local status = get('status')
if not NON_TERMINAL[status] and get('tracking') ~= '1' then return {'STALE'} end
redis.call('HINCRBY', K_REC, 'polls', 1)
redis.call('HSET', K_REC, 'upstream_status', OUTCOME)
-- `cancelled` is the user's word: a job the upstream cancelled ends the request failed.
local outcome, err = OUTCOME, ERROR
if outcome == 'cancelled' then
  outcome = 'failed'
  err = 'cancelled by the upstream' .. ((err or '') ~= '' and (': ' .. err) or '')
end
set_if('video_url', VIDEO_URL)
set_if('upstream_created_at', CREATED_AT)
set_if('upstream_started_at', STARTED_AT)
set_if('upstream_done_at', DONE_AT)
if COST ~= '' then
  redis.call('HSET', K_REC, 'cost_micro_usd', COST)
  count(K_TOTALS, 'cost_micro' .. SEP .. model_label(), COST)
  count(K_TOTALS, 'costed' .. SEP .. model_label(), 1)
elseif COST_UNKNOWN then
  redis.call('HSET', K_REC, 'cost_unknown', '1')
  count(K_TOTALS, 'cost_unknown' .. SEP .. model_label(), 1)
end
if OWE_DOWNLOAD and outcome == 'completed' and NON_TERMINAL[status] and (VIDEO_URL or '') ~= '' then
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
admit_for(tenant_of(K_REC))
return {'OK', status, istr(NOW), ended_now}
