-- An operator asks for a fresh attempt of a dead webhook (same webhook-id).
-- ARGV: 5 dead-letter zset key.
-- Returns {'OK', side_seq} | {'NOT_DEAD', state} | {'MISSING'}
if redis.call('EXISTS', K_REC) == 0 then
  redis.call('ZREM', ARGV[5], ID)
  return {'MISSING'}
end
local state = get('webhook_state')
if state ~= 'dead' then return {'NOT_DEAD', state} end
redis.call('HSET', K_REC, 'webhook_state', 'pending', 'webhook_replayed_at_ms', istr(NOW),
  'webhook_attempts', '0')
local seq = redis.call('HINCRBY', K_REC, 'side_seq', 1)
redis.call('ZADD', K_OUTBOX, NOW, ID)
redis.call('ZREM', ARGV[5], ID)
emit(get('status'), 'webhook', 'replayed')
return {'OK', istr(seq)}
