-- Record the upstream id the moment create answers (submitting -> queued | in_progress).
-- KEYS: 9 the create failure streak (Keys.pause_streak): the upstream answered, so it ends;
--       10 the set of models the upstream has accepted (see create.lua).
-- ARGV: 5 submit seq, 6 upstream id, 7 upstream status, 8 upstream created_at, 9 started_at,
--       10 first poll delay (ms), 11 tracking limit (ms), 12 tracking poll delay (ms),
--       13 most models the accepted set may hold (a bound on the totals' labels).
-- KEYS 11..16, ARGV 14..17: the admission block (lua/_admit.lua).
-- Returns {'OK', seq, delay_ms} | {'STALE'} | {'MISSING'}. Every upstream id is kept; a stale
-- one (a superseded job: its attempt answered after another went out) is checked until it
-- ends, after the request's own job (lua/track_extra.lua).
-- KEYS 1..8 and ARGV 1..4: shared by every transition script (producer/contracts.py
-- `common_keys`/`common_args`): record, in-flight zset, status counts, totals, event stream,
-- idempotency mapping (the record key if none), outbox, spec; request id, event stream max
-- length, done channel, retention of a finished record (ms). Optional trailing inline-arm
-- KEYS/ARGV: see lua/_transition.lua.
local K_REC, K_INFLIGHT, K_COUNTS, K_TOTALS = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local K_EVENTS, K_IDEM, K_OUTBOX, K_SPEC = KEYS[5], KEYS[6], KEYS[7], KEYS[8]
local ID, EVENTS_MAXLEN, CHANNEL, RETENTION_MS = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
local K_PAUSE_STREAK, K_MODELS = KEYS[9], KEYS[10]
local SUBMIT_SEQ, UPSTREAM_ID, UPSTREAM_STATUS = ARGV[5], ARGV[6], ARGV[7]
local CREATED_AT, STARTED_AT = ARGV[8], ARGV[9]
local FIRST_DELAY_MS, TRACKING_LIMIT_MS = tonumber(ARGV[10]), tonumber(ARGV[11])
local TRACKING_DELAY_MS, MAX_MODELS = tonumber(ARGV[12]), tonumber(ARGV[13])
local K_ADM_STATE, K_ADM_READY, K_ADM_DEADLINES = KEYS[11], KEYS[12], KEYS[13]
local K_ADM_TENANTS, K_ADM_PAUSE, K_ADM_QUEUE = KEYS[14], KEYS[15], KEYS[16]
local ADM_PREFIX, ADM_JOB_PREFIX = ARGV[14], ARGV[15]
local ADM_JOB_EXTRA_MS, ADM_MAX = tonumber(ARGV[16]), tonumber(ARGV[17])
--- @include "transition"
--- @include "admit"
local refused = idempotency_key_not_passed()
if refused then return refused end
redis.call('DEL', K_PAUSE_STREAK)
if redis.call('EXISTS', K_REC) == 0 then return {'MISSING'} end
local status = get('status')
if status ~= 'submitting' or get('submit_seq') ~= SUBMIT_SEQ then
  -- Known already: this write went through before and its reply was lost (a retried write).
  local known = get('upstream_id') == UPSTREAM_ID
    or string.find(get('upstream_ids') or '', UPSTREAM_ID, 1, true) ~= nil
  add_upstream_id(UPSTREAM_ID, false)
  -- The attempt counted as possibly billed when its lease expired has a known job now.
  if not known and num('possibly_billed') > 0 then possibly_billed(-1) end
  -- Already ended and out of every index: the chain starts again to check this job.
  -- (Not one waiting for admission: its chain starts when it is admitted.)
  if (get('timer') or '') == '' and not get('waiting') then release() end
  return {'STALE'}
end
-- The upstream accepted this model: count it under its own name from now on (bounded: the
-- upstream accepts only real models, and the set holds at most MAX_MODELS).
if get('model_unverified') == '1' then
  local model = get('model') or ''
  if redis.call('SISMEMBER', K_MODELS, model) == 1
      or redis.call('SCARD', K_MODELS) < MAX_MODELS then
    redis.call('SADD', K_MODELS, model)
    -- What this record counted under 'other' moves to the model's own name.
    local pb = num('possibly_billed')
    local listed = get('upstream_ids')
    local superseded = listed and #cjson.decode(listed) or 0  -- no own id yet: all stale
    redis.call('HDEL', K_REC, 'model_unverified')
    for field, n in pairs({possibly_billed = pb, superseded = superseded}) do
      if n > 0 then
        count(K_TOTALS, field .. SEP .. 'other', -n)
        count(K_TOTALS, field .. SEP .. model, n)
      end
    end
  end
end
add_upstream_id(UPSTREAM_ID, true)
redis.call('HSET', K_REC, 'upstream_id', UPSTREAM_ID, 'submitted_at_ms', istr(NOW),
  'upstream_status', UPSTREAM_STATUS)
-- What the checks of an earlier upstream job of this request saw is not this job's.
redis.call('HDEL', K_REC, 'lease_owner', 'lease_until_ms', 'seen_queued_at_ms', 'seen_started_by_ms')
set_if('upstream_created_at', CREATED_AT)
set_if('upstream_started_at', STARTED_AT)
local new = 'queued'
if UPSTREAM_STATUS == 'in_progress' then new = 'in_progress' end
local delay = FIRST_DELAY_MS
if get('cancel_requested') == '1' then
  visible_terminal(status, 'cancelled', '')
  begin_tracking(TRACKING_LIMIT_MS)
  delay = math.min(delay, TRACKING_DELAY_MS)
elseif NOW >= num('deadline_at_ms') then
  visible_terminal(status, 'expired', 'deadline passed while the upstream job was being created')
  begin_tracking(TRACKING_LIMIT_MS)
  delay = math.min(delay, TRACKING_DELAY_MS)
else
  set_status(status, new)
  emit(new, 'upstream_id', UPSTREAM_ID)
end
-- A create went through: if it was a half-open pause's probe, the pause is over (deleted
-- just before this call, worker/tasks.py) and the waiting requests are admitted.
admit(ADM_MAX)
return {'OK', next_step('poll', delay), delay}
