-- Admit waiting requests outside any request's own step (producer/admission.py): at a
-- worker's start (the global cap it announces), a pause's end, a tenant's weight or cap
-- raised, the expiry timer's run, and the reconciler's periodic safety net. Also keeps the
-- one expiry timer of waiting requests armed at the earliest waiting deadline.
-- Reservations a worker of the version before admission left behind (it took an admitted
-- request on without giving its reservation back) are given back first.
-- KEYS: 1 the in-flight index, 2 the status counts, 3..8 the admission block (lua/_admit.lua).
-- ARGV: 1..4 the admission block, 5 '1' when the expiry timer has just run (it is re-armed),
--       6 most reservations looked at, 7 how old (ms) a reservation is before it is.
-- Returns {'OK', admitted, earliest waiting deadline ('' if none), reservations given back}.
local K_INFLIGHT, K_COUNTS = KEYS[1], KEYS[2]
local K_ADM_STATE, K_ADM_READY, K_ADM_DEADLINES = KEYS[3], KEYS[4], KEYS[5]
local K_ADM_TENANTS, K_ADM_PAUSE, K_ADM_QUEUE = KEYS[6], KEYS[7], KEYS[8]
local ADM_PREFIX, ADM_JOB_PREFIX = ARGV[1], ARGV[2]
local ADM_JOB_EXTRA_MS, ADM_MAX = tonumber(ARGV[3]), tonumber(ARGV[4])
local EXPIRED_RUN = ARGV[5] == '1'
local REPAIR_MAX, REPAIR_AGE_MS = tonumber(ARGV[6]), tonumber(ARGV[7])
--- @include "admit"
local repaired = repair_reservations(REPAIR_MAX, REPAIR_AGE_MS)
-- Every tenant with waiting requests may be admissible again (a cap or weight raised, a
-- tenant's slot freed by a step that ran before admission existed): each joins at most once.
-- O(tenants), never O(requests).
join_ready(DEFAULT_TENANT)
for _, tenant in ipairs(redis.call('HKEYS', K_ADM_TENANTS)) do join_ready(tenant) end
local admitted = admit(ADM_MAX)
local earliest = redis.call('ZRANGE', K_ADM_DEADLINES, 0, 0, 'WITHSCORES')
if #earliest == 0 then
  redis.call('HDEL', K_ADM_STATE, 'expiry_at')
  return {'OK', istr(admitted), '', istr(repaired)}
end
local at = tonumber(earliest[2])
local armed = tonumber(redis.call('HGET', K_ADM_STATE, 'expiry_at') or '')
-- A time armed in the past is a timer that ran or was lost: armed again (one extra run at
-- worst).
arm_expiry(at, EXPIRED_RUN or not armed or armed < ADM_NOW)
return {'OK', istr(admitted), istr(at), istr(repaired)}
