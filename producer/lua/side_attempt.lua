-- Count an attempt of a side effect before it is made (a killed attempt still counts).
-- ARGV: 5 expected side seq, 6 effect ('download' | 'webhook').
-- Returns {'OK', attempts (this one included)} | {'STALE'} | {'MISSING'}
if redis.call('EXISTS', K_REC) == 0 then return {'MISSING'} end
local effect = ARGV[6]
if get('side_seq') ~= ARGV[5] or get(effect .. '_state') ~= 'pending' then return {'STALE'} end
return {'OK', istr(redis.call('HINCRBY', K_REC, effect .. '_attempts', 1))}
