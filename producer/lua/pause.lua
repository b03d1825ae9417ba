-- Pause upstream creates for every worker (worker/pause.py). Redis clock.
-- KEYS: 1 the pause hash, 2 the arq queue.
-- ARGV: 1 reason, 2 status code, 3 duration (ms), 4 arq's job key prefix, 5 how long a job may
--       wait past its run time (ms).
-- Arms the deployment-wide `admit` timer at the pause's end (`admit:pause:{until}`): requests
-- that met the pause wait in their admission queues and are admitted then (the first as the
-- half-open probe; lua/_admit.lua).
-- Returns when the pause ends (Redis ms).
local K_PAUSE, K_QUEUE = KEYS[1], KEYS[2]
local REASON, CODE, DURATION_MS = ARGV[1], ARGV[2], tonumber(ARGV[3])
local JOB_PREFIX, JOB_EXTRA_MS = ARGV[4], tonumber(ARGV[5])
--- @include "job"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local untilms = now + DURATION_MS
if not redis.call('HGET', K_PAUSE, 'since_ms') then
  redis.call('HSET', K_PAUSE, 'since_ms', string.format('%d', now))
end
redis.call('HSET', K_PAUSE, 'reason', REASON, 'code', CODE,
  'until_ms', string.format('%d', untilms), 'probe_until_ms', '0')
arm_arq_job(JOB_PREFIX, K_QUEUE, JOB_EXTRA_MS, now, ADMIT_TASK, 'pause', untilms, untilms)
return untilms
