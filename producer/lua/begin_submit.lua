-- Take the submit lease (pending -> submitting) if creates aren't paused and the in-flight
-- cap and the shared rate limit admit it.
-- KEYS: 9 the pause hash (circuit breaker), 10 the rate limit, 11 its turns (see take_call_slot).
-- ARGV: 5 expected timer seq, 6 in-flight cap (0 = none), 7 lease (ms), 8 lease owner,
--       9 ambiguous-submit policy ('resubmit' | 'fail'), 10 wait when the cap is full (ms),
--       11 rate limit interval (µs; 0 = no limit), 12 burst tolerance (µs), 13 retention of a
--       request never created upstream (ms).
-- A pause that has run its time is half-open: one request at a time goes through as a probe
-- (its success resumes creates for everyone; see worker/pause.py).
-- Returns {'OK', submit_seq, ambiguous 0|1, probe 0|1} |
--   {'CAP_FULL' | 'LEASED' | 'PAUSED' | 'LIMITED', seq, wait_ms} |
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
local EXPECTED_SEQ, CAP, LEASE_MS = ARGV[5], tonumber(ARGV[6]), tonumber(ARGV[7])
local OWNER, POLICY, CAP_WAIT_MS = ARGV[8], ARGV[9], tonumber(ARGV[10])
local INTERVAL_US, TOLERANCE_US = tonumber(ARGV[11]), tonumber(ARGV[12])
local SHORT_RETENTION_MS = tonumber(ARGV[13])
--- @include "transition"
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
if get('cancel_requested') == '1' then
  if crashed then count_crashed() end
  visible_terminal(status, 'cancelled', crashed and ('cancelled; ' .. MAY_EXIST) or '')
  release(SHORT_RETENTION_MS)
  return {'CANCELLED'}
end
if NOW >= num('deadline_at_ms') then
  if crashed then count_crashed() end
  visible_terminal(status, 'expired', crashed and ('deadline passed; ' .. MAY_EXIST)
    or 'deadline passed before the upstream job was created')
  release(SHORT_RETENTION_MS)
  return {'EXPIRED'}
end
local paused_until = tonumber(redis.call('HGET', K_PAUSE, 'until_ms') or '0') or 0
local probe = 0
if NOW < paused_until then
  return {'PAUSED', next_step('submit', paused_until - NOW), paused_until - NOW}
elseif paused_until > 0 then
  local probe_until = tonumber(redis.call('HGET', K_PAUSE, 'probe_until_ms') or '0') or 0
  if NOW < probe_until then
    -- A probe is out: ask again soon (as when the cap is full), not at its lease's end, so
    -- creates resume within cap_wait of the probe's success.
    local wait = math.max(1, math.min(probe_until - NOW, CAP_WAIT_MS))
    return {'PAUSED', next_step('submit', wait), wait}
  end
  probe = 1  -- taken below, once the cap and the rate limit have let this create through
end
if crashed and POLICY == 'fail' then
  count_crashed()
  visible_terminal(status, 'failed', 'ambiguous submit: ' .. MAY_EXIST)
  release(SHORT_RETENTION_MS)
  return {'FAILED'}
end
if status == 'pending' and CAP > 0 then
  local holding = 0
  for _, n in ipairs(redis.call('HMGET', K_COUNTS, unpack(HOLDING_SLOT))) do
    holding = holding + (tonumber(n) or 0)
  end
  if holding >= CAP then
    return {'CAP_FULL', next_step('submit', CAP_WAIT_MS), CAP_WAIT_MS}
  end
end
-- The spend budgets (the tenant's and the deployment's) must cover the video's estimate,
-- reserved here once (a retry keeps it); else it waits for a new period or a raised budget,
-- or fails by the tenant's over-budget policy (rule 25).
if status == 'pending' and not get('budget_reserved_micro_usd') then
  local verdict = budget_gate(PREFIX, tenant_name(), model_label(), NOW)
  if not verdict.ok then
    if verdict.policy == 'fail' then
      visible_terminal(status, 'failed', verdict.error)
      release(SHORT_RETENTION_MS)
      return {'FAILED'}
    end
    return {'OVER_BUDGET', next_step('submit', CAP_WAIT_MS), CAP_WAIT_MS}
  end
  budget_reserve(PREFIX, K_REC, tenant_name(), verdict)
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
