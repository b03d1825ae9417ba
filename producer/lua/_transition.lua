-- Helpers of the transition scripts (`--- @include "transition"` right after a script has
-- named its KEYS and ARGV). Expects the shared locals every transition script declares:
--   K_REC, K_INFLIGHT, K_COUNTS, K_TOTALS, K_EVENTS, K_IDEM, K_OUTBOX, K_SPEC (KEYS 1..8),
--   ID, EVENTS_MAXLEN, CHANNEL, RETENTION_MS (ARGV 1..4).
-- Defines functions only, plus two read-only bindings: NOW (Redis TIME: one clock for leases
-- and deadlines, never a host's) and ARM (the optional trailing step to enqueue, see below).
-- Writes nothing until a script calls a helper.
--- @include "constants"
--- @include "numbers"
--- @include "wake"

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local NOW = now_ms()


-- A caller that forgot the idempotency mapping would leave it behind forever (rule 9). Each
-- script that can end a request calls this before writing anything (a script error does not
-- roll back earlier writes) and returns its error reply if there is one.
-- A tenant's mapping is named `idem@{tenant}:` (producer/keys.py): one passed without the
-- tenant would expire `default`'s mapping of the same key instead.
local function idempotency_key_not_passed()
  if (redis.call('HGET', K_REC, 'idempotency_key') or '') == '' then return nil end
  if K_IDEM == K_REC then
    return redis.error_reply('genqueue: the idempotency key of ' .. ID .. ' was not passed')
  end
  local tenant = redis.call('HGET', K_REC, 'tenant') or ''
  if tenant ~= '' and not string.find(K_IDEM, ':idem@' .. tenant .. ':', 1, true) then
    return redis.error_reply('genqueue: the tenant of ' .. ID .. ' was not passed')
  end
  return nil
end

local function get(field)
  return redis.call('HGET', K_REC, field)
end

local function num(field)
  return tonumber(redis.call('HGET', K_REC, field) or '0') or 0
end

--- @include "budget"
-- The deployment's key prefix: the budget keys are derived from it (producer/keys.py).
local PREFIX = string.sub(K_COUNTS, 1, #K_COUNTS - #COUNTS_SUFFIX)

local function tenant_name()
  local tenant = get('tenant')
  if tenant and tenant ~= '' then return tenant end
  return DEFAULT_TENANT
end

-- The request's reservation ends without a reported cost: released if no upstream job of its
-- own was ever created, else counted at its estimate (a job that never said what it cost).
local function budget_unreported()
  if not get('budget_reserved_micro_usd') then return end
  if get('upstream_id') then
    local estimate = budget_estimate_of(K_REC)
    budget_settle(PREFIX, K_REC, tenant_name(), estimate, estimate)
  else
    budget_settle(PREFIX, K_REC, tenant_name(), 0, 0)
  end
end

-- A tenant's request names it (consumers can follow one tenant); `default`'s do not.
local function emit(status, ...)
  local tenant = redis.call('HGET', K_REC, 'tenant')
  if tenant and tenant ~= '' then
    redis.call('XADD', K_EVENTS, 'MAXLEN', '~', EVENTS_MAXLEN, '*',
      'id', ID, 'status', status, 'at_ms', istr(NOW), 'tenant', tenant, ...)
  else
    redis.call('XADD', K_EVENTS, 'MAXLEN', '~', EVENTS_MAXLEN, '*',
      'id', ID, 'status', status, 'at_ms', istr(NOW), ...)
  end
end

-- Count in the cluster-wide field and, for a tenant other than `default`, in its own
-- `t|{tenant}|{field}` of the same hash (`default`'s figures are the cluster's minus the
-- others': records written before tenants existed count as `default`'s without a write).
local function count(hash, field, by)
  redis.call('HINCRBY', hash, field, by)
  local tenant = redis.call('HGET', K_REC, 'tenant')
  if tenant and tenant ~= '' then
    redis.call('HINCRBY', hash, TENANT_FIELD_PREFIX .. SEP .. tenant .. SEP .. field, by)
  end
end

local function set_status(old, new)
  if NON_TERMINAL[old] then count(K_COUNTS, old, -1) end
  if NON_TERMINAL[new] then count(K_COUNTS, new, 1) end
  redis.call('HSET', K_REC, 'status', new)
end

-- A caller may pass the arq job of the step it expects next (producer/timers.py:
-- inline_arm): 5 more KEYS (job, result, queue, the queue's wake list and wake-at key) and
-- 4 more ARGV (payload, how long the job may wait past its run time (ms), job id,
-- 'genqueue:arm') at the very end. The step is then enqueued here, in the same atomic step as
-- the transition: one round trip less per check.
local ARM = nil
if ARGV[#ARGV] == INLINE_ARM_MARKER then
  ARM = {job = KEYS[#KEYS - 4], result = KEYS[#KEYS - 3], queue = KEYS[#KEYS - 2],
    wake = KEYS[#KEYS - 1], wake_at = KEYS[#KEYS],
    payload = ARGV[#ARGV - 3], extra_ms = tonumber(ARGV[#ARGV - 2]), id = ARGV[#ARGV - 1]}
end

-- Enqueue the passed job if it is this step (same check as lua/arm.lua: a job or result
-- key present means already armed). A caller whose guess was wrong arms the step itself.
local function arm(job_id, at)
  if not ARM or ARM.id ~= job_id then return end
  if redis.call('EXISTS', ARM.job) == 1 or redis.call('EXISTS', ARM.result) == 1 then return end
  redis.call('PSETEX', ARM.job, math.max(at - NOW, 0) + ARM.extra_ms, ARM.payload)
  redis.call('ZADD', ARM.queue, at, job_id)
  wake_one(ARM.wake, ARM.wake_at, at)
end

-- Move to the next timer step `{kind}:{id}:{seq}` due at the returned time; it is enqueued
-- here when the caller passed it, else by the caller.
local function next_step(kind, delay_ms)
  local seq = redis.call('HINCRBY', K_REC, 'seq', 1)
  local at = NOW + math.max(0, delay_ms)
  redis.call('HSET', K_REC, 'timer', kind, 'next_check_at_ms', istr(at))
  redis.call('ZADD', K_INFLIGHT, at, ID)
  arm(kind .. ':' .. ID .. ':' .. istr(seq), at)
  return seq
end

-- Record a side effect owed after the end (rule 4: in the same step as the terminal status,
-- so a crash right after loses none); the outbox dispatcher runs it.
local function owe(effect)
  redis.call('HSET', K_REC, effect .. '_state', 'pending', effect .. '_attempts', '0')
  if not redis.call('HGET', K_REC, 'side_seq') then redis.call('HSET', K_REC, 'side_seq', '0') end
  redis.call('ZADD', K_OUTBOX, 'NX', NOW, ID)
  -- The outbox's wake keys (producer/keys.py Keys.side_wake): a waiting side worker looks now.
  wake_one(K_OUTBOX .. WAKE_SUFFIX, K_OUTBOX .. WAKE_AT_SUFFIX, NOW)
end

-- The model a record is counted under in the totals (and so in metric labels): its own name
-- once the upstream has accepted the model (create.lua marks a model it does not know yet,
-- submitted.lua lifts the mark), else 'other'. Strings nobody accepted can't grow the totals.
local function model_label()
  if get('model_unverified') == '1' then return 'other' end
  return get('model') or 'other'
end

-- An attempt that may have created an upstream job genqueue will never learn of: counted
-- on the record and in the totals (stats price it at the model's recorded mean cost).
local function possibly_billed(n)
  redis.call('HINCRBY', K_REC, 'possibly_billed', n)
  count(K_TOTALS, 'possibly_billed' .. SEP .. model_label(), n)
  -- Possible spend at once, in the period the request was admitted in (beside its reservation).
  local estimate = n * budget_estimate_of(K_REC)
  budget_charge(PREFIX, K_REC, tenant_name(), estimate, estimate)
end

-- What the user sees as the end: the status never changes after this.
local function visible_terminal(old, new, err)
  set_status(old, new)
  redis.call('HSET', K_REC, 'finished_at_ms', istr(NOW))
  if err and err ~= '' then redis.call('HSET', K_REC, 'error', err) end
  count(K_TOTALS, 'finished' .. SEP .. model_label() .. SEP .. new, 1)
  -- Schema 1 records kept the URL in the record itself.
  if get('has_webhook') == '1' or (get('webhook_url') or '') ~= '' then
    redis.call('HSET', K_REC, 'webhook_id', 'wh_' .. ID)
    owe('webhook')
  end
  redis.call('PUBLISH', CHANNEL, new)
  emit(new)
end

-- A billed upstream job outlives a cancel or deadline: keep polling it (rule 2).
local function begin_tracking(limit_ms)
  redis.call('HSET', K_REC, 'tracking', '1', 'tracking_until_ms', istr(NOW + limit_ms))
  count(K_COUNTS, 'tracking', 1)
end

-- Superseded upstream jobs (created by an attempt whose answer came after another attempt
-- went out) still to be checked: `extra_ids`, a JSON list. A record written before they were
-- tracked has only `upstream_ids` (every id, the current one included): its extras are
-- derived from it once, and counted as holding slots from then on.
-- cjson writes an empty table as '{}': a list of ids is always written as a JSON array.
local function encode_ids(ids)
  if #ids == 0 then return '[]' end
  return cjson.encode(ids)
end

local function extra_ids()
  local listed = get('extra_ids')
  if listed then return cjson.decode(listed) end
  local all = get('upstream_ids')
  if not all then return {} end
  local extras, current = {}, get('upstream_id')
  for _, v in ipairs(cjson.decode(all)) do
    if v ~= current then extras[#extras + 1] = v end
  end
  redis.call('HSET', K_REC, 'extra_ids', encode_ids(extras))
  if #extras > 0 then
    count(K_COUNTS, 'superseded', #extras)
    count(K_TOTALS, 'superseded' .. SEP .. model_label(), #extras)
  end
  return extras
end

-- Never created upstream, and no attempt that may have been: nothing to bill or to track,
-- so it is kept only for the shorter retention (long enough to list and retry it).
local function never_created()
  return not get('upstream_id') and not get('upstream_ids') and num('possibly_billed') == 0
end

-- Nothing more to watch for the request's own job: leave every index and let the record
-- expire -- unless superseded jobs are still to be checked: then the same timer chain goes on
-- as `tracking=extra` (poll steps check them in turn, lua/track_extra.lua).
-- `short_retention_ms` (optional): the retention of a request never created upstream.
local function release(short_retention_ms)
  budget_unreported()
  if get('tracking') == '1' then count(K_COUNTS, 'tracking', -1) end
  redis.call('HDEL', K_REC, 'lease_owner', 'lease_until_ms')
  local retention = RETENTION_MS
  if short_retention_ms and short_retention_ms > 0 and never_created() then
    retention = math.min(retention, short_retention_ms)
  end
  redis.call('PEXPIRE', K_REC, retention)
  redis.call('PEXPIRE', K_SPEC, retention)
  if K_IDEM ~= K_REC then redis.call('PEXPIRE', K_IDEM, retention) end
  if #extra_ids() > 0 then
    redis.call('HSET', K_REC, 'tracking', 'extra')
    redis.call('HDEL', K_REC, 'tracking_until_ms')  -- track_extra sets its own limit
    next_step('poll', 0)
    return
  end
  redis.call('HSET', K_REC, 'tracking', '0', 'timer', '')
  redis.call('ZREM', K_INFLIGHT, ID)
end

-- Every upstream id a request ever got. A lone id that is (or becomes) `upstream_id` is not
-- repeated in `upstream_ids` (the field appears with a second id): memory per record.
local function add_upstream_id(upstream_id, becomes_current)
  local listed = get('upstream_ids')
  local ids = listed and cjson.decode(listed) or {}
  local held = get('upstream_id')
  if not listed and held then ids = {held} end
  for _, v in ipairs(ids) do
    if v == upstream_id then return end
  end
  if not becomes_current then
    -- Superseded: checked until it ends (its cost added once); holds a slot meanwhile.
    local extras = extra_ids()
    extras[#extras + 1] = upstream_id
    redis.call('HSET', K_REC, 'extra_ids', encode_ids(extras))
    count(K_COUNTS, 'superseded', 1)
    count(K_TOTALS, 'superseded' .. SEP .. model_label(), 1)
  end
  ids[#ids + 1] = upstream_id
  if #ids == 1 and becomes_current then return end
  redis.call('HSET', K_REC, 'upstream_ids', cjson.encode(ids))
end

local function set_if(field, value)
  if value and value ~= '' then redis.call('HSET', K_REC, field, value) end
end

