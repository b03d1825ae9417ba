-- Take the submit lease (pending -> submitting) if creates aren't paused and the request holds
-- the slot admission reserved for it (lua/_admit.lua) and the shared rate limit admits it. A
-- pending request without a reservation (written or retried by a version before admission)
-- takes a free slot if admission would give it one, else joins its tenant's admission queue.
-- A request that meets a pause gives its reservation back and joins the queue (`paused`):
-- the pause's end admits again (its `admit` timer, lua/pause.lua).
-- KEYS: 9 the pause hash (circuit breaker), 10 the rate limit, 11 its turns (see take_call_slot),
--       12..17 the admission block (lua/_admit.lua).
-- ARGV: 5 expected timer seq, 6 in-flight cap (0 = none; the deployment's, K_ADM_STATE, wins
--       when known), 7 lease (ms), 8 lease owner, 9 ambiguous-submit policy ('resubmit' |
--       'fail'), 10 rate limit interval (µs; 0 = no limit), 11 burst tolerance (µs),
--       12 retention of a request never created upstream (ms), 13..16 the admission block.
-- A pause that has run its time is half-open: one request at a time goes through as a probe
-- (its success resumes creates for everyone; see worker/pause.py).
-- Returns {'OK', submit_seq, ambiguous 0|1, probe 0|1} |
--   {'LEASED' | 'PAUSED' | 'LIMITED', seq, wait_ms} | {'WAITING', reason} |
--   {'CANCELLED'} | {'EXPIRED'} | {'FAILED'} | {'STALE'} | {'MISSING'}
-- KEYS 1..8 and ARGV 1..4: shared by every transition script (producer/contracts.py
-- `common_keys`/`common_args`): record, in-flight zset, status counts, totals, event stream,
-- idempotency mapping (the record key if none), outbox, spec; request id, event stream max
-- length, done channel, retention of a finished record (ms). Optional trailing inline-arm
-- KEYS/ARGV: see lua/_transition.lua.
local K_REC, K_INFLIGHT, K_COUNTS, K_TOTALS = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local K_EVENTS, K_IDEM, K_OUTBOX, K_SPEC = KEYS[5], KEYS[6], KEYS[7], KEYS[8]
local ID, EVENTS_MAXLEN, CHANNEL, RETENTION_MS = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
local K_PAUSE, K_RATE_LIMIT, K_RATE_TURNS = KEYS[9], KEYS[10], KEYS[11]
local K_ADM_STATE, K_ADM_READY, K_ADM_DEADLINES = KEYS[12], KEYS[13], KEYS[14]
local K_ADM_TENANTS, K_ADM_PAUSE, K_ADM_QUEUE = KEYS[15], KEYS[16], KEYS[17]
local EXPECTED_SEQ, CAP, LEASE_MS = ARGV[5], tonumber(ARGV[6]), tonumber(ARGV[7])
local OWNER, POLICY = ARGV[8], ARGV[9]
local INTERVAL_US, TOLERANCE_US = tonumber(ARGV[10]), tonumber(ARGV[11])
local SHORT_RETENTION_MS = tonumber(ARGV[12])
local ADM_PREFIX, ADM_JOB_PREFIX = ARGV[13], ARGV[14]
local ADM_JOB_EXTRA_MS, ADM_MAX = tonumber(ARGV[15]), tonumber(ARGV[16])
--- @include "transition"
--- @include "admit"
local refused = idempotency_key_not_passed()
if refused then return refused end
--- @include "rate_limit"
if redis.call('EXISTS', K_REC) == 0 then return {'MISSING'} end
if get('seq') ~= EXPECTED_SEQ or get('timer') ~= 'submit' then return {'STALE'} end
local status = get('status')
if status ~= 'pending' and status ~= 'submitting' then return {'STALE'} end
if status == 'submitting' then
  local lease_until = num('lease_until_ms')
  if NOW < lease_until then
    -- Another attempt may still be waiting for its POST: never buy the same video twice.
    return {'LEASED', next_step('submit', lease_until - NOW), lease_until - NOW}
  end
end
-- status 'submitting' here: the lease expired, an earlier attempt died mid-POST (rule 1). Its
-- video may exist upstream, whatever ends the request now: Together has no list endpoint and
-- honours no idempotency key, so that job can't be found later. Counted as ambiguous and as
-- possibly billed (stats price it at the model's mean recorded cost), and said so.
local crashed = status == 'submitting'
local MAY_EXIST = 'an earlier attempt died while creating the upstream job, which may have '
  .. 'been created upstream and billed (the upstream cannot list jobs: it cannot be found)'
local function count_crashed()
  redis.call('HINCRBY', K_REC, 'ambiguous_submits', 1)
  possibly_billed(1)
end
local tenant = tenant_of(K_REC)
-- The request ends here: the slot it held (its lease's, or the one admission reserved) is
-- the next waiting request's.
local function free_slot()
  unreserve(K_REC, tenant)
  admit_for(tenant)
end
if get('cancel_requested') == '1' then
  if crashed then count_crashed() end
  visible_terminal(status, 'cancelled', crashed and ('cancelled; ' .. MAY_EXIST) or '')
  release(SHORT_RETENTION_MS)
  free_slot()
  return {'CANCELLED'}
end
if NOW >= num('deadline_at_ms') then
  if crashed then count_crashed() end
  visible_terminal(status, 'expired', crashed and ('deadline passed; ' .. MAY_EXIST)
    or 'deadline passed before the upstream job was created')
  release(SHORT_RETENTION_MS)
  free_slot()
  return {'EXPIRED'}
end
-- The deployment's cap (each worker announces its own at start: the last one wins).
if global_cap() > 0 then CAP = global_cap() end
local admitted = get('admitted') == '1'
-- Back to the admission queue: no timer, the reservation (if any) given back.
local function wait(reason)
  unreserve(K_REC, tenant)
  enter_queue(K_REC, ID, tenant, reason)
  emit('pending', 'waiting', reason)
  if reason ~= 'paused' then admit(ADM_MAX) end
  return {'WAITING', get('waiting') or ''}
end
local paused_until = tonumber(redis.call('HGET', K_PAUSE, 'until_ms') or '0') or 0
local probe = 0
if paused_until > 0 then
  local probe_until = tonumber(redis.call('HGET', K_PAUSE, 'probe_until_ms') or '0') or 0
  if NOW < paused_until or NOW < probe_until then
    if status == 'pending' then return wait('paused') end
    -- A crashed attempt holds its slot: it is looked at again when the pause ends.
    local at = math.max(paused_until, probe_until)
    return {'PAUSED', next_step('submit', at - NOW), at - NOW}
  end
  probe = 1  -- taken below, once the cap and the rate limit have let this create through
end
if crashed and POLICY == 'fail' then
  count_crashed()
  visible_terminal(status, 'failed', 'ambiguous submit: ' .. MAY_EXIST)
  release(SHORT_RETENTION_MS)
  free_slot()
  return {'FAILED'}
end
if status == 'pending' and not admitted then
  -- Written (or retried) by a version before admission: it goes only if admission would
  -- let it, else it waits its turn like any other.
  local reason = blocked_reason(tenant, K_REC, ID)
  if not reason and CAP > 0 and held_total() >= CAP then reason = 'cap' end
  if reason then return wait(reason) end
end
-- Last of the checks: a call slot is taken only by a create that will be made.
if INTERVAL_US > 0 then
  local wait_ms = take_call_slot(K_RATE_LIMIT, K_RATE_TURNS, INTERVAL_US, TOLERANCE_US, 'create')
  if wait_ms > 0 then return {'LIMITED', next_step('submit', wait_ms), wait_ms} end
end
if probe == 1 then
  redis.call('HSET', K_PAUSE, 'probe_until_ms', istr(NOW + LEASE_MS), 'probe_request', ID)
end
local ambiguous = 0
if status == 'pending' then
  unreserve(K_REC, tenant)  -- the reserved slot is now the submit's
  set_status(status, 'submitting')
else
  count_crashed()  -- resubmitted: the crashed attempt's job, if any, is never learned
  ambiguous = 1
end
local submit_seq = redis.call('HINCRBY', K_REC, 'submit_seq', 1)
local lease_until = NOW + LEASE_MS
redis.call('HSET', K_REC, 'lease_owner', OWNER, 'lease_until_ms', istr(lease_until),
  'next_check_at_ms', istr(lease_until))
redis.call('ZADD', K_INFLIGHT, lease_until, ID)
if ambiguous == 1 then emit('submitting', 'ambiguous', '1') else emit('submitting') end
return {'OK', submit_seq, ambiguous, probe}
