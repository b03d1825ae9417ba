-- Delete a tenant unless it has requests in flight (producer/tenants.py); its API keys go
-- with it, in the same atomic step (a create for it is refused from then on: lua/create.lua).
-- Its totals stay: `default`'s figures are the cluster's minus the other tenants'.
-- KEYS: 1 tenants hash, 2 status counts, 3 API keys hash. ARGV: 1 tenant.
-- Returns {'OK', keys revoked} | {'MISSING'} | {'BUSY', requests in flight}.
local K_TENANTS, K_COUNTS, K_API_KEYS = KEYS[1], KEYS[2], KEYS[3]
local TENANT = ARGV[1]
--- @include "constants"
if redis.call('HEXISTS', K_TENANTS, TENANT) == 0 then return {'MISSING'} end
local own = TENANT_FIELD_PREFIX .. SEP .. TENANT .. SEP
local busy = 0
for status, _ in pairs(NON_TERMINAL) do
  busy = busy + math.max(0, tonumber(redis.call('HGET', K_COUNTS, own .. status) or '0'))
end
busy = busy + math.max(0, tonumber(redis.call('HGET', K_COUNTS, own .. 'tracking') or '0'))
if busy > 0 then return {'BUSY', tostring(busy)} end
redis.call('HDEL', K_TENANTS, TENANT)
local revoked = 0
local all = redis.call('HGETALL', K_API_KEYS)
for i = 1, #all, 2 do
  local ok, owner = pcall(cjson.decode, all[i + 1])
  if ok and type(owner) == 'table' and owner['tenant'] == TENANT then
    redis.call('HDEL', K_API_KEYS, all[i])
    revoked = revoked + 1
  end
end
return {'OK', tostring(revoked)}
