-- KEYS: orders index. ARGV: prefix, order id, final state, now, result.
local sc, key = order_key(KEYS[1], ARGV[2])
if not sc or redis.call('EXISTS', key) == 0 or redis.call('HEXISTS', key, 'result') == 1 then return 0 end
redis.call('HSET', key, 'state', ARGV[3], 'updated', ARGV[4], 'result', ARGV[5])
redis.call('DEL', sc_key(sc, 'chunks:' .. ARGV[2]))
if ARGV[3] ~= 'queued' then leave_inbox(sc, key) end
return 1
