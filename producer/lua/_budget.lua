-- Spend budgets (`--- @include "budget"`): pure helpers, every key derived from the prefix
-- passed in (`Keys.budget` and below: producer/keys.py), every time from the `now_ms` passed
-- in (Redis TIME: one clock), so a script can reserve for a request it did not name in its
-- KEYS (admission admits requests it picks itself; under a Cluster hash tag in the prefix
-- every derived key is in the same slot).
-- Amounts are integer micro-dollars, as the totals keep them (finish.lua): no rounding.
-- Ledgers: one hash per UTC day (`{prefix}:budget:day:YYYY-MM-DD`) and per UTC month
-- (`...:month:YYYY-MM`); fields `reserved_micro`, `spent_micro`, `estimated_micro` (the part
-- of spent counted at an estimate: unknown costs, possibly billed attempts), `admitted`,
-- each deployment-wide and per tenant (`t|{tenant}|{field}`, `default` included). A video
-- counts in the day and the month it was admitted in, whatever period its budget is set
-- for (so changing `/day` to `/month` reads a ledger that was always kept).
--- @include "constants"
--- @include "numbers"

local DAY_MS = 86400000
-- Ledgers outlive their period by this much: a video admitted near the end of a period
-- still settles into it, and `genqueue stats` shows the previous period for a while.
local BUDGET_LEDGER_GRACE_MS = 3 * DAY_MS
-- The estimate: the highest cost among a model's last BUDGET_COST_SAMPLES completions, once
-- BUDGET_MIN_COSTS of them are known (the configured estimate before; producer/budgets.py
-- says why these numbers).
local BUDGET_COST_SAMPLES = 50
local BUDGET_MIN_COSTS = 20

-- Days since 1970-01-01 -> year, month, day (proleptic Gregorian; Howard Hinnant's
-- civil_from_days, exact in doubles for any date Redis can report).
local function civil_from_days(days)
  local z = days + 719468
  local era = math.floor(z / 146097)
  local doe = z - era * 146097
  local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524)
    - math.floor(doe / 146096)) / 365)
  local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
  local mp = math.floor((5 * doy + 2) / 153)
  local d = doy - math.floor((153 * mp + 2) / 5) + 1
  local m = mp < 10 and mp + 3 or mp - 9
  local y = yoe + era * 400
  if m <= 2 then y = y + 1 end
  return y, m, d
end

-- year, month, day -> days since 1970-01-01 (days_from_civil).
local function days_from_civil(y, m, d)
  if m <= 2 then y = y - 1 end
  local era = math.floor(y / 400)
  local yoe = y - era * 400
  local mp = m > 2 and m - 3 or m + 9
  local doy = math.floor((153 * mp + 2) / 5) + d - 1
  local doe = yoe * 365 + math.floor(yoe / 4) - math.floor(yoe / 100) + doy
  return era * 146097 + doe - 719468
end

-- The budget clock: Redis TIME plus a test offset, honoured only while the deployment's
-- budget hash holds one (workers delete it at start unless started with
-- budget_test_clock: producer/budgets.py; no production input writes it).
local function budget_offset_ms(prefix)
  return tonumber(redis.call('HGET', prefix .. BUDGET_SUFFIX, 'test_clock_offset_ms') or '0') or 0
end

-- The periods of a budget-clock time: the day ('YYYY-MM-DD'), its month ('YYYY-MM') and when
-- each ends (budget-clock ms).
local function budget_periods(clock_ms)
  local days = math.floor(clock_ms / DAY_MS)
  local y, m, d = civil_from_days(days)
  local ny, nm = y, m + 1
  if nm == 13 then ny, nm = y + 1, 1 end
  return {
    day = string.format('%04d-%02d-%02d', y, m, d),
    month = string.format('%04d-%02d', y, m),
    day_end_ms = (days + 1) * DAY_MS,
    month_end_ms = days_from_civil(ny, nm, 1) * DAY_MS,
  }
end

-- The ledger keys of the period `kind` ('day' | 'month') a day string ('YYYY-MM-DD') is in.
local function budget_ledger(prefix, kind, day)
  if kind == 'month' then return prefix .. BUDGET_SUFFIX .. ':month:' .. string.sub(day, 1, 7) end
  return prefix .. BUDGET_SUFFIX .. ':day:' .. day
end

local function tenant_part(tenant, field)
  return TENANT_FIELD_PREFIX .. SEP .. tenant .. SEP .. field
end

-- Add each {field, by} of `changes` to a request's day and month ledgers, deployment-wide and
-- for its tenant. `open`: the ledgers of the current period (created if need be); else a
-- settlement, which never recreates a ledger that has expired (its period is long over).
local function budget_ledger_add(prefix, day, tenant, changes, open)
  for _, kind in ipairs({'day', 'month'}) do
    local key = budget_ledger(prefix, kind, day)
    if open or redis.call('EXISTS', key) == 1 then
      for _, c in ipairs(changes) do
        if c[2] ~= 0 then
          redis.call('HINCRBY', key, c[1], c[2])
          redis.call('HINCRBY', key, tenant_part(tenant, c[1]), c[2])
        end
      end
    end
  end
end

-- Set the expiry of the current period's ledgers (real ms: the budget clock minus its offset).
local function budget_ledger_expiry(prefix, periods, offset)
  redis.call('PEXPIREAT', budget_ledger(prefix, 'day', periods.day),
    istr(periods.day_end_ms - offset + BUDGET_LEDGER_GRACE_MS))
  redis.call('PEXPIREAT', budget_ledger(prefix, 'month', periods.day),
    istr(periods.month_end_ms - offset + BUDGET_LEDGER_GRACE_MS))
end

-- A tenant's budget settings (the `budget` object of its JSON in the tenants hash), or {}.
local function tenant_budget(prefix, tenant)
  local raw = redis.call('HGET', prefix .. ':tenants', tenant)
  if not raw then return {} end
  local ok, config = pcall(cjson.decode, raw)
  if not ok or type(config) ~= 'table' or type(config['budget']) ~= 'table' then return {} end
  return config['budget']
end

-- The estimate reserved for a video of `model` (its label in the totals: `other` until the
-- upstream accepted it): the highest of its last completions once enough are known, else the
-- tenant's configured estimate, else the deployment's (written by workers at start), else
-- the built-in default.
local function budget_estimate(prefix, model, tbudget)
  local costs = redis.call('LRANGE', prefix .. BUDGET_SUFFIX .. ':costs:' .. model, 0,
    BUDGET_COST_SAMPLES - 1)
  if #costs >= BUDGET_MIN_COSTS then
    local high = 0
    for _, c in ipairs(costs) do high = math.max(high, tonumber(c) or 0) end
    return high
  end
  local own = tonumber(tbudget['estimate_micro_usd'] or '')
  if own and own > 0 then return own end
  local configured = tonumber(redis.call('HGET', prefix .. BUDGET_SUFFIX, 'cost_estimate_micro_usd') or '')
  if configured and configured > 0 then return configured end
  return BUDGET_DEFAULT_ESTIMATE_MICRO_USD
end

-- A completed video's cost joins its model's sample (newest first, bounded).
local function budget_observe(prefix, model, cost_micro)
  local key = prefix .. BUDGET_SUFFIX .. ':costs:' .. model
  redis.call('LPUSH', key, istr(cost_micro))
  redis.call('LTRIM', key, 0, BUDGET_COST_SAMPLES - 1)
end

local function ledger_used(key, field_prefix)
  local v = redis.call('HMGET', key, field_prefix .. 'reserved_micro', field_prefix .. 'spent_micro')
  return (tonumber(v[1] or '0') or 0) + (tonumber(v[2] or '0') or 0)
end

-- What one budget (`amount` micro-USD per `period`) has left in the current period, given the
-- ledger field prefix ('' for the deployment, 't|{tenant}|' for a tenant).
local function budget_left(prefix, periods, period, amount, field_prefix)
  return amount - ledger_used(budget_ledger(prefix, period, periods.day), field_prefix)
end

-- Can a video of `tenant` and `model` be admitted now? Returns a table:
--   {ok = true, estimate, day, offset, periods} | {ok = false, reason = 'budget',
--   policy = 'hold' | 'fail', error, resume_ms (budget clock: the earliest period start that
--   may cover it)}. The tenant's budget and the deployment's are both checked: spent plus
-- reserved plus this estimate must stay within each (rule 18).
local function budget_gate(prefix, tenant, model, now_ms)
  local offset = budget_offset_ms(prefix)
  local periods = budget_periods(now_ms + offset)
  local tb = tenant_budget(prefix, tenant)
  local estimate = budget_estimate(prefix, model, tb)
  local verdict = {ok = true, estimate = estimate, day = periods.day, offset = offset,
    periods = periods}
  local checks = {}
  local tamount = tonumber(tb['micro_usd'] or '')
  if tamount then
    checks[#checks + 1] = {amount = tamount, period = tb['period'] or 'day',
      fields = tenant_part(tenant, ''), who = 'tenant ' .. tenant}
  end
  local g = redis.call('HMGET', prefix .. BUDGET_SUFFIX, 'micro_usd', 'period')
  local gamount = tonumber(g[1] or '')
  if gamount then
    checks[#checks + 1] = {amount = gamount, period = g[2] or 'day', fields = '',
      who = 'the deployment'}
  end
  for _, c in ipairs(checks) do
    local left = budget_left(prefix, periods, c.period, c.amount, c.fields)
    if estimate > left then
      verdict.ok = false
      verdict.reason = 'budget'
      verdict.policy = tb['over'] == 'fail' and 'fail' or 'hold'
      local resume = c.period == 'month' and periods.month_end_ms or periods.day_end_ms
      verdict.resume_ms = math.max(verdict.resume_ms or 0, resume)
      verdict.error = string.format(
        'over budget: %s has %s of its %s micro-USD per %s left, this video is estimated at %s',
        c.who, istr(math.max(left, 0)), istr(c.amount), c.period, istr(estimate))
    end
  end
  return verdict
end

-- Reserve the estimate of an admitted request (`rec`: its record key) in the current period's
-- ledgers, and note on the record which day it counts in and what was reserved.
local function budget_reserve(prefix, rec, tenant, verdict)
  redis.call('HSET', rec, 'budget_day', verdict.day,
    'budget_estimate_micro_usd', istr(verdict.estimate),
    'budget_reserved_micro_usd', istr(verdict.estimate))
  budget_ledger_add(prefix, verdict.day, tenant,
    {{'reserved_micro', verdict.estimate}, {'admitted', 1}}, true)
  budget_ledger_expiry(prefix, verdict.periods, verdict.offset)
end

-- A request's reservation, if any, ends: `spent` micro-USD (of which `estimated` counted at
-- an estimate) move to spend in the period it was admitted in. Returns whether it had one.
-- Records admitted before budgets existed have none: nothing to settle.
local function budget_settle(prefix, rec, tenant, spent, estimated)
  local reserved = tonumber(redis.call('HGET', rec, 'budget_reserved_micro_usd') or '')
  local day = redis.call('HGET', rec, 'budget_day')
  if not reserved or not day then return false end
  redis.call('HDEL', rec, 'budget_reserved_micro_usd')
  budget_ledger_add(prefix, day, tenant,
    {{'reserved_micro', -reserved}, {'spent_micro', spent}, {'estimated_micro', estimated}}, false)
  return true
end

-- Spend learned beside a request's reservation (a superseded job's cost, an attempt that may
-- have bought a video), in the period it was admitted in; negative when an attempt counted
-- as possibly billed turned out to have a known job.
local function budget_charge(prefix, rec, tenant, spent, estimated)
  local day = redis.call('HGET', rec, 'budget_day')
  if not day or (spent == 0 and estimated == 0) then return end
  budget_ledger_add(prefix, day, tenant,
    {{'spent_micro', spent}, {'estimated_micro', estimated}}, false)
end

-- The estimate a request's unknown costs count at (0 for a record admitted before budgets).
local function budget_estimate_of(rec)
  return tonumber(redis.call('HGET', rec, 'budget_estimate_micro_usd') or '0') or 0
end
