-- Retire the jobs that ended and claim the due ones in one call (worker/claim.py).
-- KEYS: 1 the queue. ARGV: 1 now (ms, the worker host's clock, as arq compares), 2 in-progress
-- timeout (ms), 3 most jobs to claim, 4 most queued ids to look at, 5..7 arq's in-progress,
-- job and try key prefixes, 8 how long a cron job keeps its in-progress key (ms), 9 the number
-- of retirements that follow, then per retirement: job id, how ('e' ended: delete its keys
-- and leave the queue; 'r' released: only the in-progress key goes, it runs again; 'c' an
-- ended cron job: as 'e' but the in-progress key expires later).
-- Key names are built from the prefixes because the ids are only known here (arq's layout;
-- a single Redis, as arq requires).
-- Returns per claimed job: id, score, payload (false if the job key expired), try.
local queue = KEYS[1]
local now, ip_ms = tonumber(ARGV[1]), tonumber(ARGV[2])
local want, look = tonumber(ARGV[3]), tonumber(ARGV[4])
local ip, jk, rk = ARGV[5], ARGV[6], ARGV[7]
local cron_ms = tonumber(ARGV[8])
local n_retire = tonumber(ARGV[9])
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
local out = {}
if want <= 0 then return out end
local claimed, offset = 0, 0
-- In pages: most due ids at the front are usually claimable, so a look rarely reads far.
local page = math.min(look, want + 100)
while claimed < want and offset < look do
  local ids = redis.call('ZRANGEBYSCORE', queue, '-inf', now, 'WITHSCORES', 'LIMIT', offset,
    math.min(page, look - offset))
  if #ids == 0 then break end
  for i = 1, #ids, 2 do
    local id = ids[i]
    if redis.call('EXISTS', ip .. id) == 0 then
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
return out
