-- Arming an arq job a caller could not pass ready-made (lua/_admit.lua, lua/pause.lua): the
-- payload is what arq's serialize_job writes for genqueue's timers (producer/timers.py: JSON,
-- arguments `[first, second, SCHEMA_VERSION]`), the job id `{kind}:{first}:{second}`. A job
-- key present means armed (or running) already. Wakes a waiting worker (lua/_wake.lua).
--- @include "constants"
--- @include "numbers"
--- @include "wake"
local function arm_arq_job(job_prefix, queue, extra_ms, now, kind, first, second, at)
  local job_id = kind .. ':' .. first .. ':' .. istr(second)
  local key = job_prefix .. job_id
  if redis.call('EXISTS', key) == 1 then return false end
  local payload = '{"t":null,"f":"' .. kind .. '","a":[' .. cjson.encode(first) .. ','
    .. istr(second) .. ',' .. istr(SCHEMA_VERSION) .. '],"k":{},"et":' .. istr(now) .. '}'
  redis.call('PSETEX', key, math.max(at - now, 0) + extra_ms, payload)
  redis.call('ZADD', queue, at, job_id)
  wake_one(queue .. WAKE_SUFFIX, queue .. WAKE_AT_SUFFIX, at)
  return true
end
