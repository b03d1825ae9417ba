-- Write a new `pending` record, unless its idempotency key already names one. It takes a slot
-- at once (reserved, its submit timer armed) when admission lets it (lua/_admit.lua:
-- creates not paused, the global and its tenant's cap not full, nobody waiting before it);
-- else it waits in its tenant's admission queue, with no timer -- or is refused when that
-- queue holds the tenant's `max_waiting` (nothing written).
-- KEYS: 9 the tenants hash (a named tenant must be configured: checked here, atomically with
--       the write, so `tenant delete` cannot race a create).
-- ARGV: 5 fields (JSON object of string values; empty ones are not stored), 6 deadline (ms from
--       now), 7 has idempotency key, 8 spec (JSON, stored as is in the spec key).
-- KEYS: 10 the set of models the upstream has accepted (a model not in it is counted under
--       'other' until the upstream accepts it: see model_label).
-- KEYS 11..16, ARGV 9..12: the admission block (lua/_admit.lua).
-- Returns {'CREATED', id, why it waits ('' if admitted)}, {'EXISTS', existing id},
-- {'NO_TENANT', tenant} or {'QUEUE_FULL', tenant}.
-- KEYS 1..8 and ARGV 1..4: shared by every transition script (producer/contracts.py
-- `common_keys`/`common_args`): record, in-flight zset, status counts, totals, event stream,
-- idempotency mapping (the record key if none), outbox, spec; request id, event stream max
-- length, done channel, retention of a finished record (ms). Optional trailing inline-arm
-- KEYS/ARGV: see lua/_transition.lua.
local K_REC, K_INFLIGHT, K_COUNTS, K_TOTALS = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local K_EVENTS, K_IDEM, K_OUTBOX, K_SPEC = KEYS[5], KEYS[6], KEYS[7], KEYS[8]
local ID, EVENTS_MAXLEN, CHANNEL, RETENTION_MS = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
local FIELDS_JSON, DEADLINE_MS = ARGV[5], tonumber(ARGV[6])
local HAS_IDEM, SPEC = ARGV[7] == '1', ARGV[8]
local K_TENANTS, K_MODELS = KEYS[9], KEYS[10]
local K_ADM_STATE, K_ADM_READY, K_ADM_DEADLINES = KEYS[11], KEYS[12], KEYS[13]
local K_ADM_TENANTS, K_ADM_PAUSE, K_ADM_QUEUE = KEYS[14], KEYS[15], KEYS[16]
local ADM_PREFIX, ADM_JOB_PREFIX = ARGV[9], ARGV[10]
local ADM_JOB_EXTRA_MS, ADM_MAX = tonumber(ARGV[11]), tonumber(ARGV[12])
--- @include "transition"
--- @include "admit"
local refused = idempotency_key_not_passed()
if refused then return refused end
local fields = cjson.decode(FIELDS_JSON)
local tenant = fields['tenant'] or ''
if tenant ~= '' and redis.call('HEXISTS', K_TENANTS, tenant) == 0 then
  return {'NO_TENANT', tenant}
end
if HAS_IDEM then
  local existing = redis.call('GET', K_IDEM)
  if existing then return {'EXISTS', existing} end
end
if redis.call('EXISTS', K_REC) == 1 then return {'EXISTS', ID} end
local owner = tenant ~= '' and tenant or DEFAULT_TENANT
local reason = blocked_reason(owner, K_REC, ID)
if reason then
  local max_waiting = tenant_cfg(owner).max_waiting
  if max_waiting > 0 and redis.call('ZCARD', waiting_key(owner)) >= max_waiting then
    return {'QUEUE_FULL', owner}
  end
end
for k, v in pairs(fields) do set_if(k, v) end
-- Absent for a known model: the common case costs no memory.
if redis.call('SISMEMBER', K_MODELS, get('model') or '') == 0 then
  redis.call('HSET', K_REC, 'model_unverified', '1')
end
redis.call('SET', K_SPEC, SPEC)
-- Counters and flags start absent (read as 0), and the id is the key's: every field costs
-- memory in every record.
redis.call('HSET', K_REC,
  'status', 'pending', 'seq', '0', 'timer', 'submit',
  'enqueued_at_ms', istr(NOW), 'next_check_at_ms', istr(NOW),
  'deadline_at_ms', istr(NOW + DEADLINE_MS))
count(K_COUNTS, 'pending', 1)
if HAS_IDEM then redis.call('SET', K_IDEM, ID) end
if reason then
  enter_queue(K_REC, ID, owner, reason)
  emit('pending', 'waiting', reason)
  -- A passing block (a tenant left in the ready set with nothing to admit) clears at once.
  admit(ADM_MAX)
  return {'CREATED', ID, get('waiting') or ''}
end
redis.call('ZADD', K_INFLIGHT, NOW, ID)
reserve(K_REC, owner)
emit('pending')
arm('submit:' .. ID .. ':0', NOW)
return {'CREATED', ID, ''}
