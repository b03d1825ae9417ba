-- Retire the jobs that ended and claim the due ones in one call (worker/claim.py).
-- KEYS: 1 the queue; optional (a worker that waits between looks, worker/wakeup.py): 2 the
-- wake list, 3 the wake-at key (the due time a waiting worker will look at), 4 a sorted set
-- also watched (the outbox for the side worker; the queue again when none).
-- ARGV: 1 now (ms; '' = Redis TIME, the clock timers are scored in), 2 in-progress timeout
-- (ms), 3 most jobs to claim, 4 most queued ids to look at, 5..7 arq's in-progress, job and
-- try key prefixes, 8 how long a cron job keeps its in-progress key (ms), 9 the number of
-- retirements that follow, then per retirement: job id, how ('e' ended: delete its keys and
-- leave the queue; 'r' released: only the in-progress key goes, it runs again; 'c' an ended
-- cron job: as 'e' but the in-progress key expires later); then, with the wake keys: jobs
-- still running in this worker after the look, most ms a waiting worker sleeps, this
-- worker's id (the wake-at key holds '<due ms>:<id>' of the worker watching that time);
-- then, optional (timer slack): how many ms early a job may be claimed, the id prefix of the
-- jobs that may (status checks: 'poll:'), the record key prefix (a check holding a
-- rate-limit turn, its record's `call_turn`, waits for its time: the limit gave it that time),
-- and the most jobs a look fills up to with early ones (a look that claims as many due ones
-- claims none early: where checks are dense they already share wake-ups, and claiming the
-- next half second's would only make bursts).
-- Key names are built from the prefixes because the ids are only known here (arq's layout;
-- a single Redis, as arq requires).
-- Returns per claimed job: id, score, payload (false if the job key expired), try; with the
-- wake keys, then: ms until the next job (or watched entry) is due (-1: none before the most
-- ms), 1 if an entry of the watched set is due now, 1 if this worker is the one to wake at
-- that time (it is idle and no other idle worker waits for an earlier one).
local queue = KEYS[1]
local K_WAKE, K_WAKE_AT, K_WATCHED = KEYS[2], KEYS[3], KEYS[4]
local now, ip_ms = tonumber(ARGV[1]), tonumber(ARGV[2])
local want, look = tonumber(ARGV[3]), tonumber(ARGV[4])
local ip, jk, rk = ARGV[5], ARGV[6], ARGV[7]
local cron_ms = tonumber(ARGV[8])
local n_retire = tonumber(ARGV[9])
if not now then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
-- The retirements follow from ARGV[10] as (job id, how) pairs, read in the loop below.
for i = 0, n_retire - 1 do
  local id, how = ARGV[10 + 2 * i], ARGV[11 + 2 * i]
  if how == 'r' then
    redis.call('DEL', ip .. id)
  else
    if how == 'c' then
      redis.call('PEXPIRE', ip .. id, cron_ms)
      redis.call('DEL', rk .. id, jk .. id)
    else
      redis.call('DEL', ip .. id, rk .. id, jk .. id)
    end
    redis.call('ZREM', queue, id)
  end
end
local RUNNING = tonumber(ARGV[10 + 2 * n_retire])
local MAX_WAIT_MS = tonumber(ARGV[11 + 2 * n_retire])
local ME = ARGV[12 + 2 * n_retire]
local SLACK_MS = tonumber(ARGV[13 + 2 * n_retire]) or 0
local EARLY_PREFIX = ARGV[14 + 2 * n_retire] or ''
local REC_PREFIX = ARGV[15 + 2 * n_retire] or ''
local SLACK_MOST = tonumber(ARGV[16 + 2 * n_retire]) or 0
-- Timer slack: status checks due within SLACK_MS run now, with the ones due now, so checks
-- due close together share one wake-up of the worker instead of one each (worker/claim.py).
local due_until = now + SLACK_MS
local function may_run_early(id)
  if EARLY_PREFIX == '' or string.sub(id, 1, #EARLY_PREFIX) ~= EARLY_PREFIX then return false end
  local rid = string.match(string.sub(id, #EARLY_PREFIX + 1), '^(.*):%d+$')
  return rid ~= nil and redis.call('HGET', REC_PREFIX .. rid, 'call_turn') ~= '1'
end
-- The first job within the slack that must wait for its own time.
local held_at = nil
local out = {}
local claimed, offset = 0, 0
local free_in_ms = nil
local examined = 0
-- In pages: most due ids at the front are usually claimable, so a look rarely reads far.
local page = math.min(look, want + 100)
-- Set once the look is full of early ones: every id after is later still, none is read.
local early_full = false
while claimed < want and offset < look and not early_full do
  local ids = redis.call('ZRANGEBYSCORE', queue, '-inf', due_until, 'WITHSCORES', 'LIMIT',
    offset, math.min(page, look - offset))
  if #ids == 0 then break end
  for i = 1, #ids, 2 do
    local id = ids[i]
    local score = tonumber(ids[i + 1])
    if score > now and claimed >= SLACK_MOST then
      if not held_at or score < held_at then held_at = score end
      early_full = true
      break
    end
    examined = examined + 1
    local running_ms = -1
    if score > now and not may_run_early(id) then
      if not held_at or score < held_at then held_at = score end
    else
      running_ms = redis.call('PTTL', ip .. id)
    end
    if running_ms > 0 then
      -- Running elsewhere; claimable when its in-progress key expires (its worker died).
      if not free_in_ms or running_ms < free_in_ms then free_in_ms = running_ms end
    end
    if running_ms == -2 then
      redis.call('PSETEX', ip .. id, ip_ms, '1')
      local payload = redis.call('GET', jk .. id)
      local try = redis.call('INCR', rk .. id)
      redis.call('EXPIRE', rk .. id, 88400)
      out[#out + 1] = id
      out[#out + 1] = ids[i + 1]
      out[#out + 1] = payload
      out[#out + 1] = try
      claimed = claimed + 1
      if claimed >= want then break end
    end
  end
  offset = offset + #ids / 2
end
if not K_WAKE then return out end

-- Due jobs left behind (no free slot here): wake another worker for them, or an idle one
-- that is not the watcher would sleep while this one is overloaded. Whatever the watched
-- time: this worker may be the watcher, and it gives its watch up below.
if claimed >= want and redis.call('ZCOUNT', queue, '-inf', now) > examined then
  if redis.call('LLEN', K_WAKE) == 0 then redis.call('RPUSH', K_WAKE, '1') end
end

-- When to look next: the first job due after now, a due job whose in-progress key expires
-- first, or the watched set's first entry.
local next_at = now + MAX_WAIT_MS
if free_in_ms then next_at = math.min(next_at, now + free_in_ms) end
if held_at then next_at = math.min(next_at, held_at) end
local first = redis.call('ZRANGEBYSCORE', queue, '(' .. due_until, '+inf', 'WITHSCORES', 'LIMIT',
  0, 1)
if #first > 0 then next_at = math.min(next_at, tonumber(first[2])) end
local watched_due = 0
if K_WATCHED ~= queue then
  local head = redis.call('ZRANGE', K_WATCHED, 0, 0, 'WITHSCORES')
  if #head > 0 then
    if tonumber(head[2]) <= now then watched_due = 1 end
    next_at = math.min(next_at, math.max(tonumber(head[2]), now))
  end
end
-- One worker watches that time (the wake-at key says which time is watched): an idle worker
-- waits for it, a busy one looks then anyway; other idle workers wait for the wake list only,
-- so a due time wakes one worker, not all of them. Any worker left with a free slot may
-- watch (busy or not): then an arm due after its time needs no token. A watched time that
-- has passed, or is later than this one, is taken over; the watcher's own (it was woken
-- early, or ran a job meanwhile) is renewed, and given up (deleted) by a look of its watcher
-- that leaves no free slot or has nothing to watch: a watch of this version ('+' id) that is
-- still there is one whose watcher has not looked yet (lua/_wake.lua).
local wakes = 0
local cur_at, cur_who = string.match(redis.call('GET', K_WAKE_AT) or '', '^(%d+):(.*)$')
cur_at = tonumber(cur_at)
-- (Nothing due before the most a worker waits: nothing to watch, and no key to write.)
if claimed < want and watched_due == 0 and next_at < now + MAX_WAIT_MS then
  if not cur_at or cur_at <= now or next_at < cur_at or cur_who == ME then
    redis.call('SET', K_WAKE_AT, string.format('%d', next_at) .. ':' .. ME, 'PX',
      next_at - now + 1000)
    wakes = 1
  end
elseif cur_who == ME then
  redis.call('DEL', K_WAKE_AT)
end
local in_ms = next_at - now
if in_ms >= MAX_WAIT_MS then in_ms = -1 end
out[#out + 1] = in_ms
out[#out + 1] = watched_due
out[#out + 1] = wakes
return out
