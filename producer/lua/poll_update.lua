-- A poll that did not find the upstream job finished: record what it saw, arm the next poll.
-- ARGV: 5 expected timer seq, 6 upstream status ('' when the poll failed), 7 upstream started_at,
--       8 next delay (ms), 9 tracking poll delay (ms), 10 tracking limit (ms), 11 poll error ('' if none),
--       12 '1' if the upstream answered 404 (the job may be gone).
-- KEYS 9..14, ARGV 13..16: the admission block (lua/_admit.lua).
-- Returns {'OK', seq, delay_ms} | {'ABANDONED'} | {'DONE'} | {'STALE'} | {'MISSING'}
-- KEYS 1..8 and ARGV 1..4: shared by every transition script (producer/contracts.py
-- `common_keys`/`common_args`): record, in-flight zset, status counts, totals, event stream,
-- idempotency mapping (the record key if none), outbox, spec; request id, event stream max
-- length, done channel, retention of a finished record (ms). Optional trailing inline-arm
-- KEYS/ARGV: see lua/_transition.lua.
local K_REC, K_INFLIGHT, K_COUNTS, K_TOTALS = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local K_EVENTS, K_IDEM, K_OUTBOX, K_SPEC = KEYS[5], KEYS[6], KEYS[7], KEYS[8]
local ID, EVENTS_MAXLEN, CHANNEL, RETENTION_MS = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
local EXPECTED_SEQ, UPSTREAM_STATUS, STARTED_AT = ARGV[5], ARGV[6], ARGV[7]
local NEXT_DELAY_MS, TRACKING_DELAY_MS = tonumber(ARGV[8]), tonumber(ARGV[9])
local TRACKING_LIMIT_MS, POLL_ERROR = tonumber(ARGV[10]), ARGV[11]
local NOT_FOUND = ARGV[12] == '1'
local K_ADM_STATE, K_ADM_READY, K_ADM_DEADLINES = KEYS[9], KEYS[10], KEYS[11]
local K_ADM_TENANTS, K_ADM_PAUSE, K_ADM_QUEUE = KEYS[12], KEYS[13], KEYS[14]
local ADM_PREFIX, ADM_JOB_PREFIX = ARGV[13], ARGV[14]
local ADM_JOB_EXTRA_MS, ADM_MAX = tonumber(ARGV[15]), tonumber(ARGV[16])
--- @include "transition"
--- @include "admit"
local refused = idempotency_key_not_passed()
if refused then return refused end
if redis.call('EXISTS', K_REC) == 0 then return {'MISSING'} end
if get('seq') ~= EXPECTED_SEQ or get('timer') ~= 'poll' then return {'STALE'} end
local status = get('status')
if not NON_TERMINAL[status] and get('tracking') ~= '1' then return {'DONE'} end
redis.call('HINCRBY', K_REC, 'polls', 1)
if POLL_ERROR ~= '' then
  redis.call('HINCRBY', K_REC, 'poll_errors', 1)
else
  redis.call('HDEL', K_REC, 'poll_errors')
end
-- 404s in a row: only an answer that found the job breaks the streak (a 5xx says nothing).
if NOT_FOUND then
  redis.call('HINCRBY', K_REC, 'not_found_streak', 1)
elseif POLL_ERROR == '' then
  redis.call('HDEL', K_REC, 'not_found_streak')
end
if UPSTREAM_STATUS ~= '' then redis.call('HSET', K_REC, 'upstream_status', UPSTREAM_STATUS) end
-- The start of generation, bracketed by the checks (Redis' clock): after the last check that
-- saw the job queued, by the first that saw it in progress (worker/observed.py).
if UPSTREAM_STATUS == 'queued' then
  redis.call('HSET', K_REC, 'seen_queued_at_ms', istr(NOW))
elseif UPSTREAM_STATUS == 'in_progress' then
  redis.call('HSETNX', K_REC, 'seen_started_by_ms', istr(NOW))
end
set_if('upstream_started_at', STARTED_AT)
if NON_TERMINAL[status] then
  if get('cancel_requested') == '1' then
    visible_terminal(status, 'cancelled', '')
    begin_tracking(TRACKING_LIMIT_MS)
  elseif NOW >= num('deadline_at_ms') then
    visible_terminal(status, 'expired', 'deadline passed before the upstream job finished')
    begin_tracking(TRACKING_LIMIT_MS)
  elseif (UPSTREAM_STATUS == 'queued' or UPSTREAM_STATUS == 'in_progress') and UPSTREAM_STATUS ~= status then
    set_status(status, UPSTREAM_STATUS)
    emit(UPSTREAM_STATUS)
  end
end
local delay = NEXT_DELAY_MS
if get('tracking') == '1' then
  if NOW >= num('tracking_until_ms') then
    redis.call('HSET', K_REC, 'error', (get('error') or '') .. ' (tracking abandoned: the upstream job never finished)')
    release()
    admit_for(tenant_of(K_REC))
    return {'ABANDONED'}
  end
  delay = math.max(delay, TRACKING_DELAY_MS)
end
return {'OK', next_step('poll', delay), delay}
