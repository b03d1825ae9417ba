--- @include "numbers"

-- The shared rate limit on upstream calls, per upstream and API key (GCRA: a call may go when
-- it is no earlier than the theoretical arrival time less the burst tolerance; Redis clock,
-- µs). A refused call takes the next free turn: turns are spaced at the sustained rate in
-- the order calls were refused, so a backlog comes back in turn instead of all at once each
-- time the limit frees up (at its turn the call asks again: the limit has the last word).
-- `mode` says who asks:
--   'turn'   a check coming back at the turn it was given: only the limit can refuse it;
--   'check'  any other check: while turns are waiting it joins their queue instead of
--            taking the slot a turn is due to use. Without this a fresh check took the slot
--            at each turn, the check whose turn it was was refused and queued again at the
--            back, and under a saturated limit some videos were checked twice as seldom as
--            others (the 10k run's p95 lag with and without turns: bench/RESULTS.md);
--   'create' gives way to the queue: it takes neither a slot nor a turn and asks again when
--            the last turn is due. When the limit is the bottleneck, checks of videos
--            already paid for come first; a new video would only add to the demand (and
--            creates resume as soon as the checks fit).
-- Returns 0 when the call may go now (and counts it), else the wait (ms) until its turn.
local function take_call_slot(limit_key, turn_key, interval_us, tolerance_us, mode)
  local t = redis.call('TIME')
  local now_us = tonumber(t[1]) * 1000000 + tonumber(t[2])
  local now = now_us / 1000
  local queued_until = tonumber(redis.call('GET', turn_key) or '0') or 0
  local queue = queued_until > now
  if mode == 'create' and queue then return math.max(1, math.ceil(queued_until - now)) end
  local tat = math.max(tonumber(redis.call('GET', limit_key) or '0') or 0, now_us)
  if (mode == 'turn' or not queue) and now_us >= tat - tolerance_us then
    local after = tat + interval_us
    redis.call('SET', limit_key, istr(after), 'PX', math.ceil((after - now_us) / 1000) + 1000)
    return 0
  end
  local turn = math.max(queued_until, (tat - tolerance_us) / 1000)
  local after = turn + interval_us / 1000
  redis.call('SET', turn_key, string.format('%.3f', after), 'PX', math.ceil(after - now) + 1000)
  return math.max(1, math.ceil(turn - now))
end
