-- Put off the current timer step without doing it (e.g. the shared rate limit is spent).
-- ARGV: 5 expected timer seq, 6 timer kind ('submit' | 'poll'), 7 delay (ms).
-- Returns {'OK', seq, delay_ms} | {'STALE'} | {'MISSING'}
if redis.call('EXISTS', K_REC) == 0 then return {'MISSING'} end
local expected_seq, kind, delay = ARGV[5], ARGV[6], tonumber(ARGV[7])
if get('seq') ~= expected_seq or get('timer') ~= kind then return {'STALE'} end
if not NON_TERMINAL[get('status')] and get('tracking') ~= '1' then return {'STALE'} end
return {'OK', next_step(kind, delay), delay}
