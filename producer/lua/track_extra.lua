-- One check of a superseded upstream job (rule 15; `tracking=extra`: the request's own job has ended,
-- `extra_ids` still lists jobs created by attempts whose answer came late). The poll chain
-- checks them in turn, one per step: an ended one leaves the list, its cost is added once and
-- its slot freed; one still running goes to the back. When none is left, or the tracking
-- limit passes, the record leaves every index.
-- ARGV: 5 expected timer seq, 6 the upstream id checked, 7 its end ('' still running |
--       completed | failed | cancelled | gone: the upstream no longer knows it), 8 its cost
--       (micro-USD, '' if none), 9 next check delay (ms), 10 tracking limit (ms),
--       11 its 404s in a row after this check (0: an answer found it); while above 0 and short
--       of the limit it keeps its turn (one 404 is not "gone": spurious ones happen).
-- KEYS 9..14, ARGV 12..15: the admission block (lua/_admit.lua).
-- Returns {'OK', seq, delay_ms} | {'DONE'} | {'ABANDONED'} | {'STALE'} | {'MISSING'}
-- KEYS 1..8 and ARGV 1..4: shared by every transition script (producer/contracts.py
-- `common_keys`/`common_args`): record, in-flight zset, status counts, totals, event stream,
-- idempotency mapping (the record key if none), outbox, spec; request id, event stream max
-- length, done channel, retention of a finished record (ms). Optional trailing inline-arm
-- KEYS/ARGV: see lua/_transition.lua.
local K_REC, K_INFLIGHT, K_COUNTS, K_TOTALS = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local K_EVENTS, K_IDEM, K_OUTBOX, K_SPEC = KEYS[5], KEYS[6], KEYS[7], KEYS[8]
local ID, EVENTS_MAXLEN, CHANNEL, RETENTION_MS = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
local EXPECTED_SEQ, CHECKED_ID, ENDED, COST = ARGV[5], ARGV[6], ARGV[7], ARGV[8]
local NEXT_DELAY_MS, TRACKING_LIMIT_MS = tonumber(ARGV[9]), tonumber(ARGV[10])
local NOT_FOUND_STREAK = tonumber(ARGV[11]) or 0
local K_ADM_STATE, K_ADM_READY, K_ADM_DEADLINES = KEYS[9], KEYS[10], KEYS[11]
local K_ADM_TENANTS, K_ADM_PAUSE, K_ADM_QUEUE = KEYS[12], KEYS[13], KEYS[14]
local ADM_PREFIX, ADM_JOB_PREFIX = ARGV[12], ARGV[13]
local ADM_JOB_EXTRA_MS, ADM_MAX = tonumber(ARGV[14]), tonumber(ARGV[15])
--- @include "transition"
--- @include "admit"
local refused = idempotency_key_not_passed()
if refused then return refused end
if redis.call('EXISTS', K_REC) == 0 then return {'MISSING'} end
if get('seq') ~= EXPECTED_SEQ or get('timer') ~= 'poll' then return {'STALE'} end
if get('tracking') ~= 'extra' then return {'STALE'} end
if not get('tracking_until_ms') then
  redis.call('HSET', K_REC, 'tracking_until_ms', istr(NOW + TRACKING_LIMIT_MS))
end
redis.call('HINCRBY', K_REC, 'polls', 1)
local extras, rest = extra_ids(), {}
local found = false
for _, v in ipairs(extras) do
  if v == CHECKED_ID and not found then found = true else rest[#rest + 1] = v end
end
if found and ENDED == '' and NOT_FOUND_STREAK > 0 then
  -- 404s short of the limit: the same job is asked again next.
  redis.call('HSET', K_REC, 'extra_not_found_streak', NOT_FOUND_STREAK)
  table.insert(rest, 1, CHECKED_ID)
elseif found then
  redis.call('HDEL', K_REC, 'extra_not_found_streak')
  if ENDED ~= '' then
    count(K_COUNTS, 'superseded', -1)
    if COST ~= '' then
      local label = model_label()
      redis.call('HINCRBY', K_REC, 'superseded_cost_micro_usd', COST)
      count(K_TOTALS, 'cost_micro' .. SEP .. label, COST)
      count(K_TOTALS, 'costed' .. SEP .. label, 1)
      budget_charge(PREFIX, K_REC, tenant_name(), tonumber(COST), 0)
    end
    emit(get('status'), 'superseded_id', CHECKED_ID, 'superseded_outcome', ENDED)
  else
    rest[#rest + 1] = CHECKED_ID  -- still running: the others get their turn first
  end
end
local function stop_tracking()
  redis.call('HSET', K_REC, 'extra_ids', '[]', 'tracking', '0', 'timer', '')
  redis.call('ZREM', K_INFLIGHT, ID)
end
if #rest == 0 then
  stop_tracking()
  if found and ENDED ~= '' then admit_for(tenant_of(K_REC)) end
  return {'DONE'}
end
if NOW >= num('tracking_until_ms') then
  count(K_COUNTS, 'superseded', -#rest)
  -- Never seen to end: each counts at the request's estimate.
  local estimate = #rest * budget_estimate_of(K_REC)
  budget_charge(PREFIX, K_REC, tenant_name(), estimate, estimate)
  redis.call('HSET', K_REC, 'upstream_error',
    'tracking abandoned: ' .. #rest .. ' superseded upstream job(s) never finished')
  stop_tracking()
  admit_for(tenant_of(K_REC))
  return {'ABANDONED'}
end
-- An ended superseded job freed its slot.
if found and ENDED ~= '' then admit_for(tenant_of(K_REC)) end
redis.call('HSET', K_REC, 'extra_ids', encode_ids(rest))
local delay = NEXT_DELAY_MS
if ENDED ~= '' then delay = 0 end  -- the next one's turn at once
return {'OK', next_step('poll', delay), delay}
