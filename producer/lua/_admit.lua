-- Admission (producer/admission.py; docs/architecture.md "Admission"): a request that cannot
-- have an upstream slot yet waits in its tenant's admission queue with no timer; the step that
-- frees a slot admits the next one (weighted fair share between tenants, then priority, then
-- the earliest deadline) and arms its submit timer right there.
-- `--- @include "admit"` after the script has named the admission block of its KEYS and ARGV
-- (producer/admission.py `admission_keys` / `admission_args`):
--   K_ADM_STATE (hash: max_inflight, reserve_slots, vtime, pass|{tenant}, expiry_at),
--   K_ADM_READY (zset:
--   tenants that may be admitted, by virtual time), K_ADM_DEADLINES (zset: waiting id ->
--   deadline), K_ADM_TENANTS (the tenants hash), K_ADM_PAUSE (the pause hash), K_ADM_QUEUE
--   (the arq queue); ADM_PREFIX (the key prefix), ADM_JOB_PREFIX (arq's job key prefix),
--   ADM_JOB_EXTRA_MS (how long a job may wait past its run time), ADM_MAX (most admissions
--   per call);
-- and the shared K_INFLIGHT and K_COUNTS.
-- Keys it cannot be given in advance: a tenant's queue `{prefix}:waiting:{tenant}`, the
-- record `{prefix}:req:{id}` of the request it admits, that request's arq job key, and the
-- reservations `{prefix}:admission:admitted`. All are built from the passed prefixes, so
-- under a Redis Cluster hash tag in the prefixes (`{gq}`, and arq's job prefix carrying it
-- too, as docs/scaling.md plans for every job key) they hash to the script's one slot like
-- every declared key.
--- @include "constants"
--- @include "numbers"
--- @include "wake"
--- @include "job"
--- @include "budget"

local ADM_NOW = (function()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end)()
-- Stale entries (ended records still listed) and tenants leaving the ready set cost one turn
-- each: a call never does more than its admissions plus this, whatever the backlog.
local ADM_EXTRA_TURNS = 64
local PRIORITY_BANDS = {high = 0, normal = 1, low = 2}

local function waiting_key(tenant)
  return ADM_PREFIX .. WAITING_INFIX .. tenant
end

local function record_key(id)
  return ADM_PREFIX .. RECORD_INFIX .. id
end

local function tenant_of(rec)
  local t = redis.call('HGET', rec, 'tenant')
  if not t or t == '' then return DEFAULT_TENANT end
  return t
end

-- A count of another record than the script's own (`count` in _transition.lua is K_REC's).
local function count_for(tenant, field, by)
  redis.call('HINCRBY', K_COUNTS, field, by)
  if tenant ~= DEFAULT_TENANT then
    redis.call('HINCRBY', K_COUNTS, TENANT_FIELD_PREFIX .. SEP .. tenant .. SEP .. field, by)
  end
end

local function sum(values)
  local total = 0
  for _, n in ipairs(values) do total = total + (tonumber(n) or 0) end
  return total
end

local function held_total()
  return sum(redis.call('HMGET', K_COUNTS, unpack(HOLDING_SLOT)))
end

local function held_fields(tenant)
  local fields = {}
  for i, f in ipairs(HOLDING_SLOT) do fields[i] = TENANT_FIELD_PREFIX .. SEP .. tenant .. SEP .. f end
  return fields
end

-- Slots a tenant holds. `default` has no fields of its own (records written before tenants
-- count as its): the cluster's minus every other tenant's, O(tenants), never O(requests); only
-- read when `default` has a `max_inflight` of its own.
local function held_by(tenant)
  if tenant ~= DEFAULT_TENANT then return sum(redis.call('HMGET', K_COUNTS, unpack(held_fields(tenant)))) end
  local total = held_total()
  for _, other in ipairs(redis.call('HKEYS', K_ADM_TENANTS)) do
    if other ~= DEFAULT_TENANT then
      total = total - sum(redis.call('HMGET', K_COUNTS, unpack(held_fields(other))))
    end
  end
  return total
end

local function global_cap()
  return tonumber(redis.call('HGET', K_ADM_STATE, 'max_inflight') or '0') or 0
end

local tenant_cache = {}
-- A tenant's admission settings (JSON in the tenants hash; producer/tenants.py TenantConfig).
local function tenant_cfg(tenant)
  local cfg = tenant_cache[tenant]
  if cfg then return cfg end
  local raw = redis.call('HGET', K_ADM_TENANTS, tenant)
  local ok, data = pcall(cjson.decode, raw or '{}')
  if not ok or type(data) ~= 'table' then data = {} end
  local weight = tonumber(data['weight']) or 1
  if weight <= 0 then weight = 1 end
  cfg = {weight = weight, max_inflight = tonumber(data['max_inflight']) or 0,
    max_waiting = tonumber(data['max_waiting']) or 0}
  tenant_cache[tenant] = cfg
  return cfg
end

-- The reserve (docs/architecture.md rule 20): the last `reserve_slots` free slots of the
-- global cap go only to a tenant holding fewer slots than its weighted share of the cap, so a
-- light tenant arriving while a heavy one holds more than its share finds a slot at once
-- instead of waiting a slot turnover. Written by each worker at its start beside the cap
-- (absent: 0, as before the reserve). Never more than cap - 1, none under a cap of 1.
local function reserve_slots(cap)
  if cap <= 1 then return 0 end
  local r = tonumber(redis.call('HGET', K_ADM_STATE, 'reserve_slots') or '0') or 0
  return math.max(0, math.min(math.floor(r), cap - 1))
end

-- Slots held by every configured tenant (and `default`: the rest), and the sum of the
-- weights of the tenants taking part: those holding a slot or ready to be admitted, unless
-- at their own `max_inflight` (they could not use a free slot). O(tenants), read only while
-- the free slots are within the reserve.
local function share_snapshot()
  local held, active, wsum = {}, {}, 0
  local rest = held_total()
  local names = redis.call('HKEYS', K_ADM_TENANTS)
  local has_default = false
  for _, name in ipairs(names) do
    if name == DEFAULT_TENANT then
      has_default = true
    else
      held[name] = sum(redis.call('HMGET', K_COUNTS, unpack(held_fields(name))))
      rest = rest - held[name]
    end
  end
  held[DEFAULT_TENANT] = math.max(rest, 0)
  if not has_default then names[#names + 1] = DEFAULT_TENANT end
  for _, name in ipairs(names) do
    local cfg = tenant_cfg(name)
    local h = held[name]
    local at_own_cap = cfg.max_inflight > 0 and h >= cfg.max_inflight
    if not at_own_cap and (h > 0 or redis.call('ZSCORE', K_ADM_READY, name)) then
      active[name] = true
      wsum = wsum + cfg.weight
    end
  end
  return {held = held, active = active, wsum = wsum}
end

-- Whether `tenant` holds fewer slots than its weighted share of `cap` (it counts as taking
-- part, whatever the snapshot says: it is the one asking).
local function below_share(snap, tenant, cap)
  local w = tenant_cfg(tenant).weight
  local wsum = snap.wsum
  if not snap.active[tenant] then wsum = wsum + w end
  local h = snap.held[tenant]
  if h == nil then h = held_by(tenant) end
  return h < cap * w / wsum
end

-- Whether `tenant` may take a free slot of `cap`: yes while more than the reserve is free,
-- else only below its share.
local function may_take_slot(tenant, cap)
  local r = reserve_slots(cap)
  if r == 0 or cap - held_total() > r then return true end
  return below_share(share_snapshot(), tenant, cap)
end

-- Creates paused (lua/pause.lua): true while the pause runs or its half-open probe is out;
-- else whether it is half-open (then one request at a time may go, as the probe).
local function creates_held()
  local p = redis.call('HMGET', K_ADM_PAUSE, 'until_ms', 'probe_until_ms')
  local untilms = tonumber(p[1] or '0') or 0
  if untilms == 0 then return false, false end
  if ADM_NOW < untilms or ADM_NOW < (tonumber(p[2] or '0') or 0) then return true, false end
  return false, true
end

local function arm_job(kind, first, second, at)
  return arm_arq_job(ADM_JOB_PREFIX, K_ADM_QUEUE, ADM_JOB_EXTRA_MS, ADM_NOW, kind, first, second, at)
end

-- The one expiry timer of every waiting request: armed at `at` unless it already fires
-- earlier (a time in the future, so it never collides with the run that is going on).
local function arm_expiry(at, force)
  at = math.max(at, ADM_NOW + 1)
  local armed = tonumber(redis.call('HGET', K_ADM_STATE, 'expiry_at') or '')
  if not force and armed and armed <= at and armed >= ADM_NOW then return end
  redis.call('HSET', K_ADM_STATE, 'expiry_at', istr(at))
  arm_job(ADMIT_TASK, 'expire', at, at)
end

-- A tenant with waiting requests joins the ready set at its own virtual time, or the
-- current one if that is later: time spent idle (or at its own cap) banks no credit.
local function join_ready(tenant)
  if redis.call('ZSCORE', K_ADM_READY, tenant) then return end
  if redis.call('ZCARD', waiting_key(tenant)) == 0 then return end
  local own = tonumber(redis.call('HGET', K_ADM_STATE, 'pass' .. SEP .. tenant) or '0') or 0
  local now = tonumber(redis.call('HGET', K_ADM_STATE, 'vtime') or '0') or 0
  redis.call('ZADD', K_ADM_READY, math.max(own, now), tenant)
end

local function leave_ready(tenant, pass)
  redis.call('ZREM', K_ADM_READY, tenant)
  redis.call('HSET', K_ADM_STATE, 'pass' .. SEP .. tenant, pass)
end

-- Put a pending request in its tenant's admission queue (`reason`: WAIT_REASONS): no timer,
-- out of the in-flight index (the reconciler looks for lost timers only there).
local function enter_queue(rec, id, tenant, reason)
  local f = redis.call('HMGET', rec, 'priority', 'deadline_at_ms', 'waiting')
  if f[3] then return end
  local deadline = tonumber(f[2] or '0') or 0
  local band = PRIORITY_BANDS[f[1] or 'normal'] or PRIORITY_BANDS['normal']
  redis.call('ZADD', waiting_key(tenant), band * PRIORITY_BAND + deadline, id)
  redis.call('ZADD', K_ADM_DEADLINES, deadline, id)
  redis.call('HSET', rec, 'waiting', reason, 'timer', '')
  redis.call('ZREM', K_INFLIGHT, id)
  count_for(tenant, WAITING_FIELD .. SEP .. reason, 1)
  join_ready(tenant)
  arm_expiry(deadline, false)
end

-- Take a request out of its admission queue (admitted, cancelled, expired); false if it was
-- not waiting.
local function leave_queue(rec, id, tenant)
  local reason = redis.call('HGET', rec, 'waiting')
  if not reason then return false end
  redis.call('ZREM', waiting_key(tenant), id)
  redis.call('ZREM', K_ADM_DEADLINES, id)
  redis.call('HDEL', rec, 'waiting')
  count_for(tenant, WAITING_FIELD .. SEP .. reason, -1)
  return true
end

-- The reservations, `{tenant}|{id}` by when they were made or last seen (K_ADM_STATE's
-- companion `{prefix}:admission:admitted`): lets the safety net give back one a step of a
-- version before admission left behind (repair_reservations).
local function reserved_key()
  return K_ADM_STATE .. ':admitted'
end

-- Give back the slot admission reserved for a pending request; false if it held none.
local function unreserve(rec, tenant)
  if redis.call('HGET', rec, 'admitted') ~= '1' then return false end
  redis.call('HDEL', rec, 'admitted')
  count_for(tenant, 'admitted', -1)
  redis.call('ZREM', reserved_key(), tenant .. SEP .. string.sub(rec, #ADM_PREFIX + #RECORD_INFIX + 1))
  return true
end

-- Reserve a slot for a pending request (counted as `admitted`, part of HOLDING_SLOT).
local function reserve(rec, tenant)
  redis.call('HSET', rec, 'admitted', '1')
  count_for(tenant, 'admitted', 1)
  redis.call('ZADD', reserved_key(), ADM_NOW,
    tenant .. SEP .. string.sub(rec, #ADM_PREFIX + #RECORD_INFIX + 1))
end

-- A reservation whose request is no longer pending with it (a worker of the version before
-- admission took the request on without giving the slot back) is given back; one still held
-- is looked at again later. At most `n` reservations older than `age_ms` per call.
local function repair_reservations(n, age_ms)
  local repaired = 0
  local old = redis.call('ZRANGEBYSCORE', reserved_key(), '-inf', ADM_NOW - age_ms, 'LIMIT', 0, n)
  for _, member in ipairs(old) do
    local cut = string.find(member, SEP, 1, true)
    local tenant, id = string.sub(member, 1, cut - 1), string.sub(member, cut + 1)
    local rec = record_key(id)
    local f = redis.call('HMGET', rec, 'admitted', 'status')
    if f[1] == '1' and f[2] == 'pending' then
      redis.call('ZADD', reserved_key(), ADM_NOW, member)
    elseif f[1] == '1' or not f[2] then  -- left behind (or gone with its record)
      redis.call('ZREM', reserved_key(), member)
      if f[1] == '1' then redis.call('HDEL', rec, 'admitted') end
      count_for(tenant, 'admitted', -1)
      repaired = repaired + 1
    else
      redis.call('ZREM', reserved_key(), member)
    end
  end
  return repaired
end

-- Spend budgets (issue #26, lua/_budget.lua, rule 18). `admission_gate` answers nil (may
-- go) or why the candidate must keep waiting (its tenant then leaves the ready set until an
-- event puts it back); `on_admit` runs in the same step as each admission and reserves the
-- estimate the gate let through, against the tenant's and the deployment's budgets at once.
local budget_verdicts = {}
-- The model label of a request create.lua is writing (its record has no fields yet).
local budget_models = {}

local function candidate_model(rec, id)
  if budget_models[id] then return budget_models[id] end
  local f = redis.call('HMGET', rec, 'model', 'model_unverified')
  if f[2] == '1' or not f[1] then return 'other' end
  return f[1]
end

-- Hash: tenant -> until when (Redis ms: the end of the period that held it) its waiting
-- requests wait for budget (producer/keys.py Keys.budget_held).
local K_BUDGET_HELD = ADM_PREFIX .. BUDGET_SUFFIX .. ':held'

local function admission_gate(rec, id, tenant)
  local verdict = budget_gate(ADM_PREFIX, tenant, candidate_model(rec, id), ADM_NOW)
  budget_verdicts[id] = verdict
  if verdict.ok then return nil end
  -- Held until the period ends (or a budget changes, producer/budgets.py): every waiting
  -- request of the tenant waits for budget meanwhile (it goes only after this one).
  local at = verdict.resume_ms - verdict.offset
  redis.call('HSET', K_BUDGET_HELD, tenant, istr(at))
  -- The next period may cover it: admission runs at its start (one timer per period end).
  arm_job(ADMIT_TASK, 'budget', at, at)
  if verdict.policy == 'fail' and redis.call('HGET', rec, 'waiting') then
    -- `--over-budget fail` and already waiting: out of the queue, to its own submit step,
    -- which fails it (lua/begin_submit.lua; that step admits the next of its tenant).
    leave_queue(rec, id, tenant)
    local seq = redis.call('HINCRBY', rec, 'seq', 1)
    redis.call('HSET', rec, 'timer', SUBMIT_TASK, 'next_check_at_ms', istr(ADM_NOW))
    redis.call('ZADD', K_INFLIGHT, ADM_NOW, id)
    arm_job(SUBMIT_TASK, id, seq, ADM_NOW)
  end
  return 'budget'
end

local function on_admit(rec, id, tenant)
  redis.call('HDEL', K_BUDGET_HELD, tenant)
  if redis.call('HEXISTS', rec, 'budget_reserved_micro_usd') == 1 then return end
  local verdict = budget_verdicts[id]
  if not verdict or not verdict.ok then
    verdict = budget_gate(ADM_PREFIX, tenant, candidate_model(rec, id), ADM_NOW)
  end
  budget_reserve(ADM_PREFIX, rec, tenant, verdict)
end

-- Why a pending request of `tenant` cannot take a slot now (nil: it can). Nobody jumps the
-- queue: with anyone ready to be admitted, a newcomer waits its turn.
local function blocked_reason(tenant, rec, id)
  local held, half_open = creates_held()
  if held then return 'paused' end
  if half_open and (tonumber(redis.call('HGET', K_COUNTS, 'admitted') or '0') or 0) > 0 then
    return 'paused'  -- the probe is admitted and on its way
  end
  -- Over budget waits for budget whatever else would hold it (it is the longer wait).
  local over = admission_gate(rec, id, tenant)
  if over then return over end
  local cfg = tenant_cfg(tenant)
  if cfg.max_inflight > 0 and held_by(tenant) >= cfg.max_inflight then return 'tenant_cap' end
  local cap = global_cap()
  if cap > 0 and held_total() >= cap then return 'cap' end
  -- Within the reserve and above its share: it waits, as if the cap were full.
  if cap > 0 and not may_take_slot(tenant, cap) then return 'cap' end
  if redis.call('ZCARD', K_ADM_READY) > 0 or redis.call('ZCARD', waiting_key(tenant)) > 0 then
    return 'cap'
  end
  return nil
end

-- Admit up to `max_n` waiting requests while the global cap and the picked tenant's own cap
-- allow: the tenant with the lowest virtual time, its best request (priority, then the
-- earliest deadline); each admission reserves the slot, arms the submit timer, and moves the
-- tenant's virtual time on by 1/weight. Returns how many were admitted.
local function admit(max_n)
  if redis.call('ZCARD', K_ADM_READY) == 0 then return 0 end
  local held, half_open = creates_held()
  if held then return 0 end
  if half_open then
    if (tonumber(redis.call('HGET', K_COUNTS, 'admitted') or '0') or 0) > 0 then return 0 end
    max_n = math.min(max_n, 1)
  end
  local cap = global_cap()
  local kept = cap > 0 and reserve_slots(cap) or 0
  local n, turns = 0, max_n + ADM_EXTRA_TURNS
  while n < max_n and turns > 0 do
    turns = turns - 1
    if cap > 0 and held_total() >= cap then break end
    local tenant, pass
    if kept > 0 and cap - held_total() <= kept then
      -- Within the reserve: the first ready tenant (by virtual time) below its share; the
      -- ones passed over keep their place. Nobody below its share ready: the slot stays free.
      local snap = share_snapshot()
      local ready = redis.call('ZRANGE', K_ADM_READY, 0, -1, 'WITHSCORES')
      for i = 1, #ready, 2 do
        if below_share(snap, ready[i], cap) then
          tenant, pass = ready[i], tonumber(ready[i + 1])
          break
        end
      end
    else
      local top = redis.call('ZRANGE', K_ADM_READY, 0, 0, 'WITHSCORES')
      if #top > 0 then tenant, pass = top[1], tonumber(top[2]) end
    end
    if not tenant then break end
    local queue = waiting_key(tenant)
    local cfg = tenant_cfg(tenant)
    local head = redis.call('ZRANGE', queue, 0, 0)
    if #head == 0 then
      leave_ready(tenant, pass)
    elseif cfg.max_inflight > 0 and held_by(tenant) >= cfg.max_inflight then
      leave_ready(tenant, pass)  -- back when one of its slots frees (admit_for)
    else
      local id = head[1]
      local rec = record_key(id)
      local f = redis.call('HMGET', rec, 'waiting', 'status')
      if not f[1] or f[2] ~= 'pending' then
        -- Listed but no longer waiting (ended, or its record expired): dropped.
        redis.call('ZREM', queue, id)
        redis.call('ZREM', K_ADM_DEADLINES, id)
      elseif admission_gate(rec, id, tenant) then
        leave_ready(tenant, pass)
      else
        leave_queue(rec, id, tenant)
        reserve(rec, tenant)
        local seq = redis.call('HINCRBY', rec, 'seq', 1)
        redis.call('HSET', rec, 'timer', SUBMIT_TASK, 'next_check_at_ms', istr(ADM_NOW))
        redis.call('ZADD', K_INFLIGHT, ADM_NOW, id)
        arm_job(SUBMIT_TASK, id, seq, ADM_NOW)
        on_admit(rec, id, tenant)
        -- Never back: a tenant admitted from within the reserve may be ahead of one passed
        -- over.
        local vtime = tonumber(redis.call('HGET', K_ADM_STATE, 'vtime') or '0') or 0
        if pass > vtime then redis.call('HSET', K_ADM_STATE, 'vtime', pass) end
        local next_pass = pass + 1 / cfg.weight
        if redis.call('ZCARD', queue) > 0 then
          redis.call('ZADD', K_ADM_READY, next_pass, tenant)
        else
          leave_ready(tenant, next_pass)
        end
        n = n + 1
      end
    end
  end
  return n
end

-- After one of `tenant`'s slots freed: it may be admitted again, then whoever is next.
local function admit_for(tenant)
  join_ready(tenant)
  return admit(ADM_MAX)
end
