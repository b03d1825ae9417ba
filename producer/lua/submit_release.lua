-- The create call did not give an upstream id: fail the request, or give the lease back and retry.
-- ARGV: 5 submit seq, 6 mode ('fail' | 'retry'), 7 ambiguous (the upstream may have created it),
--       8 retry delay (ms), 9 error message, 10 ambiguous-submit policy ('resubmit' | 'fail'),
--       11 retention of a request never created upstream (ms).
-- KEYS 9..14, ARGV 12..15: the admission block (lua/_admit.lua).
-- Returns {'FAILED'} | {'RETRY', seq, delay_ms} | {'STALE'} | {'MISSING'}
-- KEYS 1..8 and ARGV 1..4: shared by every transition script (producer/contracts.py
-- `common_keys`/`common_args`): record, in-flight zset, status counts, totals, event stream,
-- idempotency mapping (the record key if none), outbox, spec; request id, event stream max
-- length, done channel, retention of a finished record (ms). Optional trailing inline-arm
-- KEYS/ARGV: see lua/_transition.lua.
local K_REC, K_INFLIGHT, K_COUNTS, K_TOTALS = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local K_EVENTS, K_IDEM, K_OUTBOX, K_SPEC = KEYS[5], KEYS[6], KEYS[7], KEYS[8]
local ID, EVENTS_MAXLEN, CHANNEL, RETENTION_MS = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
local SUBMIT_SEQ, MODE, AMBIGUOUS = ARGV[5], ARGV[6], ARGV[7] == '1'
local RETRY_DELAY_MS, ERROR, POLICY = tonumber(ARGV[8]), ARGV[9], ARGV[10]
local SHORT_RETENTION_MS = tonumber(ARGV[11])
local K_ADM_STATE, K_ADM_READY, K_ADM_DEADLINES = KEYS[9], KEYS[10], KEYS[11]
local K_ADM_TENANTS, K_ADM_PAUSE, K_ADM_QUEUE = KEYS[12], KEYS[13], KEYS[14]
local ADM_PREFIX, ADM_JOB_PREFIX = ARGV[12], ARGV[13]
local ADM_JOB_EXTRA_MS, ADM_MAX = tonumber(ARGV[14]), tonumber(ARGV[15])
--- @include "transition"
--- @include "admit"
local refused = idempotency_key_not_passed()
if refused then return refused end
if redis.call('EXISTS', K_REC) == 0 then return {'MISSING'} end
local mode, err = MODE, ERROR
local status = get('status')
if status ~= 'submitting' or get('submit_seq') ~= SUBMIT_SEQ then return {'STALE'} end
if AMBIGUOUS then
  redis.call('HINCRBY', K_REC, 'ambiguous_submits', 1)
  -- The job may exist upstream and nothing can find it (no list endpoint): possibly billed.
  possibly_billed(1)
  if POLICY == 'fail' then
    mode = 'fail'
    err = 'ambiguous submit: ' .. err
  end
end
if mode == 'fail' then
  visible_terminal(status, 'failed', err)
  release(SHORT_RETENTION_MS)
  admit_for(tenant_of(K_REC))
  return {'FAILED'}
end
redis.call('HDEL', K_REC, 'lease_owner', 'lease_until_ms')
redis.call('HSET', K_REC, 'error', err)
-- The retry keeps its slot (reserved as admitted): its backoff is honoured, and a request
-- that failed once does not go to the back of the queue.
reserve(K_REC, tenant_of(K_REC))
set_status(status, 'pending')
emit('pending', 'retry', err)
return {'RETRY', next_step('submit', RETRY_DELAY_MS), RETRY_DELAY_MS}
