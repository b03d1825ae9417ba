-- Waking one waiting worker (worker/wakeup.py). A worker with nothing due blocks on its wake
-- list; one idle worker also watches the next due time (the wake-at key). A token is pushed
-- only if the list holds none (each pop wakes exactly one worker: no herd) and, for a job due
-- at `at`, only if that is earlier than the watched time (else the watcher finds it anyway).
-- Anything that makes work for a waiting worker calls this: arming a timer, owing a side
-- effect (and, later, admitting a waiting request when a slot frees).
local function wake_one(k_wake, k_wake_at, at)
  -- The wake-at key holds '<due ms>:<watcher id>' (lua/claim_due.lua).
  local watched, who = string.match(redis.call('GET', k_wake_at) or '', '^(%d+):(.*)$')
  watched = tonumber(watched)
  if watched and at >= watched then
    -- A watcher whose id starts with '+' renews or gives up its watch at every look, so a
    -- time it watches that has passed still covers the job: it has not looked yet, and its
    -- look sees the job (the key outlives the time by a second: a dead watcher). One of the
    -- previous version may have looked already without either: its passed time covers
    -- nothing, and a token is pushed.
    if string.sub(who, 1, 1) == '+' then return end
    local t = redis.call('TIME')
    if watched > tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) then return end
  end
  if redis.call('LLEN', k_wake) == 0 then redis.call('RPUSH', k_wake, '1') end
end
