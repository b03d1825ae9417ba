-- Arm one timer step: enqueue an arq job unless it is already armed (producer/timers.py).
-- The same check as arq's enqueue_job (job or result key present means already armed), but
-- atomic and scored with Redis TIME instead of the host's clock.
-- KEYS: 1 job key, 2 result key, 3 queue.
-- ARGV: 1 payload, 2 run at (Redis ms, 0 = use delay), 3 delay (ms), 4 how long the job may
--       wait past its run time before it expires (ms), 5 job id.
-- Returns 1 if armed, 0 if it already was.
local K_JOB, K_RESULT, K_QUEUE = KEYS[1], KEYS[2], KEYS[3]
local PAYLOAD, AT_MS, DELAY_MS = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local EXTRA_MS, JOB_ID = tonumber(ARGV[4]), ARGV[5]
if redis.call('EXISTS', K_JOB) == 1 or redis.call('EXISTS', K_RESULT) == 1 then return 0 end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local at = AT_MS
if at <= 0 then at = now + DELAY_MS end
redis.call('PSETEX', K_JOB, math.max(at - now, 0) + EXTRA_MS, PAYLOAD)
redis.call('ZADD', K_QUEUE, at, JOB_ID)
return 1
