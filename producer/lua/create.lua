-- Write a new `pending` record, unless its idempotency key already names one.
-- ARGV: 5 fields (JSON object of string values; empty ones are not stored), 6 deadline (ms from
--       now), 7 has idempotency key, 8 spec (JSON, stored as is in the spec key).
-- Returns {'CREATED', id} or {'EXISTS', existing id}.
local fields_json, deadline_ms, has_idem, spec = ARGV[5], tonumber(ARGV[6]), ARGV[7] == '1', ARGV[8]
if has_idem then
  local existing = redis.call('GET', K_IDEM)
  if existing then return {'EXISTS', existing} end
end
if redis.call('EXISTS', K_REC) == 1 then return {'EXISTS', ID} end
local fields = cjson.decode(fields_json)
for k, v in pairs(fields) do set_if(k, v) end
redis.call('SET', K_SPEC, spec)
-- Counters and flags start absent (read as 0), and the id is the key's: every field costs
-- memory in every record.
redis.call('HSET', K_REC,
  'status', 'pending', 'seq', '0', 'timer', 'submit',
  'enqueued_at_ms', istr(NOW), 'next_check_at_ms', istr(NOW),
  'deadline_at_ms', istr(NOW + deadline_ms))
redis.call('ZADD', K_INFLIGHT, NOW, ID)
redis.call('HINCRBY', K_COUNTS, 'pending', 1)
if has_idem then redis.call('SET', K_IDEM, ID) end
emit('pending')
arm('submit:' .. ID .. ':0', NOW)
return {'CREATED', ID}
