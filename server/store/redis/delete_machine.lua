-- KEYS: machine index, present. ARGV: prefix, machine id. Returns 1 if the machine existed.
local sc = redis.call('HGET', KEYS[1], ARGV[2])
if not sc then return 0 end
redis.call('DEL', sc_key(sc, 'machine:' .. ARGV[2]), sc_key(sc, 'inbox:' .. ARGV[2]))
redis.call('SREM', sc_key(sc, 'machines'), ARGV[2])
redis.call('SREM', sc_key(sc, 'inboxes'), ARGV[2])
redis.call('HDEL', KEYS[1], ARGV[2])
redis.call('SREM', KEYS[2], ARGV[2])
return 1
