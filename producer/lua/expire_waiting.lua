-- End a request whose deadline passed while it waited in its tenant's admission queue (run by
-- the one expiry timer of waiting requests, worker/admission.py, or the reconciler's safety
-- net). Nothing was created upstream: nothing to track.
-- ARGV: 5 retention of a request never created upstream (ms).
-- KEYS 9..14, ARGV 6..9: the admission block (lua/_admit.lua).
-- Returns {'EXPIRED'} | {'STALE'} (not waiting, or not due yet) | {'MISSING'}
-- KEYS 1..8 and ARGV 1..4: shared by every transition script (producer/contracts.py
-- `common_keys`/`common_args`): record, in-flight zset, status counts, totals, event stream,
-- idempotency mapping (the record key if none), outbox, spec; request id, event stream max
-- length, done channel, retention of a finished record (ms).
local K_REC, K_INFLIGHT, K_COUNTS, K_TOTALS = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local K_EVENTS, K_IDEM, K_OUTBOX, K_SPEC = KEYS[5], KEYS[6], KEYS[7], KEYS[8]
local ID, EVENTS_MAXLEN, CHANNEL, RETENTION_MS = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
local SHORT_RETENTION_MS = tonumber(ARGV[5])
local K_ADM_STATE, K_ADM_READY, K_ADM_DEADLINES = KEYS[9], KEYS[10], KEYS[11]
local K_ADM_TENANTS, K_ADM_PAUSE, K_ADM_QUEUE = KEYS[12], KEYS[13], KEYS[14]
local ADM_PREFIX, ADM_JOB_PREFIX = ARGV[6], ARGV[7]
local ADM_JOB_EXTRA_MS, ADM_MAX = tonumber(ARGV[8]), tonumber(ARGV[9])
--- @include "transition"
--- @include "admit"
local refused = idempotency_key_not_passed()
if refused then return refused end
if redis.call('EXISTS', K_REC) == 0 then
  redis.call('ZREM', K_ADM_DEADLINES, ID)  -- its queue's entry goes at its turn (lua/_admit.lua)
  return {'MISSING'}
end
local status = get('status')
if status ~= 'pending' or not get('waiting') then
  redis.call('ZREM', K_ADM_DEADLINES, ID)
  return {'STALE'}
end
if NOW < num('deadline_at_ms') then return {'STALE'} end
leave_queue(K_REC, ID, tenant_of(K_REC))
visible_terminal(status, 'expired', 'deadline passed while waiting for a slot')
release(SHORT_RETENTION_MS)
return {'EXPIRED'}
