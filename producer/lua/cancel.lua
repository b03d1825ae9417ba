-- Ask for a cancel. A pending request ends at once; one whose upstream job exists shows
-- `cancelled` at once but is still tracked so its cost is recorded (rule 2); a submitting one is
-- cancelled when its create answers.
-- ARGV: 5 tracking limit (ms), 6 retention of a request never created upstream (ms).
-- KEYS 9..14, ARGV 7..10: the admission block (lua/_admit.lua).
-- Returns {'CANCELLED'} | {'REQUESTED'} | {'ALREADY', status} | {'MISSING'}
-- KEYS 1..8 and ARGV 1..4: shared by every transition script (producer/contracts.py
-- `common_keys`/`common_args`): record, in-flight zset, status counts, totals, event stream,
-- idempotency mapping (the record key if none), outbox, spec; request id, event stream max
-- length, done channel, retention of a finished record (ms). Optional trailing inline-arm
-- KEYS/ARGV: see lua/_transition.lua.
local K_REC, K_INFLIGHT, K_COUNTS, K_TOTALS = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local K_EVENTS, K_IDEM, K_OUTBOX, K_SPEC = KEYS[5], KEYS[6], KEYS[7], KEYS[8]
local ID, EVENTS_MAXLEN, CHANNEL, RETENTION_MS = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
local TRACKING_LIMIT_MS, SHORT_RETENTION_MS = tonumber(ARGV[5]), tonumber(ARGV[6])
local K_ADM_STATE, K_ADM_READY, K_ADM_DEADLINES = KEYS[9], KEYS[10], KEYS[11]
local K_ADM_TENANTS, K_ADM_PAUSE, K_ADM_QUEUE = KEYS[12], KEYS[13], KEYS[14]
local ADM_PREFIX, ADM_JOB_PREFIX = ARGV[7], ARGV[8]
local ADM_JOB_EXTRA_MS, ADM_MAX = tonumber(ARGV[9]), tonumber(ARGV[10])
--- @include "transition"
--- @include "admit"
local refused = idempotency_key_not_passed()
if refused then return refused end
if redis.call('EXISTS', K_REC) == 0 then return {'MISSING'} end
local status = get('status')
if not NON_TERMINAL[status] then return {'ALREADY', status} end
redis.call('HSET', K_REC, 'cancel_requested', '1')
if status == 'pending' then
  local tenant = tenant_of(K_REC)
  -- Waiting: out of every admission key. Admitted: its reserved slot goes to the next one.
  leave_queue(K_REC, ID, tenant)
  local held = unreserve(K_REC, tenant)
  visible_terminal(status, 'cancelled', '')
  release(SHORT_RETENTION_MS)
  if held then admit_for(tenant) end
  return {'CANCELLED'}
end
if status == 'submitting' then return {'REQUESTED'} end
visible_terminal(status, 'cancelled', '')
begin_tracking(TRACKING_LIMIT_MS)
return {'CANCELLED'}
