-- KEYS: orders index. ARGV: prefix, order id, new state, now, the states it may move from...
local sc, key = order_key(KEYS[1], ARGV[2])
if not sc then return 0 end
local state = redis.call('HGET', key, 'state')
if not state then return 0 end
for i = 5, #ARGV do
  if state == ARGV[i] then
    redis.call('HSET', key, 'state', ARGV[3], 'updated', ARGV[4])
    leave_inbox(sc, key)
    return 1
  end
end
return 0
