-- KEYS: machine index, orders index, present. ARGV: prefix, scenario id. Returns the machine ids.
local sc = ARGV[2]
local meta = sc_key(sc, 'meta')
local owner = redis.call('HGET', meta, 'owner')
if not owner then return {} end
redis.call('HDEL', P .. ':idx:owner:' .. owner, redis.call('HGET', meta, 'name'))
local machines = redis.call('SMEMBERS', sc_key(sc, 'machines'))
for _, m in ipairs(machines) do
  redis.call('DEL', sc_key(sc, 'machine:' .. m), sc_key(sc, 'inbox:' .. m))
  redis.call('HDEL', KEYS[1], m)
  redis.call('SREM', KEYS[3], m)
end
for _, m in ipairs(redis.call('SMEMBERS', sc_key(sc, 'inboxes'))) do
  redis.call('DEL', sc_key(sc, 'inbox:' .. m))
end
for _, o in ipairs(redis.call('ZRANGE', sc_key(sc, 'orders'), 0, -1)) do
  redis.call('DEL', sc_key(sc, 'order:' .. o), sc_key(sc, 'chunks:' .. o))
  redis.call('HDEL', KEYS[2], o)
end
for _, m in ipairs(redis.call('SMEMBERS', sc_key(sc, 'mailboxes'))) do
  redis.call('DEL', sc_key(sc, 'mail:' .. m))
end
redis.call('DEL', sc_key(sc, 'mailboxes'))
for _, k in ipairs(redis.call('SMEMBERS', sc_key(sc, 'kvs'))) do
  redis.call('DEL', sc_key(sc, 'kv:' .. k))
end
for _, id in ipairs(redis.call('ZRANGE', sc_key(sc, 'plans'), 0, -1)) do
  redis.call('DEL', sc_key(sc, 'plan:' .. id))
  redis.call('HDEL', P .. ':idx:open-plans', id)
  redis.call('HDEL', P .. ':idx:plans', id)
end
redis.call('DEL', sc_key(sc, 'plans'))
for _, id in ipairs(redis.call('ZRANGE', sc_key(sc, 'enrollments'), 0, -1)) do
  redis.call('DEL', sc_key(sc, 'enroll:' .. id), sc_key(sc, 'enroll:' .. id .. ':registrations'))
end
redis.call('DEL', sc_key(sc, 'enrollments'))
redis.call('DEL', sc_key(sc, 'compositions'))
redis.call('DEL', meta, sc_key(sc, 'machines'), sc_key(sc, 'orders'), sc_key(sc, 'inboxes'), sc_key(sc, 'events'),
           sc_key(sc, 'kvs'))
return machines
